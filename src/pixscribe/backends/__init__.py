"""Generation backends behind one interface (:class:`~pixscribe.backends.base.Backend`).

:func:`make_backend` builds one from a model spec (``pixscribe.api.models.ModelSpec``). Backend modules are imported
lazily, so a run against a server never imports torch, and a local run never imports an
HTTP client it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    Backend,
    BackendUnavailable,
    BackendUsage,
    GenerationRequest,
    GenerationResult,
    Sampling,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..api.models import ModelSpec
    from ..config import RunConfig

BACKENDS = ("transformers", "openai", "vllm")


def make_backend(spec: "ModelSpec", config: "RunConfig") -> Backend:
    """The backend of ``spec`` (its backend kind, model, revision, dtype, device, servers);
    ``config`` gives the run's other settings (timeouts, concurrency, the pixel budget...)."""
    if spec.backend == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend.from_spec(spec, config)
    if spec.backend == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend.from_spec(spec, config)
    if spec.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend.from_spec(spec, config)
    from ..errors import ConfigError

    raise ConfigError(f"unknown backend {spec.backend!r}; use one of {', '.join(BACKENDS)}")


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
