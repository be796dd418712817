"""Models are shared, not stages: one loaded instance per (backend, model, revision, dtype,
device), whatever number of stages use it.

A method asks for a model by *role* (``"vlm"``, ``"llm"``, ``"judge"``...). Roles resolve
to a :class:`ModelSpec` from the run configuration:

- ``vlm``: ``--backend``, ``--vlm``, ``--revision``, ``--dtype``, ``--device``, ``--base-url``;
- ``llm``: the VLM itself unless ``--llm`` (and maybe ``--llm-backend`` / ``--llm-base-url``)
  names another model, so by default a text stage uses the VLM's weights (loaded once);
- any role can be set in YAML: ``models: {llm: {model: X, backend: openai, base_url: [U]}}``.

:class:`ModelPool` hands out one :class:`~pixscribe.backends.base.Backend` per spec key and
counts loads, so a test (or a user) can see that two stages shared one model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend

SPEC_FIELDS = ("model", "backend", "revision", "dtype", "device", "base_url", "api_key_env")
LOCAL_BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class ModelSpec:
    role: str
    model: str
    backend: str = "transformers"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    base_url: tuple[str, ...] = ()
    api_key_env: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two specs the same loaded model (or the same server pool)."""
        if self.backend in LOCAL_BACKENDS:
            return (self.backend, self.model, self.revision, self.dtype, self.device)
        return (self.backend, self.model, self.base_url)

    def identity(self) -> dict[str, Any]:
        """What goes into a stage's fingerprint: what changes the numbers, not where the
        server lives (the same model behind another URL gives the same outputs)."""
        d: dict[str, Any] = {"backend": self.backend, "model": self.model}
        if self.revision:
            d["revision"] = self.revision
        if self.backend in LOCAL_BACKENDS:
            d["dtype"] = self.dtype
            d["device"] = self.device
        return d


def resolve_spec(config: Any, role: str) -> ModelSpec:
    """The model of ``role`` in ``config`` (see the module docstring for the rules)."""
    vlm = ModelSpec(
        role="vlm",
        model=config.vlm,
        backend=config.backend,
        revision=config.revision,
        dtype=config.dtype,
        device=config.device,
        base_url=tuple(config.base_url),
        api_key_env=config.api_key_env,
    )
    over: dict[str, Any] = dict((config.models or {}).get(role, {}))
    if role == "llm":
        if config.llm:
            over.setdefault("model", config.llm)
        if config.llm_backend:
            over.setdefault("backend", config.llm_backend)
        if config.llm_base_url:
            over.setdefault("base_url", list(config.llm_base_url))
            over.setdefault("backend", "openai")
    if role != "vlm" and not over:
        return ModelSpec(**{**vlm.__dict__, "role": role})
    unknown = sorted(set(over) - set(SPEC_FIELDS))
    if unknown:
        raise ValueError(f"models.{role}: unknown keys {', '.join(unknown)} (allowed: {', '.join(SPEC_FIELDS)})")
    base = vlm.__dict__ if role == "vlm" or "model" not in over else {
        **vlm.__dict__, "revision": None}  # another model does not inherit the VLM's revision
    merged = {**base, **over, "role": role}
    if isinstance(merged.get("base_url"), (list, tuple)):
        merged["base_url"] = tuple(merged["base_url"])
    elif isinstance(merged.get("base_url"), str):
        merged["base_url"] = (merged["base_url"],)
    return ModelSpec(**merged)


@dataclass
class ModelPool:
    """One backend per spec key; built lazily, loaded once, closed once."""

    config: Any
    _backends: dict[tuple[Any, ...], Backend] = field(default_factory=dict)
    _specs: dict[tuple[Any, ...], ModelSpec] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loads: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def get(self, spec: ModelSpec) -> Backend:
        with self._lock:
            b = self._backends.get(spec.key)
            if b is None:
                b = self._backends[spec.key] = self._make(spec)
                b.on_degenerate = getattr(self.config, "on_degenerate", None)  # read by stages/replies.py
                self._specs[spec.key] = spec
                _count_loads(b, self.loads, spec.key)
            return b

    def put(self, spec: ModelSpec, backend: Backend) -> Backend:
        """Use an existing backend for ``spec`` (tests, embedding pixscribe in a program)."""
        with self._lock:
            self._backends.setdefault(spec.key, backend)
            self._specs.setdefault(spec.key, spec)
            return self._backends[spec.key]

    def _make(self, spec: ModelSpec) -> Backend:
        from ..backends import make_backend

        cfg = self.config.model_copy(update={
            "vlm": spec.model, "backend": spec.backend, "revision": spec.revision, "dtype": spec.dtype,
            "device": spec.device, "base_url": list(spec.base_url), "api_key_env": spec.api_key_env,
        })
        return make_backend(cfg)

    def describe(self) -> list[dict[str, Any]]:
        return [{"role": self._specs[k].role, **b.describe()} for k, b in self._backends.items()]

    def usage(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, b in self._backends.items():
            su = b.usage.summary()
            if su.get("requests"):
                out[f"{self._specs[k].role}:{b.model}"] = su
        return out

    def close(self) -> None:
        with self._lock:
            backends = list(self._backends.values())
        for b in backends:
            b.close()


def _count_loads(backend: Backend, loads: dict[tuple[Any, ...], int], key: tuple[Any, ...]) -> None:
    """Wrap the backend's loader so the pool knows how many times weights were loaded."""
    inner = getattr(backend, "_load", None)
    if inner is None:
        return
    loads.setdefault(key, 0)

    def counted(*a: Any, **kw: Any) -> Any:
        loads[key] += 1
        return inner(*a, **kw)

    backend._load = counted  # type: ignore[attr-defined]
