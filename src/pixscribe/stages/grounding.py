"""Grounding phrases in the image, shared by textualize's ``verify`` stage and recap's
``select`` stage (best of n by grounding): the verification options, declared once
(:class:`VerifyOptions`: ``single`` Grounding DINO alone, ``consensus`` with OWLv2, ``any``),
and the :class:`~pixscribe.experts.detection.Verifier` they describe (:func:`make_verifier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..api.options import StageOptions, option
from ..errors import MethodError
from ..experts.base import Expert
from ..experts.detection import Verifier

MODES = ("single", "consensus", "any")


@dataclass(frozen=True)
class VerifyOptions(StageOptions):
    """Each phrase checked against the detectors; the ones not found are hallucinations."""

    mode: str = option("single", "single (Grounding DINO), consensus (+ OWLv2, both must find it) or any",
                       choices=MODES)
    box_threshold: float = option(0.20, "Grounding DINO's box threshold")
    text_threshold: float = option(0.18, "Grounding DINO's text threshold")
    owlv2_threshold: float = option(0.10, "OWLv2's score threshold (consensus, any)")
    iou: float = option(0.5, "consensus: the overlap two detectors' boxes need")
    per_phrase: bool = option(True, "each phrase checked alone (IT); false: all of an image's phrases in one query")
    probe_threshold: float = option(0.05, "the threshold detectors run at, so near misses show in the scores")


DEFAULTS: dict[str, Any] = VerifyOptions.defaults()


def make_verifier(detectors: Mapping[str, Expert], opts: Mapping[str, Any]) -> Verifier:
    """The :class:`Verifier` for ``opts["mode"]`` from the detectors it needs."""
    mode = opts["mode"]
    if mode not in MODES:
        raise MethodError(f"stages.verify.mode: {mode!r} is not one of {', '.join(MODES)}")
    names = ["grounding_dino"] if mode == "single" else ["grounding_dino", "owlv2"]
    missing = [n for n in names if n not in detectors]
    if missing:
        raise MethodError(f"verify mode {mode!r} needs the detector(s) {', '.join(missing)}")
    ths = {"grounding_dino": float(opts["box_threshold"]), "owlv2": float(opts["owlv2_threshold"])}
    probe = min([float(opts["probe_threshold"])] + [ths[n] for n in names])
    return Verifier({n: detectors[n] for n in names}, box_threshold=ths, consensus=mode == "consensus",
                    iou=float(opts["iou"]), text_threshold=float(opts["text_threshold"]), probe_threshold=probe)


__all__ = ["DEFAULTS", "MODES", "VerifyOptions", "make_verifier"]
