"""COCO polygons -> bool masks: checked and bounded here, rasterised by pycocotools in a child.

pycocotools' ``rleFrPoly`` scales every vertex by 5, casts it to a C ``int`` and allocates
``sum(max(|dx|, |dy|) + 1)`` points over the edges before it looks at the image: a vertex at
1e9 overflows the cast and segfaults the process; one at 1e8 asks for gigabytes. So, before
pycocotools sees a polygon (:func:`check_rings`):

- every coordinate is a finite number;
- no vertex lies farther outside the image than the image's own width (x) or height (y):
  COCO clips what is outside, so a polygon may overhang, but geometry beyond that is not in
  this image's frame;
- the outline, ``sum over edges of max(|dx|, |dy|)`` in pixels, is at most
  :data:`MAX_OUTLINE_PIXELS` (1,000,000: 70 times the perimeter of a 4000x3000 image; it
  bounds pycocotools' work to about 0.3 s and 50 MB).

Then the rasterisation itself runs in an isolated child process (:mod:`pixscribe.native`):
were pycocotools still to crash or hang on some polygon these checks did not foresee, that
region becomes an error and the run goes on (the child restarts for the next one). The mask
is the one pycocotools gives: the child returns its RLE, decoded by :mod:`pixscribe.experts.rle`.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

import numpy as np

from ...experts import rle
from .types import RegionError

MAX_OUTLINE_PIXELS = 1_000_000
_SCALE = 5  # pycocotools' upsampling
_INT_MAX = 2**31 - 1
_worker: Any = None
_worker_lock = threading.Lock()


def _ring(r: Any) -> np.ndarray:
    try:
        a = np.array([float(v) for v in r], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RegionError(f"polygon coordinates must be numbers: {exc}") from exc
    if not np.isfinite(a).all():
        raise RegionError("polygon has a non-finite coordinate")
    if a.size < 6 or a.size % 2:
        raise RegionError(f"a polygon ring is at least 3 x, y pairs, got {a.size} numbers")
    return a.reshape(-1, 2)


def check_rings(rings: list[Any], width: int, height: int) -> list[list[float]]:
    """The rings as floats, or RegionError when they are outside the bounds above."""
    if _SCALE * 3 * max(width, height) > _INT_MAX or width * height >= 2**32:
        raise RegionError(f"a {width}x{height} image is too large for COCO polygons (pycocotools' 32-bit indices)")
    out, outline = [], 0
    for r in rings:
        xy = _ring(r)
        x, y = xy[:, 0], xy[:, 1]
        bad = (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)
        if bad.any():
            i = int(np.argmax(bad))
            raise RegionError(f"polygon vertex ({x[i]:g}, {y[i]:g}) lies more than the image's own size outside "
                              f"the {width}x{height} image")  # fmt: skip
        outline += _outline(xy)
        if outline > MAX_OUTLINE_PIXELS * _SCALE:
            raise RegionError(f"polygon outline is over {MAX_OUTLINE_PIXELS:,} pixels long (pycocotools' work grows "
                              "with it); simplify the polygon")  # fmt: skip
        out.append(xy.ravel().tolist())
    return out


def _outline(xy: np.ndarray) -> int:
    """pycocotools' point count for one ring: its vertices cast as ``(int)(5 * v + .5)``."""
    p = np.trunc(_SCALE * xy + 0.5).astype(np.int64)
    d = np.abs(p - np.roll(p, -1, axis=0))
    return int((d.max(axis=1) + 1).sum())


def rasterise(rings: list[list[float]], width: int, height: int) -> np.ndarray:
    """Checked rings -> bool ``(height, width)`` mask, rasterised by pycocotools in the child."""
    from ...native import NativeCrash

    try:
        counts = _isolated()({"rings": rings, "h": height, "w": width})
    except NativeCrash as exc:
        raise RegionError(f"{exc} on this polygon") from exc
    except ValueError as exc:
        raise RegionError(f"pycocotools could not rasterise the polygon: {exc}") from exc
    return rle.decode({"size": [height, width], "counts": counts}) != 0


def _isolated() -> Any:
    global _worker
    with _worker_lock:
        if _worker is None:
            from ...native import Isolated

            _worker = Isolated("pixscribe.native.coco:polygons_rle", what="pycocotools (COCO polygon rasteriser)")
            atexit.register(_worker.close)
        return _worker


__all__ = ["MAX_OUTLINE_PIXELS", "check_rings", "rasterise"]
