"""What a method factory gets: the configuration, the shared model pool, and each stage's
options (the method's defaults, then the command line, then ``stages:`` in the YAML config).

    @register_method("mine")
    def mine(ctx: MethodContext) -> Method:
        opts = ctx.options("describe", primary=True, prompt="Describe.", max_new_tokens=128)
        return Method("mine", [GenerateStage("describe", ctx.model("vlm"), opts, provides="text")], ...)

``primary=True`` marks the stage that the common flags (``--prompt``, ``--prompt-file``,
``--max-new-tokens``, ``--temperature``, ``--top-p``) speak to. Any stage's option can be
set with ``stages: {NAME: {KEY: VALUE}}`` in YAML or ``--stage-option NAME.KEY=VALUE``; a key
the stage does not have is an error naming the keys it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backends.base import Backend
from .models import ModelPool, ModelSpec, resolve_spec
from .stage import Method, MethodError, method_factory

# the common generation flags and the stage option each one sets
COMMON_FLAGS = ("prompt", "prompt_file", "max_new_tokens", "temperature", "top_p")


class MethodContext:
    def __init__(self, config: Any, pool: ModelPool | None = None):
        self.config = config
        self.pool = pool or ModelPool(config)
        self._used_options: dict[str, dict[str, Any]] = {}
        self._roles: dict[str, ModelSpec] = {}

    # ---- models ---------------------------------------------------------------------
    def spec(self, role: str = "vlm") -> ModelSpec:
        if role not in self._roles:
            self._roles[role] = resolve_spec(self.config, role)
        return self._roles[role]

    def model(self, role: str = "vlm") -> Backend:
        return self.pool.get(self.spec(role))

    # ---- options ----------------------------------------------------------------------
    def options(self, stage: str, *, primary: bool = False, **defaults: Any) -> dict[str, Any]:
        """The stage's options: ``defaults`` < the common flags (primary stage only) <
        ``stages.<stage>`` from the config. ``prompt_file`` is read into ``prompt``."""
        allowed = set(defaults) | ({"prompt_file"} if "prompt" in defaults else set())
        opts = dict(defaults)
        if primary:
            for k in COMMON_FLAGS:
                v = getattr(self.config, k, None)
                if v is not None and (k in defaults or (k == "prompt_file" and "prompt" in defaults)):
                    opts[k] = v
        given = dict((self.config.stages or {}).get(stage, {}))
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise MethodError(
                f"stages.{stage}: unknown option(s) {', '.join(unknown)}; stage {stage!r} has "
                f"{', '.join(sorted(allowed)) or 'no options'}"
            )
        if "prompt" in given and "prompt_file" not in given:
            opts.pop("prompt_file", None)
        opts.update(given)
        pf = opts.pop("prompt_file", None)
        if pf:
            opts["prompt"] = read_prompt_file(pf, stage)
        self._used_options[stage] = opts
        return opts

    def check_stage_names(self, method: Method) -> None:
        """``stages:`` may only name stages the method has."""
        names = [s.name for s in method.stages]
        extra = sorted(set(self.config.stages or {}) - set(names))
        if extra:
            raise MethodError(
                f"stages: method {method.name!r} has no stage {', '.join(map(repr, extra))}; its stages are "
                f"{', '.join(names)}"
            )

    # ---- building -----------------------------------------------------------------------
    def build(self, name: str) -> Method:
        method = method_factory(name)(self)
        self.check_stage_names(method)
        method.pool = self.pool
        if self.pool.close not in method.on_close:
            method.on_close.append(self.pool.close)
        return method


def read_prompt_file(path: str | Path, stage: str = "") -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        where = f" (stage {stage})" if stage else ""
        raise MethodError(f"prompt_file {p}{where}: no such file")
    return p.read_text(encoding="utf-8").strip()
