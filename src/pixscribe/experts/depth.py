"""Monocular depth (Depth Anything V2 by default, or DPT) summarised per region, nearest = 1.

    depth = DepthExpert("depth-anything/Depth-Anything-V2-Small-hf"); depth.setup()
    depth.run([img], boxes=[[(x0, y0, x1, y1), ...]])   # or masks=[[rle, ...]]
    # -> [[RegionDepth(box_norm=..., relative=0.83, label="..."), ...]]
    depth.summary([img])   # -> [{"mean": ..., "top": ..., "bottom": ..., "left": ..., "right": ..., ...}]

Each predicted map is normalised per image to *nearness* in [0, 1]: the nearest pixel is 1,
the farthest 0 (as Image Textualization). A region's ``relative`` is the median nearness of
its pixels (a mask's, or a box's).

Sign conventions, decided from the model's config (override with ``larger_is_nearer``):

- Depth Anything with ``depth_estimation_type="relative"`` (the default checkpoints) and DPT
  (MiDaS-style, e.g. Intel/dpt-large): the output is relative *inverse* depth (disparity):
  larger = nearer.
- Depth Anything ``"metric"`` checkpoints, ZoeDepth and other metric models: the output is
  a distance: larger = farther, so it is flipped.

Without boxes or masks, ``run`` returns the nine cells of a 3x3 grid ("upper left" ...
"lower right"), so "the lower part is nearer" can be said of any photo.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import rle as rle_mod
from .hf import TransformersExpert
from .base import Detection, Mask, RegionDepth, check_bounds, clamp_box, normalize_box
from .hf import _to_device


DEFAULT_DEPTH = "depth-anything/Depth-Anything-V2-Small-hf"
GRID_NAMES = [["upper left", "upper", "upper right"], ["left", "center", "right"], ["lower left", "lower", "lower right"]]


def larger_is_nearer_for(config: Any) -> bool:
    """True when the model predicts inverse depth (disparity), False for metric distance."""
    mt = str(getattr(config, "model_type", "")).replace("-", "_")
    kind = str(getattr(config, "depth_estimation_type", "relative") or "relative")
    if mt in ("depth_anything", "prompt_depth_anything"):
        return kind == "relative"
    if mt == "dpt":
        return True
    return False  # zoedepth, depth_pro, glpn ... predict metric distance


def nearness_map(depth: np.ndarray, larger_is_nearer: bool) -> np.ndarray:
    """Normalise one predicted map to [0, 1] with nearest = 1 (a flat map is all 0.5)."""
    d = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(d)
    if not finite.any():
        return np.full(d.shape, 0.5)
    lo, hi = float(d[finite].min()), float(d[finite].max())
    if hi - lo < 1e-12:
        return np.full(d.shape, 0.5)
    n = (np.where(finite, d, lo) - lo) / (hi - lo)
    return n if larger_is_nearer else 1.0 - n


def region_nearness(near: np.ndarray, box: Sequence[float] | None = None, mask: np.ndarray | None = None) -> float:
    h, w = near.shape
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != near.shape:
            raise ValueError(f"mask shape {m.shape} does not match the depth map {near.shape}")
        vals = near[m]
    else:
        x0, y0, x1, y1 = clamp_box(box if box is not None else (0, 0, w, h), w, h)
        xs, ys = int(np.floor(x0)), int(np.floor(y0))
        xe, ye = max(int(np.ceil(x1)), xs + 1), max(int(np.ceil(y1)), ys + 1)
        vals = near[ys:ye, xs:xe]
    if vals.size == 0:
        return 0.0
    return round(float(np.median(vals)), 4)


def summarize_nearness(near: np.ndarray) -> dict[str, float]:
    """Whole-image summary: mean nearness, per half, and the spread."""
    h, w = near.shape
    q = lambda a: round(float(a.mean()), 4) if a.size else 0.0  # noqa: E731
    return {
        "mean": q(near),
        "top": q(near[: max(h // 2, 1)]),
        "bottom": q(near[h // 2 :]),
        "left": q(near[:, : max(w // 2, 1)]),
        "right": q(near[:, w // 2 :]),
        "center": q(near[h // 3 : max(2 * h // 3, h // 3 + 1), w // 3 : max(2 * w // 3, w // 3 + 1)]),
        "spread": round(float(np.percentile(near, 90) - np.percentile(near, 10)), 4),
    }


class DepthExpert(TransformersExpert):
    name = "depth"
    default_model = DEFAULT_DEPTH

    model_class = "AutoModelForDepthEstimation"
    processor_class = "AutoImageProcessor"

    def __init__(self, model: str | None = None, *, larger_is_nearer: bool | None = None, **kw: Any) -> None:
        super().__init__(model, **kw)
        self._larger_is_nearer = larger_is_nearer


    @property
    def larger_is_nearer(self) -> bool:
        if self._larger_is_nearer is not None:
            return self._larger_is_nearer
        self.setup()
        return larger_is_nearer_for(self.net.config)

    def maps(self, images: list[Any]) -> list[np.ndarray]:
        """One nearness map per image, at the image's size, in [0, 1] with nearest = 1."""
        import torch

        self.setup()
        check_bounds(images, self.name)  # the processor keeps the aspect: a 1x4000 strip would be 518 x 2,072,000
        flip = self.larger_is_nearer
        out: list[np.ndarray | None] = [None] * len(images)
        # images whose processed shapes differ (aspect-preserving resize) go in separate batches
        encoded = [self.processor(images=im, return_tensors="pt")["pixel_values"] for im in images]
        groups: dict[tuple, list[int]] = {}
        for i, pv in enumerate(encoded):
            groups.setdefault(tuple(pv.shape[1:]), []).append(i)
        for idx_all in groups.values():
            for s in range(0, len(idx_all), self.batch_size):
                idx = idx_all[s : s + self.batch_size]
                pv = torch.cat([encoded[i] for i in idx])
                with torch.inference_mode():
                    res = self.net(**_to_device({"pixel_values": pv}, self.device, self.torch_dtype))
                res.predicted_depth = res.predicted_depth.float().cpu()
                post = self.processor.post_process_depth_estimation(
                    res, target_sizes=[(images[i].height, images[i].width) for i in idx]
                )
                for i, p in zip(idx, post):
                    out[i] = nearness_map(p["predicted_depth"].numpy(), flip)
        return out  # type: ignore[return-value]

    def run(
        self,
        images: list[Any],
        boxes: Sequence[Sequence[Any]] | None = None,
        masks: Sequence[Sequence[Any]] | None = None,
        **_: Any,
    ) -> list[list[RegionDepth]]:
        for name, given in (("boxes", boxes), ("masks", masks)):
            if given is not None and len(given) != len(images):
                raise ValueError(f"got {len(given)} {name} lists for {len(images)} images")
        maps = self.maps(images)
        out: list[list[RegionDepth]] = []
        for i, (im, near) in enumerate(zip(images, maps)):
            w, h = im.width, im.height
            regions: list[RegionDepth] = []
            if masks is not None and masks[i]:
                for m in masks[i]:
                    r, label = (m.rle, m.label) if isinstance(m, Mask) else (m, "")
                    arr = rle_mod.decode(r) if isinstance(r, dict) else np.asarray(r)
                    box = rle_mod.to_xyxy(r) if isinstance(r, dict) else (0, 0, w, h)
                    regions.append(RegionDepth(normalize_box(box, w, h), region_nearness(near, mask=arr), label))
            elif boxes is not None and boxes[i]:
                for b in boxes[i]:
                    if isinstance(b, Detection):
                        box, label = b.box, b.label
                    elif isinstance(b, dict):
                        box, label = tuple(float(v) for v in b["box"]), str(b.get("label", ""))
                    else:
                        box, label = tuple(float(v) for v in b), ""
                    regions.append(RegionDepth(normalize_box(box, w, h), region_nearness(near, box=box), label))
            elif boxes is None and masks is None:
                for r in range(3):
                    for c in range(3):
                        box = (c * w / 3, r * h / 3, (c + 1) * w / 3, (r + 1) * h / 3)
                        regions.append(RegionDepth(normalize_box(box, w, h), region_nearness(near, box=box),
                                                   GRID_NAMES[r][c]))  # fmt: skip
            out.append(regions)
        return out

    def summary(self, images: list[Any]) -> list[dict[str, Any]]:
        """Whole-image nearness summary per image (see :func:`summarize_nearness`)."""
        conv = "larger output = nearer (inverse depth)" if self.larger_is_nearer else "larger output = farther"
        return [dict(summarize_nearness(n), convention=conv) for n in self.maps(images)]


__all__ = ["DEFAULT_DEPTH", "DepthExpert", "larger_is_nearer_for", "nearness_map", "region_nearness", "summarize_nearness"]
