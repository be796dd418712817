"""Points (and, with ``--box-to-mask sam``, boxes) become masks through the SAM expert.

    sam = SamExpert(model_dir); sam.setup()
    regions = points_to_masks(sam, [image], [regions_of_image])[0]

``images`` are the images SAM sees (pixscribe's decoded, budget-resized ones); regions stay
in their own frame: prompts are scaled to the image, SAM's mask is scaled back (nearest) to
the region's frame. Each image is embedded once; each region is decoded with its own points
(positive and negative labels) and SAM's best of three masks (highest predicted IoU) is kept,
with that IoU as ``score``. A region SAM leaves empty becomes a region error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from ...experts import rle
from .types import Region, RegionError, mask_box


def _to_frame(mask: np.ndarray, region: Region) -> np.ndarray:
    w, h = region.size
    if mask.shape == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 0


def _with_mask(region: Region, mask: np.ndarray, score: float) -> Region:
    mask = _to_frame(mask, region)
    if not mask.any():
        return replace(region, error="region: SAM gave an empty mask for this prompt", mask=None)
    return replace(region, mask=mask, box=mask_box(mask), score=round(float(score), 4))


def _decode_points(sam: Any, image: Image.Image, emb: Any, region: Region) -> Region:
    import torch

    from ...experts.hf import _to_device

    sx, sy = image.width / region.size[0], image.height / region.size[1]
    pts = [[[[x * sx, y * sy] for x, y in region.points or []]]]
    inp = sam.processor(images=image, input_points=pts, input_labels=[[region.labels]], return_tensors="pt")
    inp.pop("pixel_values", None)
    prompt = {k: inp[k] for k in ("input_points", "input_labels")}
    with torch.inference_mode():
        res = sam.net(image_embeddings=emb, multimask_output=True, **_to_device(prompt, sam.device, sam.torch_dtype))
    masks = sam.processor.post_process_masks(res.pred_masks.float().cpu(), inp["original_sizes"],
                                             inp["reshaped_input_sizes"], mask_threshold=sam.mask_threshold)[0]  # fmt: skip
    ious = res.iou_scores.float().cpu()[0, 0]  # (3,)
    best = int(ious.argmax())
    return _with_mask(region, masks[0, best].numpy(), float(ious[best]))


def points_to_masks(sam: Any, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[list[Region]]:
    """Regions with points get SAM's mask (kind stays ``points``); the others pass through."""
    import torch

    sam.setup()
    if len(images) != len(regions):
        raise ValueError(f"got {len(regions)} region lists for {len(images)} images")
    out: list[list[Region]] = []
    for image, rs in zip(images, regions):
        todo = [r for r in rs if r.ok and r.points and r.mask is None]
        if not todo:
            out.append(list(rs))
            continue
        enc = sam.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            emb = sam.net.get_image_embeddings(enc["pixel_values"].to(sam.device, sam.torch_dtype))
        done = {id(r): _safe(_decode_points, sam, image, emb, r) for r in todo}
        out.append([done.get(id(r), r) for r in rs])
    return out


def boxes_to_masks(sam: Any, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]]) -> list[list[Region]]:
    """``--box-to-mask sam``: box regions get SAM's mask for their box (kind stays ``box``)."""
    todo = [[r for r in rs if r.ok and r.mask is None and r.kind == "box"] for rs in regions]
    boxes = [[_scaled_box(r, im) for r in t] for t, im in zip(todo, images)]
    masks = sam.run(list(images), boxes=boxes)
    out = []
    for rs, t, ms in zip(regions, todo, masks):
        done = {id(r): _with_mask(r, rle.decode(m.rle) != 0, m.score) for r, m in zip(t, ms)}
        out.append([done.get(id(r), r) for r in rs])
    return out


def _scaled_box(r: Region, image: Image.Image) -> list[float]:
    sx, sy = image.width / r.size[0], image.height / r.size[1]
    x0, y0, x1, y1 = r.box  # type: ignore[misc]
    return [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


def _safe(fn: Any, sam: Any, image: Image.Image, emb: Any, r: Region) -> Region:
    try:
        return fn(sam, image, emb, r)
    except (RegionError, ValueError, RuntimeError) as exc:  # one bad prompt must not stop the others
        return replace(r, error=f"region: SAM failed on this prompt: {exc}")


__all__ = ["boxes_to_masks", "points_to_masks"]
