"""Box formats of panoptic captioning, and conversions between them and pixels.

Two text formats:

- **reference** (SA-Pancap captions, and what pixscribe writes in ``caption``): prose with
  inline boxes ``[[x1, y1, x2, y2]]``, coordinates normalised to [0, 1] by the image's own
  width and height, written with 3 decimals. ``[[a, b, c, d], [e, f, g, h]]`` holds two.
- **model** (what PancapChain reads and writes): items ``tag <box>[[x1, y1, x2, y2]]</box>``
  separated by ", " (its first stage writes items without a tag), integers in
  0..:data:`MODEL_SCALE` (999, so values in [0, 1000)) on the image padded to a square as
  LLaVA's ``pad`` aspect mode does it: the short side centred, at offset
  ``(long - short) // 2``. (The scale and the un-padding follow the box post-processing of
  the grounding evaluators in the official Visual-AI/Pancap repository.)

Parsing never raises on a bad item: each malformed item comes back as a
:class:`BoxProblem` (its text, offset and reason) and is skipped, and the items after it
are still read. (The official inference code stops reading a list at its first malformed
item; reading on loses nothing that was well formed.)

Pixel boxes are ``(x1, y1, x2, y2)`` floats on the pixel grid of the image the model saw:
x to the right, y down, (0, 0) the top-left corner and (W, H) the bottom-right one.

Round trips are exact to each format's precision: model integers -> pixels -> model
integers gives back the same integers for a box inside the image; pixels -> model ->
pixels moves a coordinate by at most half a quantum, ``max(W, H) / scale / 2`` pixels;
reference text -> boxes -> text gives back canonical 3-decimal text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

MODEL_SCALE = 999
REFERENCE_DECIMALS = 3

Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]


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


@dataclass(frozen=True)
class ModelItem:
    """One item of the model format: a tag (None for a bare box) and its integer box."""

    tag: str | None
    box: IntBox


_INLINE = re.compile(r"\[\[(.*?)\]\]", re.S)
_MODEL_ITEM = re.compile(r"<box>(.*?)</box>", re.S)
_DOUBLE_BRACKETS = re.compile(r"\s*\[\[(.*)\]\]\s*", re.S)
_BOX_SEP = re.compile(r"\]\s*,\s*\[")
_INT = re.compile(r"[+-]?\d+")


# ---- checking four numbers ---------------------------------------------------------


def _ordered_reason(v: Sequence[float], lo: float, hi: float) -> str | None:
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


def _ints(body: str) -> list[int] | str:
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != 4:
        return f"{len(parts)} numbers, expected 4"
    if not all(_INT.fullmatch(p) for p in parts):
        return "not integers"
    return [int(p) for p in parts]


# ---- the reference format ----------------------------------------------------------


def parse_reference(text: str) -> tuple[list[InlineBox], list[BoxProblem]]:
    """Every inline ``[[x1, y1, x2, y2]]`` box of a caption, in order, and the malformed ones."""
    boxes: list[InlineBox] = []
    problems: list[BoxProblem] = []
    for m in _INLINE.finditer(text):
        for part in _BOX_SEP.split(m.group(1)):
            vals = _floats(part)
            reason = vals if isinstance(vals, str) else _ordered_reason(vals, 0.0, 1.0)
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


# ---- the model format --------------------------------------------------------------


def _model_boxes(body: str) -> list[IntBox] | str:
    m = _DOUBLE_BRACKETS.fullmatch(body)
    if m is None:
        return "box is not [[x1, y1, x2, y2]]"
    out: list[IntBox] = []
    for part in _BOX_SEP.split(m.group(1)):
        vals = _ints(part)
        reason = vals if isinstance(vals, str) else _ordered_reason(vals, 0, MODEL_SCALE)
        if reason is not None:
            return reason
        out.append((vals[0], vals[1], vals[2], vals[3]))
    return out


def _tag_of(between: str) -> str | None:
    tag = between.strip()
    if tag.startswith(","):
        tag = tag[1:].strip()
    return tag or None


def parse_model(text: str) -> tuple[list[ModelItem], list[BoxProblem]]:
    """Items ``tag <box>[[x1, y1, x2, y2]]</box>`` (or bare ``<box>...</box>``) in order,
    and the malformed ones. ``<box>[[...], [...]]</box>`` gives one item per box."""
    items: list[ModelItem] = []
    problems: list[BoxProblem] = []
    pos = 0
    for m in _MODEL_ITEM.finditer(text):
        tag = _tag_of(text[pos:m.start()])
        boxes = _model_boxes(m.group(1))
        if isinstance(boxes, str):
            start = m.start() if tag is None else text.index(tag, pos)
            problems.append(BoxProblem(text[start:m.end()], start, boxes))
        else:
            items.extend(ModelItem(tag, b) for b in boxes)
        pos = m.end()
    rest = text[pos:]
    if rest.strip(" \t\r\n,"):
        start = pos + len(rest) - len(rest.lstrip(" \t\r\n,"))
        why = "no closing </box>" if "<box>" in rest else "text outside any <box>...</box> item"
        problems.append(BoxProblem(text[start:].strip(), start, why))
    return items, problems


def render_model(items: Iterable[ModelItem | Sequence[int]]) -> str:
    """Items joined by ", "; a :class:`ModelItem` with a tag as ``tag <box>...</box>``."""
    parts = []
    for it in items:
        tag, box = (it.tag, it.box) if isinstance(it, ModelItem) else (None, it)
        b = "<box>[[" + ", ".join(str(int(v)) for v in box) + "]]</box>"
        parts.append(f"{tag} {b}" if tag else b)
    return ", ".join(parts)


# ---- geometry ----------------------------------------------------------------------


def pad_geometry(width: int, height: int) -> tuple[int, int, int]:
    """``(side, x_offset, y_offset)`` of the square LLaVA's ``pad`` mode makes of a W x H image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width >= height:
        return width, 0, (width - height) // 2
    return height, (height - width) // 2, 0


def _clip(box: Sequence[float], width: float, height: float) -> Box:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
            min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def model_to_pixels(box: Sequence[int], width: int, height: int, *, scale: int = MODEL_SCALE,
                    clip: bool = True) -> Box:
    """Model integers (padded square) -> pixel xyxy of the W x H image; ``clip`` keeps the
    box inside the image (a box may reach into the padding)."""
    side, ox, oy = pad_geometry(width, height)
    k = side / scale
    px = (box[0] * k - ox, box[1] * k - oy, box[2] * k - ox, box[3] * k - oy)
    return _clip(px, width, height) if clip else px


def _quantise(v: float, scale: int) -> int:
    return min(scale, max(0, math.floor(v + 0.5)))


def pixels_to_model(box: Sequence[float], width: int, height: int, *, scale: int = MODEL_SCALE) -> IntBox:
    """Pixel xyxy of the W x H image -> model integers on the padded square (rounded half up)."""
    side, ox, oy = pad_geometry(width, height)
    k = scale / side
    return (_quantise((box[0] + ox) * k, scale), _quantise((box[1] + oy) * k, scale),
            _quantise((box[2] + ox) * k, scale), _quantise((box[3] + oy) * k, scale))


def pixels_to_reference(box: Sequence[float], width: int, height: int) -> Box:
    """Pixel xyxy -> normalised [0, 1] (by width and height), rounded to 3 decimals."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = _clip(box, width, height)
    r = REFERENCE_DECIMALS
    return (round(x1 / width, r), round(y1 / height, r), round(x2 / width, r), round(y2 / height, r))


def reference_to_pixels(box: Sequence[float], width: int, height: int) -> Box:
    """Normalised [0, 1] -> pixel xyxy of the W x H image."""
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def model_to_reference(box: Sequence[int], width: int, height: int, *, scale: int = MODEL_SCALE) -> Box:
    return pixels_to_reference(model_to_pixels(box, width, height, scale=scale), width, height)


def reference_to_model(box: Sequence[float], width: int, height: int, *, scale: int = MODEL_SCALE) -> IntBox:
    return pixels_to_model(reference_to_pixels(box, width, height), width, height, scale=scale)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when the union is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


__all__ = [
    "MODEL_SCALE", "REFERENCE_DECIMALS", "BoxProblem", "InlineBox", "ModelItem",
    "parse_reference", "parse_reference_box", "render_reference", "strip_reference",
    "parse_model", "render_model", "pad_geometry", "model_to_pixels", "pixels_to_model",
    "pixels_to_reference", "reference_to_pixels", "model_to_reference", "reference_to_model", "iou",
]
