"""Typed stage options, declared once.

A stage's options are a dataclass deriving from :class:`StageOptions`: one field per option,
with its type, its default and a description (:func:`option`)::

    @dataclass(frozen=True)
    class DescribeOptions(StageOptions):
        prompt: str = option("Describe the image.", "the request sent with each image")
        max_new_tokens: int = option(256, "most tokens generated per reply")
        column: str | None = option(None, "take the text from this input column instead")

Everything else reads that declaration: ``ctx.options(stage, DescribeOptions)`` (the defaults,
then the common flags for the primary stage, then ``stages:`` in YAML / ``-S STAGE.KEY=VALUE``,
each checked against its type), a method's declared flags (``--x`` sets ``STAGE.KEY``), the
stage's fingerprint (its options; a field declared ``fingerprint="unless_default"`` is left out
at its default, so a new option that changes nothing by default changes no fingerprint) and the
options table of the docs (``pixscribe methods --markdown``).

Values are kept as given (YAML's ``0`` stays an int where the option is a float): a fingerprint
hashes them as they are. A value of the wrong type stops the run before it starts, naming
``STAGE.KEY``, the value and the type expected (:func:`check_value`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MethodError
from .template import MISSING as TEMPLATE_MISSING

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

# how a field is fingerprinted: always; left out while at its declared default; never
# (memory and batching settings that do not change outputs)
FINGERPRINT_RULES = ("always", "unless_default", "never")
# the common generation flags (--prompt, --prompt-file, --max-new-tokens, --temperature,
# --top-p): each sets the option of that name of the method's primary stage
COMMON_FLAGS = ("prompt", "prompt_file", "max_new_tokens", "temperature", "top_p")

# a type, what a message calls it, and what it accepts
_KINDS: dict[Any, tuple[str, tuple[type, ...]]] = {
    bool: ("true or false", (bool,)), int: ("a whole number", (int,)), float: ("a number", (int, float)),
    str: ("text", (str,)), list: ("a list", (list, tuple)), dict: ("a mapping", (dict,)),
}


def option(default: Any, help: str, *, choices: tuple[Any, ...] | None = None,
           fingerprint: str = "always") -> Any:
    """A declared option: its default, a description (one line, lower case, no final stop),
    the values it takes where they are a closed set (shown in the docs; the stage checks
    them), and how it enters the fingerprint (:data:`FINGERPRINT_RULES`)."""
    if fingerprint not in FINGERPRINT_RULES:
        raise ValueError(f"fingerprint={fingerprint!r}: one of {', '.join(FINGERPRINT_RULES)}")
    meta = {"help": help, "choices": tuple(choices) if choices else None, "fingerprint": fingerprint}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as everything that reads declarations sees it."""

    name: str
    default: Any
    help: str = ""
    kinds: tuple[type, ...] = ()  # accepted kinds (bool, int, float, str, list, dict); () = any value
    nullable: bool = False  # None is a value it takes
    choices: tuple[Any, ...] | None = None
    fingerprint: str = "always"

    @property
    def type_text(self) -> str:
        """The type in words, for messages and docs: ``text``, ``a number or a mapping``."""
        if not self.kinds:
            return "any"
        words = " or ".join(_KINDS[k][0] for k in self.kinds)
        return f"{words} or null" if self.nullable else words

    def check(self, stage: str, value: Any) -> None:
        """Refuse a value that is not of this option's type (see :func:`check_value`)."""
        if not self.kinds or (value is None and self.nullable) or any(_fits(value, k) for k in self.kinds):
            return
        hint = "; values are read as YAML: quote text, as in -S '" + f'{stage}.{self.name}="..."' + "'" \
            if str in self.kinds else ""
        expected = " or ".join(_KINDS[k][0] for k in self.kinds)
        raise MethodError(f"option {stage}.{self.name} (-S or stages: in --config): {_shown(value)} is not "
                          f"{expected}{hint}")


class OptionValues(dict):
    """A stage's resolved options (a plain dict to read), with the declaration they were read
    by (``declared``), so the stage's fingerprint can apply its rules (:func:`fingerprinted`)."""

    def __init__(self, values: dict[str, Any], declared: dict[str, OptionInfo]):
        super().__init__(values)
        self.declared = declared


class StageOptions:
    """Base of a stage's option declaration (a dataclass of :func:`option` fields)."""

    @classmethod
    def declared(cls) -> dict[str, OptionInfo]:
        """The declared options, in declaration order."""
        return _declared(cls)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: copy.deepcopy(info.default) for name, info in cls.declared().items()}


@lru_cache(maxsize=None)
def _declared(cls: type) -> dict[str, OptionInfo]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__}: a stage option declaration is a dataclass (decorate it with @dataclass)")
    hints = typing.get_type_hints(cls)
    out: dict[str, OptionInfo] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: every option has a default")
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with option(default, help)")
        kinds, nullable = kinds_of(hints[f.name])
        out[f.name] = OptionInfo(f.name, default, f.metadata["help"], kinds, nullable, f.metadata.get("choices"),
                                 f.metadata.get("fingerprint", "always"))
    return out


def kinds_of(annotation: Any) -> tuple[tuple[type, ...], bool]:
    """``str | None`` -> ``((str,), True)``; ``list[str] | str`` -> ``((list, str), False)``;
    ``Any`` -> ``((), True)`` (any value)."""
    if annotation is Any:
        return (), True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds: list[type] = []
        nullable = False
        for arg in typing.get_args(annotation):
            k, n = kinds_of(arg)
            if not k and n and arg is not type(None):
                return (), True
            nullable = nullable or n
            kinds += [x for x in k if x not in kinds]
        return tuple(kinds), nullable
    if annotation is type(None):
        return (), True
    base = origin or annotation
    if base is tuple:
        base = list
    if base not in _KINDS:
        raise TypeError(f"option type {annotation!r}: use bool, int, float, str, list, dict, a union of them, or Any")
    return (base,), False


def adhoc(defaults: dict[str, Any], types_: dict[str, Any] | None = None) -> dict[str, OptionInfo]:
    """Options declared by their defaults alone (``ctx.options(stage, prompt="...", ...)``):
    the type is the default's, or the one in ``types_`` (a type or a tuple of types) where the
    default is None or takes several types; a default of None with no type takes any value."""
    out: dict[str, OptionInfo] = {}
    for name, default in defaults.items():
        declared = (types_ or {}).get(name)
        if declared is not None:
            kinds = tuple(declared) if isinstance(declared, tuple) else (declared,)
        else:
            k = _kind_of(default)
            kinds = (k,) if k is not None else ()
        out[name] = OptionInfo(name, default, "", kinds, default is None)
    return out


def resolve(stage: str, declared: dict[str, OptionInfo], config: "RunConfig", *, primary: bool = False,
            overrides: dict[str, Any] | None = None) -> OptionValues:
    """A stage's options: the declared defaults (``overrides`` replace some, for this build) <
    the common flags (primary stage only) < ``stages.<stage>`` from the config, each value
    given there checked against its type. ``prompt_file`` is read into ``prompt``."""
    defaults = {n: copy.deepcopy(i.default) for n, i in declared.items()}
    unknown = sorted(set(overrides or {}) - set(declared))
    if unknown:
        raise TypeError(f"stage {stage!r}: defaults given for undeclared option(s) {', '.join(unknown)}")
    defaults.update(overrides or {})
    # a stage with a prompt also takes prompt_file, and template_missing (a prompt template's
    # rule for an empty column: empty or error; api/template.py)
    allowed = set(defaults) | ({"prompt_file", "template_missing"} if "prompt" in defaults else set())
    opts = dict(defaults)
    if primary:
        for k in COMMON_FLAGS:
            v = getattr(config, k)
            if v is not None and (k in defaults or (k == "prompt_file" and "prompt" in defaults)):
                opts[k] = v
    given = dict((config.stages or {}).get(stage, {}))
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise MethodError(
            f"stages.{stage}: unknown option(s) {', '.join(unknown)}; stage {stage!r} has "
            f"{', '.join(sorted(allowed)) or 'no options'}"
        )
    for k, v in given.items():
        info = declared.get(k) or OptionInfo(k, "", kinds=(str,))
        if k in (overrides or {}) and info.default is not None and overrides[k] is None:
            info = dataclasses.replace(info, nullable=True)  # a default of None for this build takes None
        info.check(stage, v)
    if given.get("template_missing", "empty") not in TEMPLATE_MISSING:
        raise MethodError(f"stages.{stage}.template_missing: {given['template_missing']!r} (allowed: "
                          f"{', '.join(TEMPLATE_MISSING)})")
    if "prompt" in given and "prompt_file" not in given:
        opts.pop("prompt_file", None)
    opts.update(given)
    pf = opts.pop("prompt_file", None)
    if pf:
        opts["prompt"] = read_prompt_file(pf, stage)
    return OptionValues(opts, declared)


def fingerprinted(opts: dict[str, Any], declared: dict[str, OptionInfo] | None = None) -> dict[str, Any]:
    """The options that enter a fingerprint: those set (not None), less the ones declared
    ``never`` and the ``unless_default`` ones at their default (``declared``: the declaration,
    by default the one ``opts`` was read by)."""
    declared = declared if declared is not None else getattr(opts, "declared", None)
    out = {}
    for k, v in opts.items():
        info = (declared or {}).get(k)
        if v is None or (info is not None and (info.fingerprint == "never" or (
                info.fingerprint == "unless_default" and v == info.default))):
            continue
        out[k] = v
    return out


def check_option(stage: str, key: str, value: Any, default: Any, declared: Any = None) -> None:
    """Refuse a stage option whose value is not of its type: ``declared`` (a type or a tuple of
    them), else the type of ``default``; None is allowed where the default is None; an option
    of neither (a default of None, no declaration) takes any value."""
    adhoc({key: default}, {key: declared} if declared is not None else None)[key].check(stage, value)


def read_prompt_file(path: str | Path, stage: str = "") -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        where = f" (stage {stage})" if stage else ""
        raise MethodError(f"prompt_file {p}{where}: no such file")
    return p.read_text(encoding="utf-8").strip()


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
    if isinstance(value, (dt.date, dt.time)):
        return f"{value.isoformat()} (a date or time)"
    kind = next((w for t, (w, _) in _KINDS.items() if _kind_of(value) is t), type(value).__name__)
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{text} ({kind})"


__all__ = ["COMMON_FLAGS", "FINGERPRINT_RULES", "OptionInfo", "OptionValues", "StageOptions", "adhoc", "check_option",
           "fingerprinted", "kinds_of", "option", "read_prompt_file", "resolve"]
