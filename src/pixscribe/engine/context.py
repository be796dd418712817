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

Options are typed: a value given in ``stages:`` or with ``-S`` (read as YAML, so ``No`` is
false, ``2024-01-01`` a date and ``Describe: x`` a mapping) must have its option's type, the
type of its default, or the one declared with ``types=`` where the default is None or takes
several types (``types={"column": str}``). Anything else stops the run before it starts,
naming ``STAGE.KEY``, the value and the type expected (:func:`check_option`).
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
    def options(self, stage: str, *, primary: bool = False, types: dict[str, Any] | None = None,
                **defaults: Any) -> dict[str, Any]:
        """The stage's options: ``defaults`` < the common flags (primary stage only) <
        ``stages.<stage>`` from the config, each value given there checked against its type
        (``types`` declares it where a default does not tell). ``prompt_file`` is read into
        ``prompt``."""
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
        for k, v in given.items():
            check_option(stage, k, v, defaults.get(k, "" if k == "prompt_file" else None), (types or {}).get(k))
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


# a type, what a message calls it, and what it accepts
_KINDS: dict[Any, tuple[str, tuple[type, ...]]] = {
    bool: ("true or false", (bool,)), int: ("a whole number", (int,)), float: ("a number", (int, float)),
    str: ("text", (str,)), list: ("a list", (list, tuple)), dict: ("a mapping", (dict,)),
}


def _kind_of(default: Any) -> Any:
    for t in (bool, int, float, str, list, dict):
        if isinstance(default, t) or (t is list and isinstance(default, tuple)):
            return t
    return None


def _fits(value: Any, kind: Any) -> bool:
    ok = _KINDS[kind][1]
    return isinstance(value, ok) and not (isinstance(value, bool) and bool not in ok)


def _shown(value: Any) -> str:
    """A value as YAML read it, and what it is: ``{'Describe': 'x'} (a mapping)``."""
    import datetime as dt

    if isinstance(value, (dt.date, dt.time)):
        return f"{value.isoformat()} (a date or time)"
    kind = next((w for t, (w, _) in _KINDS.items() if _kind_of(value) is t), type(value).__name__)
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{text} ({kind})"


def check_option(stage: str, key: str, value: Any, default: Any, declared: Any = None) -> None:
    """Refuse a stage option whose value is not of its type: ``declared`` (a type or a tuple of
    them), else the type of ``default``; None is allowed where the default is None; an option
    of neither (a default of None, no declaration) takes any value."""
    kinds = declared if isinstance(declared, tuple) else ((declared,) if declared is not None else ())
    kinds = kinds or ((_kind_of(default),) if _kind_of(default) is not None else ())
    if not kinds or (value is None and default is None) or any(_fits(value, k) for k in kinds):
        return
    expected = " or ".join(_KINDS[k][0] for k in kinds)
    hint = "; values are read as YAML: quote text, as in -S '" + f'{stage}.{key}="..."' + "'" if str in kinds else ""
    raise MethodError(f"option {stage}.{key} (-S or stages: in --config): {_shown(value)} is not {expected}{hint}")


def read_prompt_file(path: str | Path, stage: str = "") -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        where = f" (stage {stage})" if stage else ""
        raise MethodError(f"prompt_file {p}{where}: no such file")
    return p.read_text(encoding="utf-8").strip()
