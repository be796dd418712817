"""SAM: box prompts -> the best mask per box, as COCO RLE with its area.

    sam = SamExpert("facebook/sam-vit-base"); sam.setup()
    sam.run([img], boxes=[[(x0, y0, x1, y1), ...]])   # pixel xyxy, one list per image
    # -> [[Mask(rle={"size": [h, w], "counts": "..."}, area=1234, box=..., box_norm=..., score=0.93), ...]]

``boxes`` may also be lists of :class:`Detection` (their ``box`` and ``label`` are used).
SAM predicts three masks per box prompt; the one with the highest predicted IoU is kept
and ``score`` is that predicted IoU. Masks are upscaled to the image size by the
processor's ``post_process_masks``. The image encoder runs once per batch of images;
prompts are then decoded image by image (images may have different numbers of boxes).
"""

from __future__ import annotations

from typing import Any, Sequence

from . import rle as rle_mod
from .hf import TransformersExpert
from .base import Detection, Mask, check_bounds, clamp_box, normalize_box
from .hf import _to_device


DEFAULT_SAM = "facebook/sam-vit-base"


def _box_and_label(b: Any) -> tuple[list[float], str]:
    if isinstance(b, Detection):
        return [float(v) for v in b.box], b.label
    if isinstance(b, dict):
        return [float(v) for v in b["box"]], str(b.get("label", ""))
    vals = [float(v) for v in b]
    if len(vals) != 4:
        raise ValueError(f"a SAM box prompt is pixel xyxy (4 numbers), got {b!r}")
    return vals, ""


class SamExpert(TransformersExpert):
    name = "sam"
    default_model = DEFAULT_SAM

    model_class = "SamModel"
    processor_class = "SamProcessor"

    def __init__(self, model: str | None = None, *, mask_threshold: float = 0.0, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.mask_threshold = mask_threshold


    def run(self, images: list[Any], boxes: Sequence[Sequence[Any]] | None = None, **_: Any) -> list[list[Mask]]:
        import torch

        self.setup()
        check_bounds(images, self.name)
        if boxes is None:
            raise ValueError("SAM needs box prompts: run(images, boxes=[[(x0, y0, x1, y1), ...], ...])")
        if len(boxes) != len(images):
            raise ValueError(f"got {len(boxes)} box lists for {len(images)} images")
        out: list[list[Mask]] = [[] for _ in images]
        todo = [i for i, bs in enumerate(boxes) if len(bs)]
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            imgs = [images[i] for i in idx]
            enc = self.processor(images=imgs, return_tensors="pt")
            with torch.inference_mode():
                emb = self.net.get_image_embeddings(enc["pixel_values"].to(self.device, self.torch_dtype))
            for j, i in enumerate(idx):
                im = images[i]
                prompts = [_box_and_label(b) for b in boxes[i]]
                pix = [list(clamp_box(b, im.width, im.height)) for b, _ in prompts]
                inp = self.processor(images=im, input_boxes=[pix], return_tensors="pt")
                inp.pop("pixel_values", None)
                with torch.inference_mode():
                    res = self.net(image_embeddings=emb[j : j + 1], multimask_output=True,
                                   **_to_device({"input_boxes": inp["input_boxes"]}, self.device, self.torch_dtype))  # fmt: skip
                masks = self.processor.post_process_masks(
                    res.pred_masks.float().cpu(), inp["original_sizes"], inp["reshaped_input_sizes"],
                    mask_threshold=self.mask_threshold,
                )[0]  # (n_boxes, 3, h, w) bool
                ious = res.iou_scores.float().cpu()[0]  # (n_boxes, 3)
                for k, (_, label) in enumerate(prompts):
                    best = int(ious[k].argmax())
                    m = masks[k, best].numpy()
                    enc_rle = rle_mod.encode(m)
                    area = rle_mod.area(enc_rle)
                    mbox = rle_mod.to_xyxy(enc_rle) if area else tuple(pix[k])
                    out[i].append(Mask(rle=enc_rle, area=area, box=tuple(round(v, 2) for v in mbox),  # type: ignore[arg-type]
                                       box_norm=normalize_box(mbox, im.width, im.height),
                                       score=round(float(ious[k, best]), 4), label=label))  # fmt: skip
        return out


__all__ = ["DEFAULT_SAM", "SamExpert"]
