"""How the engine builds a method: the context a factory gets (the interface methods see is
:class:`pixscribe.api.MethodContext`), with the engine's model pool, then the checks a built
method must pass before it runs.

    method = build_method("recap", config)            # a new pool
    method = BuildContext(config, pool).build("recap")
"""

from __future__ import annotations

from ..api.context import MethodContext
from ..api.registry import method_spec
from ..api.stage import Method
from ..config import RunConfig
from ..errors import MethodError
from .models import ModelPool


class BuildContext(MethodContext):
    """The context the engine builds methods in: its own pool unless one is given."""

    def __init__(self, config: RunConfig, pool: ModelPool | None = None):
        super().__init__(config, pool if pool is not None else ModelPool(config))

    def build(self, name: str) -> Method:
        """The method ``name``, built and checked: ``stages:`` may only name its stages."""
        method = method_spec(name).factory(self)
        self.check_stage_names(method)
        method.pool = self.pool
        if self.pool.close not in method.on_close:
            method.on_close.append(self.pool.close)
        return method

    def check_stage_names(self, method: Method) -> None:
        """``stages:`` may only name stages the method has."""
        names = [s.name for s in method.stages]
        extra = sorted(set(self.config.stages or {}) - set(names))
        if extra:
            raise MethodError(
                f"stages: method {method.name!r} has no stage {', '.join(map(repr, extra))}; its stages are "
                f"{', '.join(names)}"
            )


def build_method(name: str, config: RunConfig, pool: ModelPool | None = None) -> Method:
    """The method ``name`` built for ``config`` (models from ``pool``, a new one if None)."""
    return BuildContext(config, pool).build(name)


__all__ = ["BuildContext", "build_method"]
