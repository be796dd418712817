"""Models by role: the spec of a role's model, and the interface of the pool that shares them.

A method asks for a model by *role* (``"vlm"``, ``"llm"``, ``"consistency"``...). Roles
resolve to a :class:`ModelSpec` from the run configuration (:func:`resolve_spec`):

- ``vlm``: ``--backend``, ``--vlm``, ``--revision``, ``--dtype``, ``--device``, ``--base-url``;
- ``llm``: the VLM itself unless ``--llm`` (and maybe ``--llm-backend`` / ``--llm-base-url``)
  names another model, so by default a text stage uses the VLM's weights (loaded once);
- any role can be set in YAML: ``models: {llm: {model: X, backend: openai, base_url: [U]}}``
  (a method's declared role flags, e.g. ``--consistency-vlm``, set ``models.ROLE.model``).

A :class:`ModelPool` hands out one backend per :attr:`ModelSpec.key`, so two stages (or two
roles) naming the same model share one loaded instance. The engine's pool is
:class:`pixscribe.engine.models.ModelPool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import Backend
    from ..config import RunConfig

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

    @property
    def local(self) -> bool:
        """A model loaded in this process (transformers, vLLM), not a server's."""
        return self.backend in LOCAL_BACKENDS

    def identity(self) -> dict[str, Any]:
        """What goes into a stage's fingerprint: what changes the numbers, not where the
        server lives (the same model behind another URL gives the same outputs)."""
        d: dict[str, Any] = {"backend": self.backend, "model": self.model}
        if self.revision:
            d["revision"] = self.revision
        if self.local:
            d["dtype"] = self.dtype
            d["device"] = self.device
        return d


def resolve_spec(config: "RunConfig", role: str) -> ModelSpec:
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
        raise ConfigError(f"models.{role}: unknown keys {', '.join(unknown)} (allowed: {', '.join(SPEC_FIELDS)})")
    base = vlm.__dict__ if role == "vlm" or "model" not in over else {
        **vlm.__dict__, "revision": None}  # another model does not inherit the VLM's revision
    merged = {**base, **over, "role": role}
    if isinstance(merged.get("base_url"), (list, tuple)):
        merged["base_url"] = tuple(merged["base_url"])
    elif isinstance(merged.get("base_url"), str):
        merged["base_url"] = (merged["base_url"],)
    return ModelSpec(**merged)


class ModelPool(Protocol):
    """Shared models: one backend per spec key, built on first use, loaded once, closed once."""

    def get(self, spec: ModelSpec) -> "Backend":
        """The backend of ``spec`` (built on first use; the same object for the same key)."""
        ...

    def put(self, spec: ModelSpec, backend: "Backend") -> "Backend":
        """Use an existing backend for ``spec`` (tests, embedding pixscribe in a program)."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        ...

    def usage(self) -> dict[str, Any]:
        ...

    def close(self) -> None:
        ...


__all__ = ["LOCAL_BACKENDS", "ModelPool", "ModelSpec", "SPEC_FIELDS", "resolve_spec"]
