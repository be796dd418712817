"""Drawing the visual prompts: mask outlines, a dimmed outside, numbered marks.

Outlines are drawn *outside* the region (a ring around it), so every pixel of the region
itself reaches the model unchanged, even for a 1-px region. Work is done on the region's
neighbourhood only (its box plus the ring), so marking 50 regions on one image costs 50
small patches, not 50 full-image passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .geometry import IntBox, outward
from .types import Region

OUTLINE_RGB = (255, 0, 255)  # magenta: rare in photos, named in the prompt text
OUTLINE_NAME = "magenta"
BADGE_FILL = (255, 255, 255)
BADGE_TEXT = (0, 0, 0)


def outline_width(width: int, height: int) -> int:
    """Ring thickness for an image: 2 px up to 500 px, then about 0.4 % of the longer side."""
    return max(2, round(max(width, height) / 250))


def submask(region: Region, box: IntBox) -> np.ndarray:
    """The region's pixels inside ``box`` (integer xyxy) as a bool array, without a full-size copy."""
    x0, y0, x1, y1 = box
    if region.mask is not None:
        return region.mask[y0:y1, x0:x1]
    rx0, ry0, rx1, ry1 = outward(region.box, region.size[0], region.size[1])  # type: ignore[arg-type]
    m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    m[max(0, ry0 - y0):max(0, ry1 - y0), max(0, rx0 - x0):max(0, rx1 - x0)] = True
    return m


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Bool dilation by a (2r+1) square, separably (rows then columns): O(r * area)."""
    h = m.copy()
    for s in range(1, r + 1):
        h[:, s:] |= m[:, :-s]
        h[:, :-s] |= m[:, s:]
    v = h.copy()
    for s in range(1, r + 1):
        v[s:] |= h[:-s]
        v[:-s] |= h[s:]
    return v


def ring(region: Region, width: int, height: int, thickness: int) -> tuple[IntBox, np.ndarray]:
    """The outline of ``region``: ``thickness`` px just outside it, as (neighbourhood box, bool ring)."""
    x0, y0, x1, y1 = outward(region.box, width, height)  # type: ignore[arg-type]
    pad = thickness + 1
    nb = (max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad))
    sub = submask(region, nb)
    return nb, _dilate(sub, thickness) & ~sub


def draw_outline(arr: np.ndarray, region: Region, thickness: int, rgb: tuple[int, int, int] = OUTLINE_RGB) -> None:
    """Paint the region's outline in place on ``arr`` (h, w, 3)."""
    (x0, y0, x1, y1), r = ring(region, arr.shape[1], arr.shape[0], thickness)
    arr[y0:y1, x0:x1][r] = rgb


def outlined(image: Image.Image, regions: Sequence[Region], thickness: int,
             rgb: tuple[int, int, int] = OUTLINE_RGB) -> Image.Image:  # fmt: skip
    """A copy of ``image`` with the regions outlined; only the outlines' patches are converted."""
    out = image.copy()
    for region in regions:
        nb, r = ring(region, image.width, image.height, thickness)
        patch = np.array(out.crop(nb), dtype=np.uint8)
        patch[r] = rgb
        out.paste(Image.fromarray(patch), nb[:2])
    return out


def dim_outside(arr: np.ndarray, region: Region, factor: float = 0.35) -> np.ndarray:
    """A copy of ``arr`` with every pixel outside the region darkened to ``factor`` of its value."""
    keep = region.pixel_mask()
    out = (arr.astype(np.float32) * factor).round().astype(np.uint8)
    out[keep] = arr[keep]
    return out


def badge_font_size(width: int, height: int) -> int:
    """Font size of mark numbers: 12 px up to 480 px, then 1/40 of the shorter side."""
    return max(12, min(width, height) // 40)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=512)
def render_badge(number: int, font_size: int) -> np.ndarray:
    """The badge of one mark: black digits on a white box with a 2 px margin, (h, w, 3) uint8."""
    font = _font(font_size)
    text = str(number)
    l, t, r, b = font.getbbox(text)
    im = Image.new("RGB", (r - l + 4, b - t + 4), BADGE_FILL)
    ImageDraw.Draw(im).text((2 - l, 2 - t), text, fill=BADGE_TEXT, font=font)
    return np.asarray(im)


def paste_badge(arr: np.ndarray, number: int, at: tuple[float, float], font_size: int) -> IntBox:
    """Paste mark ``number`` centred on ``at`` (kept inside the image); returns where it went."""
    badge = render_badge(number, font_size)
    bh, bw = badge.shape[:2]
    h, w = arr.shape[:2]
    x0 = int(min(max(0, round(at[0] - bw / 2)), max(0, w - bw)))
    y0 = int(min(max(0, round(at[1] - bh / 2)), max(0, h - bh)))
    x1, y1 = min(w, x0 + bw), min(h, y0 + bh)
    arr[y0:y1, x0:x1] = badge[: y1 - y0, : x1 - x0]
    return (x0, y0, x1, y1)


def to_array(image: Image.Image) -> np.ndarray:
    """A writable uint8 RGB copy of ``image``."""
    return np.array(image.convert("RGB"), dtype=np.uint8)


__all__ = [
    "OUTLINE_NAME",
    "OUTLINE_RGB",
    "badge_font_size",
    "dim_outside",
    "draw_outline",
    "outline_width",
    "outlined",
    "paste_badge",
    "render_badge",
    "ring",
    "submask",
    "to_array",
]  # fmt: skip
