"""Best of n: which of a prompt's samples its caption column keeps (the ``select`` stage,
there only when ``recap.n`` is above 1, so a one-sample recap is one stage as before).

``select.by: first`` keeps the first sample that came back. ``select.by: grounding`` is
Data-Juicer's phrase-grounding idea done with pixscribe's own experts: each sample's noun
phrases (textualize's rule-based extractor, :func:`noun_phrases`) are checked against the
image by the :class:`~pixscribe.experts.detection.Verifier` that textualize's verify stage
uses (Grounding DINO by default; ``select.mode`` consensus or any add OWLv2), each phrase
alone, an image's phrases of every sample in one call. A sample's score is its grounded
phrases over its phrases (null for a failed sample or one with no phrase); the best score
wins, the earlier sample on a tie. Columns: ``re_caption_NAME`` (the chosen sample) and, by
grounding, ``re_caption_NAME_grounding`` (every sample's score, in sample order); the
chosen index is in the caption's provenance (``sample``).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ...api import Stage
from ...experts.base import Expert
from ...nounphrases import VERSION as NOUNS_VERSION
from ...nounphrases import noun_phrases
from ...record import Record
from ...stages.experts import FIX, expert_identity, setup_experts
from ...stages.grounding import make_verifier
from .captions import samples_column
from .prompts import column


def scores_column(name: str) -> str:
    return column(name) + "_grounding"


def detector_names(opts: Mapping[str, Any]) -> list[str]:
    """The detectors ``select.by: grounding`` needs for its mode."""
    return ["grounding_dino"] if opts["mode"] == "single" else ["grounding_dino", "owlv2"]


def best(scores: list[float | None], samples: list[str | None]) -> int | None:
    """The index of the best-scored sample (the earliest on a tie; unscored ones last), None when all failed."""
    alive = [k for k, s in enumerate(samples) if s is not None]
    if not alive:
        return None
    return max(alive, key=lambda k: (-1.0 if scores[k] is None else scores[k], -k))


class SelectStage(Stage):
    name = "select"

    def __init__(self, prompts: list[str], options: Mapping[str, Any], detectors: Mapping[str, Expert] | None = None):
        self.names = list(prompts)
        self.opts = dict(options)
        self.by = self.opts["by"]
        self.needs = tuple(samples_column(p) for p in self.names)
        grounding = self.by == "grounding"
        self.provides = tuple(column(p) for p in self.names) + (
            tuple(scores_column(p) for p in self.names) if grounding else ())
        self.needs_image = grounding
        self.verifier = make_verifier(detectors or {}, self.opts) if grounding else None
        self.counts = {"samples_scored": 0, "phrases_checked": 0, "seconds": 0.0}

    def options(self) -> dict[str, Any]:
        if self.verifier is None:
            return {"by": self.by}
        return {**self.opts, "nouns": NOUNS_VERSION,
                "detectors": [expert_identity(d) for d in self.verifier.detectors.values()]}

    def models(self) -> list[Any]:
        return list(self.verifier.detectors.values()) if self.verifier else []

    def setup(self) -> None:
        if self.verifier:
            setup_experts(list(self.verifier.detectors.values()), FIX)

    def __call__(self, records: list[Record]) -> list[Record]:
        scores = self._scores(records) if self.verifier else None
        for i, r in enumerate(records):
            for p in self.names:
                samples = r.fields.get(samples_column(p)) or []
                sc = scores[i][p] if scores else [None] * len(samples)
                k = best(sc, samples) if scores else next((j for j, s in enumerate(samples) if s is not None), None)
                made = {x: v for x, v in (r.provenance.get(samples_column(p)) or {}).items()
                        if x in ("model", "revision", "prompt_sha")}  # the caption's model and prompt, kept
                r.set(column(p), None if k is None else samples[k], stage=self.name, by=self.by, sample=k, **made)
                if scores:
                    r.set(scores_column(p), sc, stage=self.name)
        return records

    def _scores(self, records: list[Record]) -> list[dict[str, list[float | None]]]:
        """Per record, per prompt: each sample's grounded share of its phrases."""
        t = time.perf_counter()
        limit = int(self.opts["max_phrases"])
        phrases = [{p: [noun_phrases(s, limit) if s else [] for s in r.fields.get(samples_column(p)) or []]
                    for p in self.names} for r in records]
        union = [list(dict.fromkeys(x for per in ph.values() for s in per for x in s)) for ph in phrases]
        found = self.verifier.verify_batch([r.image for r in records], union, each=bool(self.opts["per_phrase"]))
        out = []
        for ph, gs in zip(phrases, found):
            grounded = {g.phrase: g.grounded for g in gs}
            out.append({p: [round(sum(grounded.get(x, False) for x in s) / len(s), 4) if s else None for s in per]
                        for p, per in ph.items()})
            self.counts["samples_scored"] += sum(len(per) for per in ph.values())
        self.counts["phrases_checked"] += sum(map(len, union))
        self.counts["seconds"] += time.perf_counter() - t
        return out

    def summary(self) -> dict[str, Any]:
        return {**self.counts, "seconds": round(self.counts["seconds"], 3)} if self.verifier else {}


__all__ = ["SelectStage", "best", "detector_names", "scores_column"]
