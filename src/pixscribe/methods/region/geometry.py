"""Pixel geometry of the visual prompts: the focal crop box and where a mark's label goes.

Focal crop (Describe Anything's idea of a focal view beside the full image): the region's box
is rounded outward to whole pixels, grown symmetrically to at least ``min_size`` pixels on
each side, then expanded by its own (grown) width and height on every side, and clipped to
the image. Integer arithmetic keeps it exact: a 1-px region away from the edges gives a
48 px box and a 144 px crop; a region larger than half the image gives the whole image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .types import Box

IntBox = tuple[int, int, int, int]


def outward(box: Box, width: int, height: int) -> IntBox:
    """Round a float xyxy box outward to whole pixels inside the image (at least 1 px)."""
    x0 = min(max(0, math.floor(box[0])), width - 1)
    y0 = min(max(0, math.floor(box[1])), height - 1)
    x1 = max(min(width, math.ceil(box[2])), x0 + 1)
    y1 = max(min(height, math.ceil(box[3])), y0 + 1)
    return (x0, y0, x1, y1)


def _grow(a: int, b: int, size: int) -> tuple[int, int]:
    deficit = size - (b - a)
    if deficit <= 0:
        return a, b
    left = deficit // 2
    return a - left, b + (deficit - left)


def focal_box(box: Box, width: int, height: int, min_size: int = 48, context: float = 1.0) -> IntBox:
    """The focal crop of ``box`` in a ``width`` x ``height`` image (integer xyxy, clipped).

    ``context`` is how many of its own widths/heights the box is expanded by on every side
    (1.0: the crop is three times the grown box, before clipping)."""
    x0, y0, x1, y1 = outward(box, width, height)
    x0, x1 = _grow(x0, x1, min_size)
    y0, y1 = _grow(y0, y1, min_size)
    dx, dy = round((x1 - x0) * context), round((y1 - y0) * context)
    return (max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy))


def _erode(m: np.ndarray) -> np.ndarray:
    """Bool erosion by a 3x3 square (the border counts as outside)."""
    h = m.copy()
    h[:, 1:] &= m[:, :-1]
    h[:, :-1] &= m[:, 1:]
    h[:, 0] = h[:, -1] = False
    v = h.copy()
    v[1:] &= h[:-1]
    v[:-1] &= h[1:]
    v[0] = v[-1] = False
    return v


def label_point(mask: np.ndarray, box: Box, max_side: int = 96) -> tuple[float, float]:
    """A point well inside the region, where its number goes (set-of-mark).

    The point of the mask farthest from its edge (as the Set-of-Mark paper places marks),
    found by eroding a copy of the mask's neighbourhood shrunk to ``max_side`` pixels until
    nothing is left; the centre of the last pixels standing is the answer."""
    x0, y0, x1, y1 = outward(box, mask.shape[1], mask.shape[0])
    sub = Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255)
    w, h = sub.size
    scale = min(1.0, max_side / max(h, w))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if scale < 1.0:
        sub = sub.resize((sw, sh), Image.Resampling.NEAREST)
    last = np.pad(np.asarray(sub) > 0, 1)  # a border of zeros: the edges erode too
    if not last.any():
        return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    while True:
        cur = _erode(last)
        if not cur.any():
            break
        last = cur
    ys, xs = np.nonzero(last)
    i = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))  # a standing pixel, not a gap between two
    return (x0 + (xs[i] - 1 + 0.5) * w / sw, y0 + (ys[i] - 1 + 0.5) * h / sh)

__all__ = ["IntBox", "focal_box", "label_point", "outward"]
