"""The region output: one dict per region, and its Arrow type for a ``regions`` list column.

    region_output(region, region_id="img1:0", task="attribute", attribute="color",
                  caption="bright red", prompt_mode="focal")
    # {"region_id": "img1:0", "index": 0, "source": "mask",
    #  "mask": {"size": [h, w], "counts": "..."}, "box": [x0, y0, x1, y1], "box_norm": [...],
    #  "area": 1234, "score": None, "label": None, "task": "attribute", "attribute": "color",
    #  "prompt_mode": "focal", "caption": "bright red", "error": None}

Geometry is in the frame the region was given in (the input image as the user has it), so a
mask written out is the mask read in. ``mask`` is COCO RLE (compressed string, as pycocotools
writes) for regions with a mask and null for box-only regions; ``area`` is the mask's pixel
count, or the pixels the box covers; ``label`` is what the proposing expert called a region
of ``--regions auto``. One row per region uses these keys as columns; one row
per image puts a list of them in a ``regions`` column of type :data:`REGION_ARROW`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ...experts import rle
from .types import Region

REGION_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("region_id", pa.string()),
    ("index", pa.int32()),
    ("source", pa.string()),
    ("mask", pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])),
    ("box", pa.list_(pa.float64())),
    ("box_norm", pa.list_(pa.float64())),
    ("area", pa.int64()),
    ("score", pa.float64()),
    ("label", pa.string()),
    ("task", pa.string()),
    ("attribute", pa.string()),
    ("prompt_mode", pa.string()),
    ("caption", pa.string()),
    ("error", pa.string()),
)
REGION_ARROW = pa.struct(list(REGION_FIELDS))
REGIONS_ARROW = pa.list_(REGION_ARROW)


def region_output(
    region: Region,
    *,
    region_id: str,
    task: str | None = None,
    attribute: str | None = None,
    caption: str | None = None,
    prompt_mode: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The output dict of one region (see the module doc); a failed region keeps its error."""
    w, h = region.size
    box = [round(float(v), 2) for v in region.box] if region.box else None
    return {
        "region_id": region_id,
        "index": region.index,
        "source": region.kind if region.ok else None,
        "mask": rle.encode(region.mask) if region.mask is not None else None,
        "box": box,
        "box_norm": [round(box[0] / w, 6), round(box[1] / h, 6), round(box[2] / w, 6), round(box[3] / h, 6)] if box else None,
        "area": region.area if region.ok else None,
        "score": region.score,
        "label": region.extra.get("label"),
        "task": task,
        "attribute": attribute if attribute is not None else region.attribute,
        "prompt_mode": prompt_mode,
        "caption": caption if region.ok else None,
        "error": region.error or error,
    }


def regions_column(rows: Sequence[Sequence[dict[str, Any]] | None]) -> pa.Array:
    """One ``regions`` list per image -> an Arrow array of :data:`REGIONS_ARROW`."""
    return pa.array(rows, type=REGIONS_ARROW)


__all__ = ["REGIONS_ARROW", "REGION_ARROW", "REGION_FIELDS", "region_output", "regions_column"]
