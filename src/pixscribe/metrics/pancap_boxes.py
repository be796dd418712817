"""The reference box format of panoptic captioning (SA-Pancap captions, PancapScore's input,
and what ``--method panoptic`` writes in ``caption``): prose with inline boxes
``[[x1, y1, x2, y2]]``, coordinates normalised to [0, 1] by the image's own width and height,
written with 3 decimals; ``[[a, b, c, d], [e, f, g, h]]`` holds two.

Shared by the metric (:mod:`pixscribe.metrics.pancap_prompts`) and the method
(:mod:`pixscribe.methods.panoptic.boxes`, which adds PancapChain's model format and the pixel
conversions). Parsing never raises on a bad item: each malformed one comes back as a
:class:`BoxProblem` (its text, offset and reason) and is skipped, and the items after it are
still read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..spatial import Box

REFERENCE_DECIMALS = 3

_INLINE = re.compile(r"\[\[(.*?)\]\]", re.S)
BOX_SEP = re.compile(r"\]\s*,\s*\[")  # between two boxes of one [[...], [...]]


@dataclass(frozen=True)
class BoxProblem:
    """A malformed item: the text that was skipped, where it starts, and why."""

    text: str
    start: int
    reason: str

    def __str__(self) -> str:
        return f"at {self.start}: {self.reason}: {self.text!r}"


@dataclass(frozen=True)
class InlineBox:
    """A box of the reference format and the span of its ``[[...]]`` in the text."""

    box: Box
    start: int
    end: int


# ---- checking four numbers ---------------------------------------------------------


def ordered_reason(v: Sequence[float], lo: float, hi: float) -> str | None:
    if min(v) < lo or max(v) > hi:
        return f"coordinates outside [{lo:g}, {hi:g}]"
    if v[2] < v[0] or v[3] < v[1]:
        return "x2 < x1 or y2 < y1"
    return None


def _floats(body: str) -> list[float] | str:
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != 4:
        return f"{len(parts)} numbers, expected 4"
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return "not numbers"
    if not all(math.isfinite(x) for x in vals):
        return "not finite numbers"
    return vals


def parse_reference(text: str) -> tuple[list[InlineBox], list[BoxProblem]]:
    """Every inline ``[[x1, y1, x2, y2]]`` box of a caption, in order, and the malformed ones."""
    boxes: list[InlineBox] = []
    problems: list[BoxProblem] = []
    for m in _INLINE.finditer(text):
        for part in BOX_SEP.split(m.group(1)):
            vals = _floats(part)
            reason = vals if isinstance(vals, str) else ordered_reason(vals, 0.0, 1.0)
            if reason is not None:
                problems.append(BoxProblem(m.group(0), m.start(), reason))
                continue
            boxes.append(InlineBox((vals[0], vals[1], vals[2], vals[3]), m.start(), m.end()))
    return boxes, problems


def parse_reference_box(text: str) -> Box | None:
    """The single box of a text such as ``[[0.1, 0.2, 0.3, 0.4]]``; None if it holds none or several."""
    boxes, problems = parse_reference(text)
    return boxes[0].box if len(boxes) == 1 and not problems else None


def render_reference(box: Sequence[float]) -> str:
    """``[[x1, y1, x2, y2]]`` with 3 decimals (values clamped to [0, 1])."""
    vals = [min(1.0, max(0.0, float(v))) + 0.0 for v in box]  # + 0.0 turns -0.0 into 0.0
    return "[[" + ", ".join(f"{v:.{REFERENCE_DECIMALS}f}" for v in vals) + "]]"


def strip_reference(text: str) -> str:
    """The caption without its inline boxes (and the spaces before them)."""
    return _INLINE.sub("", re.sub(r"[ \t]+(?=\[\[)", "", text))


__all__ = ["BOX_SEP", "REFERENCE_DECIMALS", "BoxProblem", "InlineBox", "ordered_reason", "parse_reference",
           "parse_reference_box", "render_reference", "strip_reference"]
