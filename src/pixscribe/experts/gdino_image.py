"""Grounding DINO's image side, computed once per image and served to each of its phrases.

In transformers' ``GroundingDinoModel.forward`` only one call reads the pixels and nothing
else: ``self.backbone(pixel_values, pixel_mask)``, the Swin backbone plus the position
embeddings of its feature maps. Everything after it depends on the text: the encoder's
first layer fuses text into the image features (bi-directional cross attention), the query
selection scores image tokens against the text, and the decoder attends to both. The input
projections (a 1x1 convolution and a GroupNorm per level, and a 3x3 one for the fourth
level) come after the backbone call inside the same forward and stay per pair: about 2 of the
~370 GMACs of a grounding-dino-tiny pass at 800x1200 px.

So a phrase checked alone costs the backbone once per image: :func:`image_sides` runs the
backbone on a batch of images, and :func:`serving` swaps a :class:`ServedBackbone` into the
model for one forward, which hands each (image, phrase) pair its image's features. The rest
of the forward is transformers' own code, unchanged, so the result is the per-phrase pass's
up to floating-point summation order. :func:`structure_problem` says when the installed
transformers no longer has this shape (the caller then runs the plain per-phrase path), and
:func:`serving` raises if a forward did not ask for the backbone exactly once.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn


@dataclass
class ImageSide:
    """One image's backbone output: a (feature map, mask) pair and a position embedding per level."""

    features: list[tuple[torch.Tensor, torch.Tensor]]
    positions: list[torch.Tensor]


def structure_problem(model: Any) -> str | None:
    """Why ``model`` (a ``GroundingDinoModel``) cannot be fed precomputed image features, or None."""
    from transformers.models.grounding_dino import modeling_grounding_dino as gd

    if not isinstance(model, gd.GroundingDinoModel):
        return f"expected a GroundingDinoModel, got {type(model).__name__}"
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, gd.GroundingDinoConvModel):
        return f"GroundingDinoModel.backbone is a {type(backbone).__name__}, not a GroundingDinoConvModel"
    if not hasattr(backbone, "position_embedding"):
        return "GroundingDinoConvModel has no position_embedding"
    return None


def image_sides(model: Any, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> list[ImageSide]:
    """The backbone's output for a batch of same-sized images, split into one :class:`ImageSide` each."""
    features, positions = model.backbone(pixel_values, pixel_mask)
    return [ImageSide(features=[(f[k : k + 1], m[k : k + 1]) for f, m in features],
                      positions=[p[k : k + 1] for p in positions]) for k in range(pixel_values.shape[0])]  # fmt: skip


class ServedBackbone(nn.Module):
    """Stands in for ``GroundingDinoModel.backbone`` during one forward over (image, phrase) pairs.

    ``sides`` holds one :class:`ImageSide` per pair (the same object for the pairs of one image);
    the forward concatenates them in pair order, as the backbone would have returned them.
    """

    def __init__(self, original: nn.Module, sides: list[ImageSide]):
        super().__init__()
        self.position_embedding = original.position_embedding  # used for the extra, downsampled level
        self.sides = sides
        self.calls = 0
        self.train(original.training)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[list, list]:
        self.calls += 1
        if pixel_values.shape[0] != len(self.sides):
            raise RuntimeError(f"served backbone: {pixel_values.shape[0]} rows in the batch, {len(self.sides)} served")
        rows = self.sides
        levels = range(len(rows[0].features))
        features = [(torch.cat([s.features[lv][0] for s in rows]), torch.cat([s.features[lv][1] for s in rows]))
                    for lv in levels]  # fmt: skip
        positions = [torch.cat([s.positions[lv] for s in rows]) for lv in levels]
        return features, positions  # fresh lists: the model appends its extra level to them


@contextmanager
def serving(model: Any, sides: list[ImageSide]) -> Iterator[ServedBackbone]:
    """Within the block, ``model``'s backbone returns ``sides`` (one per batch row) instead of running."""
    original = model.backbone
    served = ServedBackbone(original, sides)
    model.backbone = served
    try:
        yield served
    finally:
        model.backbone = original
    if served.calls != 1:
        raise RuntimeError(
            f"GroundingDinoModel.forward called its backbone {served.calls} times (expected once): the installed "
            "transformers changed how it uses the backbone, so precomputed image features cannot be served. "
            "Run the plain per-phrase path with expert_options: {grounding_dino: {share_image: false}}."
        )


def run_shared(det: Any, images: list[Any], per: list[list[str]], bt: float, tt: float) -> list[list[Any]]:
    """``det.run(images, per, each=True)`` for a :class:`GroundingDinoExpert`: each query alone,
    with the processor's image work and the backbone once per image. (Image, query) pairs of
    same-sized images share a forward, ``det.batch_size`` pairs at most; an image's backbone
    output is kept until its last pair has run."""
    pixels = {i: det.processor(images=[images[i]], return_tensors="pt") for i, qs in enumerate(per) if qs}
    shape = lambda i: tuple(pixels[i]["pixel_values"].shape)  # noqa: E731
    pairs = sorted(((i, q) for i, qs in enumerate(per) for q in qs), key=lambda p: (shape(p[0]), p[0]))
    results: list[list[Any]] = [[] for _ in images]
    sides: dict[int, ImageSide] = {}
    for part in _same_shape_batches(pairs, shape, det.batch_size):
        idx = [i for i, _ in part]
        sides = {i: sides[i] for i in idx if i in sides}  # the images whose pairs are all done are dropped
        sides.update(_sides_of(det, [i for i in dict.fromkeys(idx) if i not in sides], pixels))
        inputs = det.processor(text=[det._text([q]) for _, q in part], return_tensors="pt", padding=True)
        for k in ("pixel_values", "pixel_mask"):
            inputs[k] = torch.cat([pixels[i][k] for i in idx])
        dets = det._forward(inputs, [images[i] for i in idx], [[q] for _, q in part], bt, tt, [sides[i] for i in idx])
        for i, d in zip(idx, dets):
            results[i].extend(d)
    return results


def _same_shape_batches(pairs: list[tuple[int, str]], shape: Any, size: int) -> list[list[tuple[int, str]]]:
    """Consecutive pairs cut into batches of at most ``size`` whose images have one shape."""
    batches: list[list[tuple[int, str]]] = []
    for p in pairs:
        if batches and len(batches[-1]) < size and shape(batches[-1][0][0]) == shape(p[0]):
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches


def _sides_of(det: Any, idx: list[int], pixels: dict[int, Any]) -> dict[int, ImageSide]:
    """The backbone on images ``idx`` (all of one shape), in one batch."""
    from .hf import _to_device

    if not idx:
        return {}
    batch = {k: torch.cat([pixels[i][k] for i in idx]) for k in ("pixel_values", "pixel_mask")}
    batch = _to_device(batch, det.device, det.torch_dtype)
    with torch.inference_mode():
        return dict(zip(idx, image_sides(det.net.model, batch["pixel_values"], batch["pixel_mask"])))


__all__ = ["ImageSide", "ServedBackbone", "image_sides", "run_shared", "serving", "structure_problem"]
