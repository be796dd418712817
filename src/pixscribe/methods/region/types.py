"""The region that flows through region captioning: a mask, a box or points.

A :class:`Region` lives in a *frame*: the pixel grid it was given in (``size`` = the
image's ``(width, height)`` as the input describes it, after EXIF orientation and before
pixscribe's pixel budget). :meth:`Region.scaled` moves it to the image the model sees.

Boxes are pixel ``xyxy`` with exclusive right/bottom edges, the convention of
:func:`pixscribe.experts.rle.to_xyxy`: the box ``(2, 1, 6, 4)`` covers pixel columns 2..5 and
rows 1..3, exactly the pixels a COCO polygon with those corners rasterises to.

A malformed region is not an exception: it is a Region with ``error`` set (``"region: ..."``),
so the other regions of the image go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from ...record import PixscribeError
from ...spatial import Box


class RegionError(PixscribeError):
    """A region that cannot be used; the message says why (shown as ``"region: ..."``)."""

    kind = "region"


@dataclass
class Region:
    """One region of one image.

    ``kind`` is how it was given (``"mask"``, ``"box"`` or ``"points"``); ``mask`` is a bool
    array ``(height, width)`` of the frame, or None for a box or points not yet segmented;
    ``box`` is always set for a valid region (the mask's box, or the given box, or the
    points' box). ``attribute``/``instruction`` are the row's own, if any.
    """

    index: int
    size: tuple[int, int]  # frame (width, height)
    kind: str = "box"
    id: str | None = None
    mask: np.ndarray | None = None
    box: Box | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None
    attribute: str | None = None
    instruction: str | None = None
    score: float | None = None  # SAM's predicted IoU when a mask came from SAM
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, index: int, size: tuple[int, int], reason: str | BaseException, id: str | None = None) -> Region:
        msg = str(reason).strip() or type(reason).__name__
        return cls(index=index, size=size, id=id, error=f"region: {msg}")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def key(self) -> str:
        """The region's own id, else its index: unique within one image."""
        return self.id if self.id is not None else str(self.index)

    @property
    def area(self) -> int:
        """Pixels in the mask; for a region without a mask, the pixels its box covers."""
        if self.mask is not None:
            return int(self.mask.sum())
        return int(box_pixels(self.box, self.size).sum()) if self.box else 0

    def pixel_mask(self) -> np.ndarray:
        """The mask, or the box rasterised (pixels whose centre is inside the box)."""
        if self.mask is not None:
            return self.mask
        if self.box is None:
            raise RegionError(f"region {self.key} has neither a mask nor a box")
        return box_pixels(self.box, self.size)

    def scaled(self, width: int, height: int) -> Region:
        """This region in a frame of ``(width, height)`` (the resized image the model sees).

        Masks are resized nearest-neighbour; a region too small to survive keeps one pixel
        (the one under its centre), so a 1-px region still reaches the model."""
        if (width, height) == self.size or not self.ok:
            return self
        sx, sy = width / self.size[0], height / self.size[1]
        box = _scale_box(self.box, sx, sy) if self.box else None
        mask = _resize_mask(self.mask, width, height, box) if self.mask is not None else None
        if mask is not None:
            box = mask_box(mask)
        pts = [(x * sx, y * sy) for x, y in self.points] if self.points else self.points
        return replace(self, size=(width, height), box=box, mask=mask, points=pts)


def mask_box(mask: np.ndarray) -> Box:
    """Pixel xyxy (exclusive right/bottom) of a non-empty bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise RegionError("empty mask: no pixel is set")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def box_pixels(box: Box, size: tuple[int, int]) -> np.ndarray:
    """Bool ``(h, w)`` mask of the pixels whose centre lies in ``box`` (at least the centre pixel)."""
    w, h = size
    x0, y0, x1, y1 = box
    c0, c1 = max(0, math.ceil(x0 - 0.5)), min(w, math.ceil(x1 - 0.5))
    r0, r1 = max(0, math.ceil(y0 - 0.5)), min(h, math.ceil(y1 - 0.5))
    if c1 <= c0:  # thinner than a pixel: the column under the centre
        c0 = min(w - 1, max(0, int((x0 + x1) / 2)))
        c1 = c0 + 1
    if r1 <= r0:
        r0 = min(h - 1, max(0, int((y0 + y1) / 2)))
        r1 = r0 + 1
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def _scale_box(box: Box, sx: float, sy: float) -> Box:
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def _resize_mask(mask: np.ndarray, width: int, height: int, box: Box | None) -> np.ndarray:
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    out = np.asarray(im) > 0
    if not out.any() and box is not None:  # a tiny region vanished: keep the pixel under its centre
        cx = min(width - 1, max(0, int((box[0] + box[2]) / 2)))
        cy = min(height - 1, max(0, int((box[1] + box[3]) / 2)))
        out = out.copy()
        out[cy, cx] = True
    return out


__all__ = ["Box", "Region", "RegionError", "box_pixels", "mask_box"]
