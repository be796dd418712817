"""The hallucination check: is each phrase a description names found in the image?

Image Textualization sends each extracted phrase alone to Grounding DINO (box threshold
0.20, text threshold 0.18) and calls a phrase with no detection above both a hallucination.
This stage does that with :class:`pixscribe.experts.detection.Verifier`, in three modes:

- ``single``: Grounding DINO alone (IT);
- ``consensus``: Grounding DINO and OWLv2 must both find it, with overlapping boxes (GranD);
- ``any``: either detector finding it is enough.

Each phrase is checked alone (``per_phrase``, IT's rule) with the detectors' image side done
once per image: ``Verifier.verify_batch(..., each=True)``; docs/textualize.md says how and
what it costs. Detectors are run at ``probe_threshold`` (0.05) so that near misses show in
the scores; the verdict uses the thresholds above.

Fields: ``objects`` (per phrase: ``phrase``, ``grounded``, ``score`` (the best score of the
boxes that ground it, else the best score any detector gave it), ``box``/``box_norm`` of
the best grounding box or null, ``support`` (each detector's best score)) and
``hallucinations`` (the phrases not grounded, in order).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ...api.stage import Stage
from ...experts.base import Expert
from ...experts.detection import Grounding
from ...record import Record
from ...stages.experts import FIX, expert_identity, setup_experts
from ...stages.grounding import DEFAULTS, MODES, VerifyOptions, make_verifier


def grounding_json(g: Grounding) -> dict[str, Any]:
    best = g.boxes[0] if g.boxes else None
    return {"phrase": g.phrase, "grounded": g.grounded, "score": round(float(g.score), 4),
            "box": list(best.box) if best else None, "box_norm": list(best.box_norm) if best else None,
            "support": dict(g.support)}


class VerifyStage(Stage):
    name = "verify"
    needs = ("phrases",)
    provides = ("objects", "hallucinations")
    needs_image = True

    def __init__(self, detectors: Mapping[str, Expert], options: Mapping[str, Any]):
        self.opts = {k: options[k] for k in DEFAULTS}
        self.verifier = make_verifier(detectors, self.opts)
        self.seconds = 0.0

    def models(self) -> list[Any]:
        return list(self.verifier.detectors.values())

    def options(self) -> dict[str, Any]:
        return {**self.opts, "detectors": [expert_identity(d) for d in self.verifier.detectors.values()]}

    def setup(self) -> None:
        setup_experts(list(self.verifier.detectors.values()), FIX)

    def _ground(self, records: list[Record]) -> list[list[Grounding]]:
        # per_phrase: each phrase checked alone (IT), each image's own work done once; else all in one text
        return self.verifier.verify_batch([r.image for r in records], [r.fields["phrases"] for r in records],
                                          each=bool(self.opts["per_phrase"]))  # fmt: skip

    def __call__(self, records: list[Record]) -> list[Record]:
        t = time.perf_counter()
        groundings = self._ground(records)
        dt = time.perf_counter() - t
        self.seconds += dt
        total = sum(len(r.fields["phrases"]) for r in records) or 1
        for r, gs in zip(records, groundings):
            share = dt * len(r.fields["phrases"]) / total
            r.set("objects", [grounding_json(g) for g in gs], stage=self.name, seconds=share,
                  mode=self.opts["mode"], detectors=list(self.verifier.detectors))
            r.set("hallucinations", [g.phrase for g in gs if not g.grounded], stage=self.name)
        return records

    def summary(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3)}


__all__ = ["DEFAULTS", "MODES", "VerifyOptions", "VerifyStage", "grounding_json", "make_verifier"]
