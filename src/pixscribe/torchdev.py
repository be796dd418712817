"""Device and dtype: one rule for the transformers backend, the experts and the metrics.

``auto`` device: CUDA when visible, else CPU. ``auto`` dtype: bf16 on CUDA when supported,
else fp16 on CUDA; fp32 on CPU. Asking for CUDA where there is none is an error that says
what to use instead.
"""

from __future__ import annotations

from typing import Any

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def resolve_device(device: str = "auto") -> str:
    import torch

    from .errors import BackendUnavailable

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return getattr(torch, DTYPES.get(dtype, dtype))
    except AttributeError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32") from None
