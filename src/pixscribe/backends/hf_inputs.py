"""A transformers model's inputs from generation requests, built the same way in the model's
process and in the prepare workers (:mod:`pixscribe.backends.prepare_pool`).

:class:`ProcessorSpec` says where a model's processor comes from (source, revision, remote
code, which image-processor backend); it is picklable, so a worker process loads the very
processor the model's process loaded. :class:`Encoder` holds that processor and turns one
batch of requests into CPU tensors: the model's chat template per request, the image
processor within the pixel budget, the tokenizer with LEFT padding.

Image processors: transformers 5 picks the torchvision ("fast") class when torchvision is
installed and the PIL ("slow") one otherwise; :func:`processor_info` says which one a model
got, and ``_run.json`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import BackendUnavailable, GenerationRequest

# Image processors whose ``size`` is a pixel budget (``shortest_edge``/``longest_edge`` in
# pixels, resized by ``smart_resize``) rather than a side length: the Qwen-VL family.
_PIXEL_BUDGET_PROCESSORS = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil")


@dataclass(frozen=True)
class ProcessorSpec:
    source: str  # a local directory or a hub id
    hub_kw: dict[str, Any] = field(default_factory=dict)  # {"revision": ...} for a hub id
    trust_remote_code: bool = False
    is_vlm: bool = True
    # None: transformers' choice (torchvision when installed); "pil" or "torchvision" forces one
    image_backend: str | None = None


def load_processor(spec: ProcessorSpec) -> tuple[Any, Any]:
    """``(processor, tokenizer)``: AutoProcessor for a VLM, AutoTokenizer (both) for a text
    model, with a pad token. Raises the loaders' own errors (the caller words them)."""
    import transformers

    kw: dict[str, Any] = dict(trust_remote_code=spec.trust_remote_code, **spec.hub_kw)
    if spec.is_vlm:
        processor = transformers.AutoProcessor.from_pretrained(spec.source, **kw)
        if spec.image_backend and getattr(processor, "image_processor", None) is not None:
            processor.image_processor = transformers.AutoImageProcessor.from_pretrained(
                spec.source, backend=spec.image_backend, **kw)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise BackendUnavailable(f"model {spec.source!r}: its processor has no tokenizer")
    else:
        processor = tokenizer = transformers.AutoTokenizer.from_pretrained(spec.source, **kw)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor, tokenizer


def processor_info(processor: Any) -> dict[str, Any]:
    """The processor's class and its image processor's class and kind (fast or slow)."""
    info: dict[str, Any] = {"class": type(processor).__name__}
    ip = getattr(processor, "image_processor", None)
    if ip is not None:
        bases = {c.__name__ for c in type(ip).__mro__}
        fast = bool(bases & {"TorchvisionBackend", "BaseImageProcessorFast"})
        info["image_processor"] = type(ip).__name__
        info["image_processor_kind"] = "fast (torchvision)" if fast else "slow (PIL)"
    return info


def pixel_budget_kwargs(image_processor: Any, max_pixels: int | None) -> dict[str, Any]:
    """``images_kwargs`` that hold a pixel-budget image processor to ``max_pixels``; else ``{}``."""
    if not max_pixels or image_processor is None:
        return {}
    if not any(c.__name__ in _PIXEL_BUDGET_PROCESSORS for c in type(image_processor).__mro__):
        return {}
    size = getattr(image_processor, "size", None)
    shortest = getattr(size, "shortest_edge", None)
    if shortest is None and isinstance(size, dict):
        shortest = size.get("shortest_edge")
    shortest = min(int(shortest), int(max_pixels)) if shortest else int(max_pixels)
    return {"size": {"shortest_edge": shortest, "longest_edge": int(max_pixels)}}


class Encoder:
    """One batch of requests -> the model's inputs (CPU tensors), see the module doc."""

    def __init__(self, processor: Any, tokenizer: Any, is_vlm: bool):
        self.processor = processor
        self.tokenizer = tokenizer
        self.is_vlm = is_vlm

    @classmethod
    def load(cls, spec: ProcessorSpec) -> "Encoder":
        processor, tokenizer = load_processor(spec)
        return cls(processor, tokenizer, spec.is_vlm)

    def prompt(self, req: GenerationRequest) -> str:
        return self.processor.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)

    def encode(self, reqs: list[GenerationRequest], *, max_pixels: int | None, padding_side: str = "left") -> Any:
        """Chat-templated prompts, padded on ``padding_side``, images processed (a BatchFeature
        or BatchEncoding of CPU tensors)."""
        texts = [self.prompt(r) for r in reqs]
        bos = getattr(self.tokenizer, "bos_token", None)
        # a chat template that already writes BOS must not get a second one from the tokenizer
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        tok_kw: dict[str, Any] = dict(
            padding=True, padding_side=padding_side, return_tensors="pt", add_special_tokens=add_special
        )
        if self.is_vlm and any(r.images for r in reqs):
            budget = pixel_budget_kwargs(getattr(self.processor, "image_processor", None), max_pixels)
            return self.processor(
                text=texts,
                images=[list(r.images) for r in reqs],  # nested: one list per request
                **({"images_kwargs": budget} if budget else {}),
                **tok_kw,
            )
        if self.is_vlm:
            return self.processor(text=texts, **tok_kw)
        return self.tokenizer(texts, **tok_kw)


def cast_floats(inputs: Any, dtype: Any) -> Any:
    """``inputs`` with every floating tensor in ``dtype`` (the model's), in place."""
    import torch

    for k, v in list(inputs.items()):
        if torch.is_tensor(v) and v.is_floating_point() and v.dtype != dtype:
            inputs[k] = v.to(dtype)
    return inputs


def to_device(inputs: Any, device: str | None, non_blocking: bool = False) -> dict[str, Any]:
    import torch

    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in inputs.items()}


def pinned(inputs: dict[str, Any], device: str | None) -> dict[str, Any]:
    """On CUDA, the tensors in page-locked memory, so the copy to the GPU runs without the CPU."""
    import torch

    if not str(device).startswith("cuda"):
        return inputs
    try:
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in inputs.items()}
    except RuntimeError:  # no page-locked memory left: a plain copy still works
        return inputs
