"""What ``pixscribe caption`` and ``pixscribe methods`` read from the method registry: each
method's flags (typer parameters), how given flags become stage options and model roles, the
methods list of ``--help`` and the options tables of docs/options.md. ``cli.py`` names no method.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from .api.registry import Flag, MethodSpec, method_specs
from .config import RunConfig
from .errors import ConfigError

DEFAULT_METHOD = RunConfig.model_fields["method"].default


@dataclass(frozen=True)
class DeclaredFlag:
    """A flag name and every method declaring it (usually one)."""

    name: str
    uses: tuple[tuple[MethodSpec, Flag], ...]

    @property
    def methods(self) -> list[str]:
        return [m.name for m, _ in self.uses]

    @property
    def switch(self) -> bool:
        return self.uses[0][1].switch

    def value_type(self) -> type:
        m, f = self.uses[0]
        info = m.option_info(f)
        kinds = info.kinds if info is not None else (str,)
        return next((k for k in (bool, int, float) if k in kinds), str)

    def parameter(self) -> inspect.Parameter:
        import typer

        t = self.value_type()
        cli = self.uses[0][1].cli
        helps = "; ".join(f"--method {m.name}: {m.flag_help(f)} (= {_target(f)})" for m, f in self.uses)
        if t is bool and self.switch:
            default, annotation = typer.Option(False, cli, help=helps), bool
        elif t is bool:
            default, annotation = typer.Option(None, f"{cli}/--no-{cli[2:]}", help=helps), Optional[bool]
        else:
            default, annotation = typer.Option(None, cli, help=helps), Optional[t]  # type: ignore[valid-type]
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _target(f: Flag) -> str:
    return f"-S {f.target}=..." if f.role is None else f"{f.target}: ..."


def declared_flags(reserved: set[str]) -> dict[str, DeclaredFlag]:
    """Every method's flags by name; one whose name is a flag of the command itself is left
    out (with a warning: a plugin cannot take ``--output``)."""
    uses: dict[str, list[tuple[MethodSpec, Flag]]] = {}
    for spec in method_specs():
        for f in spec.flags:
            uses.setdefault(f.name, []).append((spec, f))
    out = {}
    for name, u in uses.items():
        if name in reserved:
            _warn(f"method {u[0][0].name!r} declares the flag {u[0][1].cli}, which pixscribe caption has already; "
                  "it is left out")
            continue
        flag = DeclaredFlag(name, tuple(u))
        if len({(f.switch, DeclaredFlag(name, ((m, f),)).value_type()) for m, f in u}) > 1:
            _warn(f"methods {', '.join(flag.methods)} declare {u[0][1].cli} with different types; it is left out")
            continue
        out[name] = flag
    return out


def given_flags(flags: dict[str, DeclaredFlag], params: dict[str, Any]) -> dict[str, Any]:
    """The method flags given on the command line (popped from ``params``): a switch that is off
    was not given."""
    out = {}
    for name, flag in flags.items():
        v = params.pop(name, None)
        if v is not None and not (flag.switch and v is False):
            out[name] = v
    return out


def apply_flags(cfg: RunConfig, flags: dict[str, DeclaredFlag], given: dict[str, Any],
                method_free: bool) -> dict[str, dict[str, Any]]:
    """Method flags -> their stage options (returned) and model roles (set on ``cfg``); the flags
    pick the method if none was given, and are refused with another method."""
    chosen = [flags[n] for n in given]
    common = set.intersection(*(set(f.methods) for f in chosen)) if chosen else set()
    if chosen and not common:
        names = sorted({m for f in chosen for m in f.methods})
        raise ConfigError(f"{', '.join(f.uses[0][1].cli for f in chosen)}: flags of different methods "
                          f"({', '.join(names)})")
    if chosen and method_free and cfg.method == DEFAULT_METHOD and cfg.method not in common:
        if len(common) > 1:
            raise ConfigError(f"{', '.join(f.uses[0][1].cli for f in chosen)}: flags of the methods "
                              f"{', '.join(sorted(common))}; name one with --method")
        cfg.method = next(iter(common))
    wrong = [f for f in chosen if cfg.method not in f.methods]
    if wrong:
        raise ConfigError(f"{', '.join(f.uses[0][1].cli for f in wrong)}: for --method {wrong[0].methods[0]}, "
                          f"not --method {cfg.method}")
    out: dict[str, dict[str, Any]] = {}
    for f in chosen:
        decl = next(d for m, d in f.uses if m.name == cfg.method)
        if decl.role is not None:
            cfg.models = {**cfg.models, decl.role: {**cfg.models.get(decl.role, {}), "model": given[f.name]}}
        else:
            out.setdefault(decl.stage, {})[decl.option] = given[f.name]
    return out


def implied_method(cfg: RunConfig, method_free: bool) -> None:
    """A method whose declared ``implied_by`` fields are set is the method when none was chosen
    (``--experts`` and ``--profile`` pick ``experts``)."""
    if not method_free or cfg.method != DEFAULT_METHOD:
        return
    for spec in method_specs():
        if any(getattr(cfg, name) for name in spec.implied_by):
            cfg.method = spec.name
            return


def methods_help() -> str:
    """The methods list of ``pixscribe caption --help`` (one line each)."""
    lines = ["Methods (--method):", "", "\b"]
    for spec in method_specs():
        default = " (default)" if spec.name == DEFAULT_METHOD else ""
        lines.append(f"  {spec.name:<11}{spec.summary}{default}")
    lines += ["", "Each method's flags, stage options and model roles: pixscribe methods (docs/options.md)."]
    return "\n".join(lines)


def _warn(msg: str) -> None:
    import sys

    print(f"warning: {msg}", file=sys.stderr)




# ---- docs/options.md ------------------------------------------------------------------------------
MARKDOWN_HEAD = """# Methods, flags and stage options

Generated by `pixscribe methods --markdown` from the methods' declarations (each stage's typed
options, each method's flags and model roles; `api/registry.py`); `tests/cli/test_method_declarations.py`
checks that this file is current. Any option is set with `-S STAGE.OPTION=VALUE` (read as YAML)
or `stages: {STAGE: {OPTION: VALUE}}` in `--config`; a method's flag is the same as its `-S`. The
primary stage also takes `--prompt`, `--prompt-file`, `--max-new-tokens`, `--temperature` and
`--top-p`. Every option is part of its stage's fingerprint unless the table says otherwise.
"""


def markdown() -> str:
    """docs/options.md: every method's summary, roles, flags and options tables."""
    parts = [MARKDOWN_HEAD]
    for spec in method_specs():
        parts.append(_method_markdown(spec))
    return "\n".join(parts)


def _method_markdown(spec: MethodSpec) -> str:
    default = " The default method." if spec.name == DEFAULT_METHOD else ""
    out = [f"## {spec.name}", "", f"{spec.summary}.{default}", ""]
    if spec.roles:
        out += ["Model roles: " + "; ".join(f"`{r.name}` ({r.help})" for r in spec.roles) + ".", ""]
    if spec.implied_by:
        out += ["Chosen without `--method` when " + " or ".join(f"`--{n}`" for n in spec.implied_by)
                + " is given.", ""]
    if spec.flags:
        out += ["| flag | sets | meaning |", "|---|---|---|"]
        out += [f"| `{f.cli}` | `{f.target}` | {_cell(spec.flag_help(f))} |" for f in spec.flags]
        out.append("")
    for stage, decl in spec.options.items():
        out += [f"### stage `{stage}`", "", _cell((decl.__doc__ or "").strip().replace("\n", " ")), "",
                "| option | type | default | meaning |", "|---|---|---|---|"]
        for name, info in decl.declared().items():
            note = f" One of: {', '.join(map(str, info.choices))}." if info.choices else ""
            note += {"never": " Not fingerprinted.", "unless_default": " Fingerprinted when not the default."}.get(
                info.fingerprint, "")
            out.append(f"| `{name}` | {info.type_text} | {_default(info.default)} | {_cell(info.help)}.{note} |")
        out.append("")
    return "\n".join(out)


def _default(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 48:
        text = f"{text[:40]}…\" ({len(value)} characters)" if isinstance(value, str) else text[:45] + "…"
    return f"`` {_cell(text)} ``" if "`" in text else f"`{_cell(text)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def method_lines() -> str:
    """``pixscribe methods``: each method, its summary, model roles and flags."""
    out = []
    for spec in method_specs():
        default = " (default)" if spec.name == DEFAULT_METHOD else ""
        out.append(f"{spec.name}{default}: {spec.summary}")
        for r in spec.roles:
            out.append(f"  model role {r.name}: {r.help}")
        for f in spec.flags:
            out.append(f"  {f.cli}: {spec.flag_help(f)} (= {_target(f)})")
        if spec.options:
            out.append(f"  stages with options: {', '.join(spec.options)} (pixscribe methods --markdown)")
    return "\n".join(out)


__all__ = ["DEFAULT_METHOD", "DeclaredFlag", "apply_flags", "declared_flags", "given_flags", "implied_method",
           "markdown", "method_lines", "methods_help"]
