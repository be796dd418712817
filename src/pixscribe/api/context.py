"""What a method factory gets: the run configuration, the shared models by role, and each
stage's options.

    @register_method("mine", options={"describe": DescribeOptions})
    def mine(ctx: MethodContext) -> Method:
        opts = ctx.options("describe", DescribeOptions, primary=True)
        stage = GenerateStage("describe", ctx.model("vlm"), opts, provides="text",
                              identity=ctx.spec("vlm").identity())
        return Method("mine", [stage], ["text"], "text")

``primary=True`` marks the stage that the common flags (``--prompt``, ``--prompt-file``,
``--max-new-tokens``, ``--temperature``, ``--top-p``) speak to. Any stage's option can be set
with ``stages: {NAME: {KEY: VALUE}}`` in YAML or ``--stage-option NAME.KEY=VALUE``; a key the
stage does not declare is an error naming the keys it has, and a value of the wrong type an
error naming the type (:mod:`pixscribe.api.options`).

The engine's context (``pixscribe.engine.context.BuildContext``) adds the pool it builds and
the build itself; a method sees only this interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import ModelPool, ModelSpec, resolve_spec
from .options import StageOptions, adhoc, resolve

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import Backend
    from ..config import RunConfig


class MethodContext:
    """The configuration, the models by role (one shared pool) and the stages' options."""

    def __init__(self, config: "RunConfig", pool: ModelPool):
        self.config = config
        self.pool = pool
        self._roles: dict[str, ModelSpec] = {}
        self.used_options: dict[str, dict[str, Any]] = {}

    # ---- models ---------------------------------------------------------------------
    def spec(self, role: str = "vlm") -> ModelSpec:
        """The model of ``role`` (see :func:`pixscribe.api.models.resolve_spec`)."""
        if role not in self._roles:
            self._roles[role] = resolve_spec(self.config, role)
        return self._roles[role]

    def model(self, role: str = "vlm") -> "Backend":
        """The shared backend of ``role`` (one per model, whatever number of stages use it)."""
        return self.pool.get(self.spec(role))

    # ---- options ----------------------------------------------------------------------
    def options(self, stage: str, declared: type[StageOptions] | None = None, *, primary: bool = False,
                types: dict[str, Any] | None = None, **defaults: Any) -> dict[str, Any]:
        """The options of ``stage`` as declared by ``declared`` (``defaults`` then replace some
        declared defaults for this build), or, undeclared, by ``defaults`` alone (each one's
        type is its default's, or the one in ``types``): the defaults < the common flags
        (primary stage only) < ``stages.<stage>`` of the config, checked against their types."""
        if declared is not None:
            opts = resolve(stage, declared.declared(), self.config, primary=primary, overrides=defaults)
        else:
            opts = resolve(stage, adhoc(defaults, types), self.config, primary=primary)
        self.used_options[stage] = opts
        return opts


__all__ = ["MethodContext"]
