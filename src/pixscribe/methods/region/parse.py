"""Regions from input rows: one row per region, or one row per image with a ``regions`` list.

    regions_from_columns(record.columns, record.orig_width, record.orig_height)
    # -> [Region, ...]  (a malformed one has .error set; it never raises)

Input columns arrive as python values or as JSON text (pixscribe's readers keep non-string
values as JSON); both are accepted. One region is a dict with any of:

==================  =============================================================
key                 meaning
==================  =============================================================
``mask``            any mask format of :mod:`.masks` (alias ``segmentation``, COCO's
                    name: polygons or RLE)
``box``             pixel xyxy (the pixscribe convention), or as ``box_format`` says
``bbox``            COCO pixel ``[x, y, w, h]``
``box_norm``        xyxy normalised to [0, 1]
``box_format``      how ``box`` is written: ``xyxy``, ``xywh``, ``xyxy_norm``, ``xywh_norm``
``points``          ``[[x, y], ...]`` pixels; ``labels`` (alias ``point_labels``): 1 = in,
                    0 = out, default all 1
``id``              the region's id (alias ``region_id``)
``attribute``       the attribute to describe (task ``attribute``)
``instruction``     a request about this region, sent as quoted text
==================  =============================================================

A bare list of 4 numbers is a box (``box_format``), a bare string or RLE dict is a mask. In
one-row-per-region input the same keys are columns of the row (``region`` may also hold the
whole dict). With both a mask and a box (COCO annotations have both), the mask wins and the
box is not used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .masks import Guard, decode_mask
from .types import Box, Region, RegionError, mask_box

BOX_FORMATS = ("xyxy", "xywh", "xyxy_norm", "xywh_norm")
MASK_KEYS = ("mask", "segmentation")
BOX_KEYS = ("box", "bbox", "box_norm")
REGION_KEYS = MASK_KEYS + BOX_KEYS + ("points",)
# every key parse_region reads from a region dict (or from a row that is one region)
READ_KEYS = ("id", "region_id", "attribute", "instruction", *REGION_KEYS, "box_format", "labels", "point_labels")
_EDGE_TOLERANCE = 1.0  # a box may overhang the image by this many pixels (rounding) and is clipped


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError as exc:
            raise RegionError(f"not valid JSON ({exc.msg} at character {exc.pos}): {v[:60]!r}") from exc
        except (RecursionError, ValueError) as exc:  # nested too deeply; an integer of over 4300 digits
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
            raise RegionError(f"not valid JSON ({why}): {v[:60]!r}") from None
    return v


def parse_box(values: Any, fmt: str, width: int, height: int) -> Box:
    """Four numbers in ``fmt`` -> pixel xyxy clipped to the image; raises RegionError."""
    if fmt not in BOX_FORMATS:
        raise RegionError(f"unknown box_format {fmt!r}; choose from {', '.join(BOX_FORMATS)}")
    values = _maybe_json(values)
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise RegionError(f"a box is 4 numbers ({fmt}), got {values!r:.80}")
    try:
        a, b, c, d = (float(v) for v in values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RegionError(f"a box is 4 numbers ({fmt}), got {values!r:.80}") from exc
    if not all(math.isfinite(v) for v in (a, b, c, d)):
        raise RegionError(f"box {values!r} has a non-finite number")
    if fmt.endswith("_norm"):
        if min(a, b, c, d) < 0 or max(a, b, c, d) > 1:
            raise RegionError(f"normalised box {values!r} has a value outside [0, 1]")
        a, c = a * width, c * width
        b, d = b * height, d * height
    x0, y0, x1, y1 = (a, b, a + c, b + d) if fmt.startswith("xywh") else (a, b, c, d)
    if x1 <= x0 or y1 <= y0:
        raise RegionError(f"box {values!r} ({fmt}) has no area: x1 must exceed x0 and y1 must exceed y0")
    return _inside(x0, y0, x1, y1, width, height, values)


def _inside(x0: float, y0: float, x1: float, y1: float, width: int, height: int, shown: Any) -> Box:
    t = _EDGE_TOLERANCE
    if x0 < -t or y0 < -t or x1 > width + t or y1 > height + t:
        raise RegionError(f"box {shown!r} is outside the {width}x{height} image")
    box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise RegionError(f"box {shown!r} is outside the {width}x{height} image")
    return box


def parse_points(points: Any, labels: Any, width: int, height: int) -> tuple[list[tuple[float, float]], list[int]]:
    """``[[x, y], ...]`` (and optional 0/1 labels) inside the image; raises RegionError."""
    points, labels = _maybe_json(points), _maybe_json(labels)
    if isinstance(points, (list, tuple)) and len(points) == 2 and all(isinstance(v, (int, float)) for v in points):
        points = [points]  # one bare point
    if not isinstance(points, (list, tuple)) or not points:
        raise RegionError(f"points must be a non-empty list of [x, y], got {points!r:.80}")
    out: list[tuple[float, float]] = []
    for p in points:
        try:
            x, y = (float(v) for v in p)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RegionError(f"a point is [x, y], got {p!r:.40}") from exc
        if not (0 <= x <= width and 0 <= y <= height):
            raise RegionError(f"point {list(p)!r} is outside the {width}x{height} image")
        out.append((x, y))
    labs = [1] * len(out) if labels is None else list(labels) if isinstance(labels, (list, tuple)) else None
    if labs is None or len(labs) != len(out) or any(v not in (0, 1) for v in labs):
        raise RegionError(f"labels must be one 0 (out) or 1 (in) per point ({len(out)} points), got {labels!r:.60}")
    if not any(labs):
        raise RegionError("every point is labelled 0 (outside): give at least one point inside the region")
    return out, [int(v) for v in labs]


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return str(v).strip()


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _as_region_dict(value: Any) -> dict[str, Any]:
    value = _maybe_json(value)
    if isinstance(value, dict):
        if "counts" in value or "b64gzip" in value:  # a bare mask
            return {"mask": value}
        return value
    if isinstance(value, str):
        return {"mask": value}
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        return {"box": list(value)}
    if isinstance(value, (list, tuple)):
        return {"mask": value}
    raise RegionError(f"a region is a dict (mask/box/bbox/points, id, attribute), got a {type(value).__name__}")


def parse_region(
    value: Any, width: int, height: int, *, index: int = 0, box_format: str = "xyxy", base_dir: str | None = None,
    guard: Guard | None = None,
) -> Region:
    """One region (dict, box, mask) -> a Region; any problem becomes the region's error."""
    rid: str | None = None
    try:
        d = _as_region_dict(value)
        rid = _text(_first(d, "id", "region_id"))
        r = Region(index=index, size=(width, height), id=rid, attribute=_text(d.get("attribute")),
                   instruction=_text(d.get("instruction")))  # fmt: skip
        _fill_geometry(r, d, box_format, base_dir, guard)
        return r
    except RegionError as exc:
        return Region.failed(index, (width, height), exc, id=rid)


def _fill_geometry(r: Region, d: Mapping[str, Any], box_format: str, base_dir: str | None,
                   guard: Guard | None = None) -> None:
    w, h = r.size
    mask = _first(d, *MASK_KEYS)
    if mask is not None:
        r.kind, r.mask = "mask", decode_mask(_maybe_json(mask), w, h, base_dir, guard)
        r.box = mask_box(r.mask)
        return
    if d.get("box") is not None:
        r.kind, r.box = "box", parse_box(d["box"], str(d.get("box_format") or box_format), w, h)
        return
    if d.get("bbox") is not None:
        r.kind, r.box = "box", parse_box(d["bbox"], "xywh", w, h)
        return
    if d.get("box_norm") is not None:
        r.kind, r.box = "box", parse_box(d["box_norm"], "xyxy_norm", w, h)
        return
    if d.get("points") is not None:
        pts, labels = parse_points(d["points"], _first(d, "labels", "point_labels"), w, h)
        r.kind, r.points, r.labels = "points", pts, labels
        inside = [p for p, lab in zip(pts, labels) if lab]
        xs, ys = [p[0] for p in inside], [p[1] for p in inside]
        r.box = (min(xs), min(ys), max(max(xs), min(xs) + 1), max(max(ys), min(ys) + 1))
        return
    raise RegionError(f"no region geometry: give one of {', '.join(REGION_KEYS)}")


def regions_from_columns(
    columns: Mapping[str, Any],
    width: int,
    height: int,
    *,
    column: str = "regions",
    box_format: str = "xyxy",
    base_dir: str | None = None,
    guard: Guard | None = None,
) -> list[Region]:
    """The regions of one input row: its ``regions`` list, or the row itself as one region.

    A ``regions`` value that is not a list (or JSON text of one) is one failed region, so the
    row still shows the reason. Never raises."""
    size = (width, height)
    if columns.get(column) is not None:
        try:
            items = _maybe_json(columns[column])
        except RegionError as exc:
            return [Region.failed(0, size, f"the {column!r} column: {exc}")]
        if hasattr(items, "tolist") and not isinstance(items, (str, bytes)):  # a numpy array of region dicts
            items = items.tolist()
        if not isinstance(items, (list, tuple)):
            return [Region.failed(0, size, f"the {column!r} column must be a list of regions, got {type(items).__name__}")]
        return [parse_region(v, width, height, index=i, box_format=box_format, base_dir=base_dir, guard=guard)
                for i, v in enumerate(items)]
    if columns.get("region") is not None:
        return [parse_region(columns["region"], width, height, box_format=box_format, base_dir=base_dir, guard=guard)]
    row = {k: v for k, v in columns.items() if v is not None}
    if not any(k in row for k in REGION_KEYS):
        return [Region.failed(0, size, f"the row has no {column!r} column and none of {', '.join(REGION_KEYS)}")]
    # one row per region: the row's own id column is the image's; only region_id names the region
    row = {k: v for k, v in row.items() if k != "id"}
    return [parse_region(row, width, height, box_format=box_format, base_dir=base_dir, guard=guard)]


def region_ids(image_id: str, regions: Sequence[Region], *, per_row: bool = False) -> list[str]:
    """Output ids: the region's own id, else ``<image id>:<index>``; with ``per_row`` (one row
    per region, the row's id already names the region) a region without an id takes the row's."""
    if per_row:
        return [r.id if r.id is not None else image_id for r in regions]
    return [r.id if r.id is not None else f"{image_id}:{r.index}" for r in regions]


__all__ = ["BOX_FORMATS", "READ_KEYS", "parse_box", "parse_points", "parse_region", "region_ids", "regions_from_columns"]
