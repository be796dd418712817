"""Spatial language from boxes and depth, shared by the experts, textualize, panoptic and
region methods. Boxes are normalised xyxy in [0, 1]; depth is relative with nearest = 1.

- :func:`position_words`: a 3×3 grid on the box centre ("upper left", "top", ... "center" ... "lower right");
  :func:`position_phrase` for prose ("in the upper left", "at the top").
- :func:`size_word`: by the fraction of the image the box covers.
- :func:`depth_word`: foreground / middle ground / background.
- :func:`relation` and :func:`relations`: left of, right of, above, below, in front of, behind,
  overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

Box = tuple[float, float, float, float]  # xyxy: the one box type of pixscribe (functions here take any 4 numbers)

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "center", "right")

# size thresholds on the area fraction (see size_word): a face at arm's length
# is "small", a person filling a portrait "large".
SIZE_THRESHOLDS = ((0.01, "tiny"), (0.05, "small"), (0.2, "medium"), (0.5, "large"))


def _check(box: Box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0:
        x0, x1 = x1, x0
    if y1 < y0:
        y0, y1 = y1, y0
    return x0, y0, x1, y1


def center(box: Box) -> tuple[float, float]:
    x0, y0, x1, y1 = _check(box)
    return (x0 + x1) / 2, (y0 + y1) / 2


def area(box: Box) -> float:
    x0, y0, x1, y1 = _check(box)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def _cell(box: Box) -> tuple[str, str]:
    cx, cy = center(box)
    col = _COLS[min(2, max(0, int(cx * 3)))]
    row = _ROWS[min(2, max(0, int(cy * 3)))]
    return row, col


# the nine cells of the 3×3 grid, by (row, column)
POSITION_WORDS = {
    ("upper", "left"): "upper left", ("upper", "center"): "top", ("upper", "right"): "upper right",
    ("middle", "left"): "left", ("middle", "center"): "center", ("middle", "right"): "right",
    ("lower", "left"): "lower left", ("lower", "center"): "bottom", ("lower", "right"): "lower right",
}
_PREPOSITION = {"top": "at the", "bottom": "at the", "left": "on the", "right": "on the"}


def position_words(box: Box) -> str:
    """Where the box centre falls on a 3×3 grid (thirds of the image):
    "upper left", "top", "upper right", "left", "center", "right", "lower left", "bottom",
    "lower right". A centre exactly on a third line goes to the later cell."""
    return POSITION_WORDS[_cell(box)]


def position_phrase(box: Box) -> str:
    """The same place as a phrase for prose: "in the upper left", "at the top", "on the left",
    "in the center"..."""
    w = position_words(box)
    return f"{_PREPOSITION.get(w, 'in the')} {w}"


def size_word(box: Box) -> str:
    """By the share of the image the box covers: under 1 % "tiny", under 5 % "small", under
    20 % "medium", under 50 % "large", else "very large" (:data:`SIZE_THRESHOLDS`)."""
    a = area(box)
    for limit, word in SIZE_THRESHOLDS:
        if a < limit:
            return word
    return "very large"


def depth_word(relative: float) -> str:
    """Relative depth (nearest = 1) to words, in thirds."""
    if relative >= 2 / 3:
        return "in the foreground"
    if relative >= 1 / 3:
        return "in the middle ground"
    return "in the background"


def intersection(a: Box, b: Box) -> float:
    ax0, ay0, ax1, ay1 = _check(a)
    bx0, by0, bx1, by1 = _check(b)
    return max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))


def iou(a: Box, b: Box, *, degenerate: float = 1.0) -> float:
    """Intersection over union (0 when the union is empty); two identical boxes give 1.0, or
    ``degenerate`` when they have no area (1.0: a point is its own match, as NMS and
    "overlapping" want; 0.0: an empty box matches nothing, as panoptic's re-detection merge
    wants)."""
    if _check(a) == _check(b):
        return 1.0 if area(a) > 0 else degenerate
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def relation(a: Box, b: Box, depth_a: float | None = None, depth_b: float | None = None,
             margin: float = 0.02, depth_margin: float = 0.1) -> list[str]:
    """How A stands to B. Left/right and above/below need the boxes to be apart along that
    axis by more than ``margin`` (or, when they overlap on it, the centres apart by more than
    half the smaller extent); "in front of"/"behind" need the depths apart by ``depth_margin``.
    """
    ax0, ay0, ax1, ay1 = _check(a)
    bx0, by0, bx1, by1 = _check(b)
    acx, acy = center(a)
    bcx, bcy = center(b)
    out: list[str] = []
    min_w = min(ax1 - ax0, bx1 - bx0)
    min_h = min(ay1 - ay0, by1 - by0)
    if ax1 <= bx0 + margin and acx < bcx or (acx < bcx - max(margin, min_w / 2) and ax0 < bx0):
        out.append("left of")
    elif bx1 <= ax0 + margin and acx > bcx or (acx > bcx + max(margin, min_w / 2) and ax1 > bx1):
        out.append("right of")
    if ay1 <= by0 + margin and acy < bcy or (acy < bcy - max(margin, min_h / 2) and ay0 < by0):
        out.append("above")
    elif by1 <= ay0 + margin and acy > bcy or (acy > bcy + max(margin, min_h / 2) and ay1 > by1):
        out.append("below")
    if depth_a is not None and depth_b is not None:
        if depth_a - depth_b > depth_margin:
            out.append("in front of")
        elif depth_b - depth_a > depth_margin:
            out.append("behind")
    if iou(a, b) > 0.0 or (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1):
        out.append("overlapping")
    return out


@dataclass
class Entity:
    label: str
    box: Box
    depth: float | None = None


def relations(entities: Sequence[Entity], limit: int | None = None) -> list[tuple[str, str, str]]:
    """Pairwise (subject, relation, object) triples, each unordered pair once (i < j)."""
    out: list[tuple[str, str, str]] = []
    for i, a in enumerate(entities):
        for b in entities[i + 1:]:
            for r in relation(a.box, b.box, a.depth, b.depth):
                out.append((a.label, r, b.label))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def describe_position(box: Box, depth: float | None = None) -> str:
    """E.g. "small, upper left, in the background"."""
    words = [size_word(box), position_words(box)]
    if depth is not None:
        words.append(depth_word(depth))
    return ", ".join(words)
