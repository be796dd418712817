"""The engine's model pool: one loaded backend per (backend, model, revision, dtype, device),
whatever number of stages or roles use it (the interface, :class:`ModelSpec` and how roles
resolve are in :mod:`pixscribe.api.models`).

:class:`ModelPool` builds each backend from its spec (:func:`pixscribe.backends.make_backend`)
and counts weight loads, so a test (or a user) can see that two stages shared one model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..api.models import ModelSpec
from ..backends.base import Backend
from ..config import RunConfig


@dataclass
class ModelPool:
    """One backend per spec key; built lazily, loaded once, closed once."""

    config: RunConfig
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

        return make_backend(spec, self.config)

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
    """Wrap a local backend's weight loading (:meth:`Backend._load`, where its class has one)
    so the pool knows how many times weights were loaded."""
    if type(backend)._load is Backend._load:
        return
    inner = backend._load
    loads.setdefault(key, 0)

    def counted() -> None:
        loads[key] += 1
        inner()

    backend._load = counted  # type: ignore[method-assign]
