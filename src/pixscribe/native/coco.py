"""pycocotools calls served in the isolated child (:mod:`pixscribe.native`).

Kept free of pixscribe's heavier modules, so the child starts in a fraction of a second."""

from __future__ import annotations

from typing import Any


def polygons_rle(req: dict[str, Any]) -> str:
    """COCO polygons (rings of float x, y pairs), unioned -> the compressed RLE counts string
    of the ``h`` x ``w`` mask, exactly as ``frPyObjects`` + ``merge`` give it."""
    import pycocotools.mask as mask_api

    rles = mask_api.frPyObjects([[float(v) for v in r] for r in req["rings"]], int(req["h"]), int(req["w"]))
    counts = mask_api.merge(rles)["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
