"""A built-in method built for a configuration with a given backend answering its models
(tests and benchmarks run the real method's stages and options with a scripted model)."""

from __future__ import annotations

from ..api.stage import Method
from ..backends.base import Backend
from ..config import RunConfig
from ..engine.context import BuildContext


def method_with(config: RunConfig, backend: Backend, name: str | None = None,
                roles: tuple[str, ...] = ("vlm", "llm")) -> Method:
    """The method ``name`` (default: ``config.method``) built for ``config``, with ``backend``
    answering each of ``roles`` (the others come from the configuration, as in a run). The
    backend stays the caller's: closing the method does not close it (a test may run it again)."""
    ctx = BuildContext(config)
    for role in roles:
        ctx.pool.put(ctx.spec(role), backend)
    method = ctx.build(name or config.method)
    method.on_close.remove(ctx.pool.close)
    return method


__all__ = ["method_with"]
