"""Generation backends behind one interface (:class:`~pixscribe.backends.base.Backend`).

:func:`make_backend` picks one from the run configuration. Backend modules are imported
lazily, so a run against a server never imports torch, and a local run never imports an
HTTP client it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .base import (
    Backend,
    BackendUnavailable,
    BackendUsage,
    GenerationRequest,
    GenerationResult,
    Sampling,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

BACKENDS = ("transformers", "openai", "vllm")


def make_backend(config: "RunConfig", *, role: Literal["vlm", "llm"] = "vlm") -> Backend:
    """The backend named by ``config.backend``, for ``config.vlm``.

    ``role="llm"`` builds the text model for rewriting stages instead: ``config.llm`` when
    set, else the VLM itself (a VLM answers text-only requests too).
    """
    if role == "llm" and config.llm and config.llm != config.vlm:
        config = config.model_copy(update={"vlm": config.llm})
    elif role not in ("vlm", "llm"):
        raise ValueError(f"role must be 'vlm' or 'llm', got {role!r}")
    name = config.backend
    if name == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend.from_config(config)
    if name == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend.from_config(config)
    if name == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend.from_config(config)
    raise ValueError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "BackendUsage",
    "GenerationRequest",
    "GenerationResult",
    "Sampling",
    "make_backend",
]
