"""Box formats of panoptic captioning, and conversions between them and pixels.

Two text formats:

- **reference** (SA-Pancap captions, and what pixscribe writes in ``caption``): prose with
  inline boxes ``[[x1, y1, x2, y2]]``, coordinates normalised to [0, 1] by the image's own
  width and height, written with 3 decimals. ``[[a, b, c, d], [e, f, g, h]]`` holds two.
  PancapScore reads it too, so it lives in :mod:`pixscribe.metrics.pancap_boxes` (its names
  are used here under the same names).
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

from ...metrics.pancap_boxes import (
    BOX_SEP,
    REFERENCE_DECIMALS,
    BoxProblem,
    InlineBox,
    ordered_reason,
    parse_reference,
    parse_reference_box,
    render_reference,
    strip_reference,
)
from ...spatial import Box

MODEL_SCALE = 999

IntBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class ModelItem:
    """One item of the model format: a tag (None for a bare box) and its integer box."""

    tag: str | None
    box: IntBox


_MODEL_ITEM = re.compile(r"<box>(.*?)</box>", re.S)
_DOUBLE_BRACKETS = re.compile(r"\s*\[\[(.*)\]\]\s*", re.S)
_INT = re.compile(r"[+-]?\d+")


# ---- checking four numbers ---------------------------------------------------------


def _ints(body: str) -> list[int] | str:
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != 4:
        return f"{len(parts)} numbers, expected 4"
    if not all(_INT.fullmatch(p) for p in parts):
        return "not integers"
    return [int(p) for p in parts]


# ---- the model format --------------------------------------------------------------


def _model_boxes(body: str) -> list[IntBox] | str:
    m = _DOUBLE_BRACKETS.fullmatch(body)
    if m is None:
        return "box is not [[x1, y1, x2, y2]]"
    out: list[IntBox] = []
    for part in BOX_SEP.split(m.group(1)):
        vals = _ints(part)
        reason = vals if isinstance(vals, str) else ordered_reason(vals, 0, MODEL_SCALE)
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


__all__ = [
    "MODEL_SCALE", "REFERENCE_DECIMALS", "BoxProblem", "InlineBox", "ModelItem",
    "parse_reference", "parse_reference_box", "render_reference", "strip_reference",
    "parse_model", "render_model", "pad_geometry", "model_to_pixels", "pixels_to_model",
    "pixels_to_reference", "reference_to_pixels", "model_to_reference", "reference_to_model",
]
