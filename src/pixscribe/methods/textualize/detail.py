"""Detail from vision experts: dense regions, a SAM mask per region, depth per mask.

Image Textualization gives its rewriting LLM, per object, a region caption (GRiT dense
captions; here Florence-2's ``<DENSE_REGION_CAPTION>``), the box, how near the object is
(a depth map averaged over the object's SAM mask) and how much of the image the mask
covers. This stage computes those per image; the rewrite stage normalises them over the
objects it uses (see :mod:`pixscribe.methods.textualize.rewrite`).

``regions`` (one entry per dense region, in the captioner's order):

- ``caption``: the region caption; ``box`` (pixel xyxy) and ``box_norm`` ([0, 1]);
- ``mask``: SAM's best mask for the region box (COCO RLE), ``mask_score`` its predicted IoU,
  ``area`` its pixels;
- ``nearness``: the mean of the depth expert's nearness map (1 = nearest pixel of the
  image, 0 = farthest) over the mask's pixels (the box's, if the mask is empty). The depth
  expert already turns its model's output into nearness (Depth Anything predicts inverse
  depth), so nothing is inverted here;
- ``size_pct``: mask pixels as a percentage of the image.

With an OCR expert, ``ocr`` lists the text lines read in the image (``text``, ``box_norm``,
``score``); prompts quote them as data.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...api.stage import Stage
from ...experts import rle
from ...experts.base import Detection, Expert, Mask, to_jsonable
from ...record import Record
from ...stages.experts import FIX, expert_identity, setup_experts

VERSION = 1  # bump when the numbers change meaning


def mask_nearness(near: np.ndarray, mask: Mask, box: Any) -> float:
    """Mean nearness over the mask's pixels (over the box when the mask is empty)."""
    m = rle.decode(mask.rle).astype(bool) if mask.area else None
    if m is not None and m.shape != near.shape:
        raise ValueError(f"mask {m.shape} and depth map {near.shape} differ in size")
    if m is None:
        h, w = near.shape
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        vals = near[max(0, y0):max(y0 + 1, min(h, y1)), max(0, x0):max(x0 + 1, min(w, x1))]
    else:
        vals = near[m]
    return round(float(vals.mean()), 4) if vals.size else 0.0


def region_json(det: Detection, mask: Mask, near: np.ndarray, width: int, height: int) -> dict[str, Any]:
    return {
        "caption": det.label,
        "box": list(det.box),
        "box_norm": list(det.box_norm),
        "mask": mask.rle,
        "mask_score": mask.score,
        "area": int(mask.area),
        "nearness": mask_nearness(near, mask, det.box),
        "size_pct": round(100.0 * mask.area / max(width * height, 1), 4),
    }


def ocr_json(out: Any) -> list[dict[str, Any]]:
    lines = out.get("lines", []) if isinstance(out, dict) else list(out or [])
    return [{"text": d["text"], "box_norm": d["box_norm"], "score": d["score"]} for d in to_jsonable(lines)]


class DetailStage(Stage):
    name = "detail"
    needs = ()
    needs_image = True

    def __init__(self, dense: Expert, sam: Expert, depth: Expert, ocr: Expert | None = None):
        self.dense, self.sam, self.depth, self.ocr = dense, sam, depth, ocr
        self.provides = ("regions",) + (("ocr",) if ocr is not None else ())
        self.timings = {e.name: 0.0 for e in self._experts()}

    def _experts(self) -> list[Expert]:
        return [e for e in (self.dense, self.sam, self.depth, self.ocr) if e is not None]

    def options(self) -> dict[str, Any]:
        return {"version": VERSION, "dense": expert_identity(self.dense), "sam": expert_identity(self.sam),
                "depth": expert_identity(self.depth), "ocr": expert_identity(self.ocr) if self.ocr else None}

    def models(self) -> list[Any]:
        return list(self._experts())

    def setup(self) -> None:
        setup_experts(self._experts(), FIX)

    def _timed(self, expert: Expert, fn: Any, *args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            self.timings[expert.name] += time.perf_counter() - t

    def __call__(self, records: list[Record]) -> list[Record]:
        t0 = time.perf_counter()
        images = [r.image for r in records]
        dets: list[list[Detection]] = self._timed(self.dense, self.dense.run, images)
        masks = self._timed(self.sam, self.sam.run, images, boxes=[[d.box for d in ds] for ds in dets])
        with_regions = [i for i, ds in enumerate(dets) if ds]
        maps = self._timed(self.depth, self.depth.maps, [images[i] for i in with_regions]) if with_regions else []
        near = dict(zip(with_regions, maps))
        lines = self._timed(self.ocr, self.ocr.run, images) if self.ocr is not None else None
        dt = (time.perf_counter() - t0) / max(len(records), 1)
        for i, r in enumerate(records):
            w, h = r.image.width, r.image.height
            regions = [region_json(d, m, near[i], w, h) for d, m in zip(dets[i], masks[i])]
            r.set("regions", regions, stage=self.name, seconds=dt,
                  experts={e.name: e.model for e in self._experts()})
            if lines is not None:
                r.set("ocr", ocr_json(lines[i]), stage=self.name, expert="ocr", model=self.ocr.model)
        return records

    def summary(self) -> dict[str, Any]:
        return {f"{k}_seconds": round(v, 3) for k, v in self.timings.items()}


__all__ = ["DetailStage", "VERSION", "mask_nearness", "ocr_json", "region_json"]
