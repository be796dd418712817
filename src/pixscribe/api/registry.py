"""The method registry: every method with its declaration.

A method is a factory ``(ctx: MethodContext) -> Method`` registered with what the engine and
the command line read about it::

    @register_method("mine", summary="describe, then shorten",
                     options={"describe": DescribeOptions, "shorten": ShortenOptions},
                     flags=[Flag("short_prompt", stage="shorten", option="prompt")],
                     roles=[ModelRole("vlm", "describes"), ModelRole("llm", "shortens")])
    def mine(ctx: MethodContext) -> Method: ...

- ``summary``: one line for ``pixscribe caption --help`` and ``pixscribe methods``;
- ``options``: each stage's option declaration (:class:`~pixscribe.api.options.StageOptions`),
  read by ``-S``, the docs table and the method's flags;
- ``flags``: command-line flags, each setting one stage option (``--short-prompt X`` is
  ``-S shorten.prompt=X``) or naming a role's model (``Flag(..., role="consistency")``); a
  flag picks its method when ``--method`` is not given and is refused with another method;
- ``roles``: the model roles its stages ask ``ctx.model(role)`` for;
- ``implied_by``: run-configuration fields that pick this method when ``--method`` is not
  given (``--experts`` and ``--profile`` pick ``experts``);
- ``commands``: modules whose ``register(app)`` adds the method's own commands to ``pixscribe``
  (its trainer, its evaluator), imported only when the command line is built.

Built-in methods are the modules and packages of ``pixscribe.methods`` (found by name, see
:data:`BUILTIN_PACKAGES`; nothing here imports them statically). Plugins expose a factory,
decorated or not, in the ``pixscribe.methods`` entry-point group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import MethodError
from .options import StageOptions

if TYPE_CHECKING:  # pragma: no cover
    from .context import MethodContext
    from .stage import Method

MethodFactory = Callable[["MethodContext"], "Method"]
ENTRY_POINT_GROUP = "pixscribe.methods"
# packages whose every module (or subpackage) not starting with "_" is a built-in method that
# registers itself when imported
BUILTIN_PACKAGES = ("pixscribe.methods",)


@dataclass(frozen=True)
class Flag:
    """A method's command-line flag: ``--NAME`` sets ``STAGE.OPTION`` (its type and, unless
    ``help`` is given, its description are the option's), or, with ``role``, names that role's
    model (``models.ROLE.model``; described by the role). A bool option is ``--NAME/--no-NAME``,
    or with ``switch`` only ``--NAME`` (off means not given)."""

    name: str  # the Python name: max_objects -> --max-objects
    stage: str | None = None
    option: str | None = None
    role: str | None = None
    help: str = ""
    switch: bool = False

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def target(self) -> str:
        """What it sets: ``STAGE.OPTION`` or ``models.ROLE.model``."""
        return f"{self.stage}.{self.option}" if self.role is None else f"models.{self.role}.model"


@dataclass(frozen=True)
class ModelRole:
    """A model role a method's stages ask for (``ctx.model(name)``)."""

    name: str
    help: str


@dataclass
class MethodSpec:
    """A method's declaration (see the module docstring)."""

    name: str
    factory: MethodFactory
    summary: str = ""
    options: dict[str, type[StageOptions]] = field(default_factory=dict)
    flags: tuple[Flag, ...] = ()
    roles: tuple[ModelRole, ...] = ()
    implied_by: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.flags, self.roles = tuple(self.flags), tuple(self.roles)
        for f in self.flags:
            self._check_flag(f)

    def _check_flag(self, f: Flag) -> None:
        where = f"method {self.name!r}, flag {f.cli}"
        if (f.role is None) == (f.stage is None):
            raise TypeError(f"{where}: give either stage and option, or role")
        if f.role is not None and f.role not in {r.name for r in self.roles}:
            raise TypeError(f"{where}: role {f.role!r} is not among the declared roles")
        if f.stage is not None and f.option not in self.options.get(f.stage, StageOptions).declared():
            raise TypeError(f"{where}: {f.stage}.{f.option} is not a declared option")

    def option_info(self, f: Flag) -> Any:
        """The declaration of the option a flag sets (None for a role's flag)."""
        return None if f.stage is None else self.options[f.stage].declared()[f.option]

    def flag_help(self, f: Flag) -> str:
        """What a flag does: its own help, else its option's or its role's description."""
        if f.help:
            return f.help
        if f.role is not None:
            return next(r.help for r in self.roles if r.name == f.role)
        return self.option_info(f).help

    def __call__(self, ctx: "MethodContext") -> "Method":
        return self.factory(ctx)


_METHODS: dict[str, MethodSpec] = {}
_PLUGINS: dict[str, Any] = {}  # name -> entry point, loaded when first needed


def register_method(name: str, *, summary: str | None = None, options: dict[str, type[StageOptions]] | None = None,
                    flags: Iterable[Flag] = (), roles: Iterable[ModelRole] = (), implied_by: Iterable[str] = (),
                    commands: Iterable[str] = ()) -> Callable[[MethodFactory], MethodFactory]:
    """Register a method factory with its declaration (module docstring). The factory is
    returned unchanged, with the declaration as its ``method_spec`` attribute (so a plugin's
    entry point can name it)."""

    def deco(fn: MethodFactory) -> MethodFactory:
        spec = MethodSpec(name, fn, summary if summary is not None else _first_line(fn.__doc__),
                          dict(options or {}), tuple(flags), tuple(roles), tuple(implied_by), tuple(commands))
        _METHODS[name] = spec
        fn.method_spec = spec  # type: ignore[attr-defined]
        return fn

    return deco


def available_methods() -> list[str]:
    """Every method's name, built-in and plugins (plugins are not loaded for this)."""
    _discover()
    return sorted(set(_METHODS) | set(_PLUGINS))


def method_spec(name: str) -> MethodSpec:
    """The declaration of ``name`` (a plugin is loaded here); an unknown name is a MethodError
    naming the methods there are."""
    available = available_methods()
    if name not in _METHODS and name in _PLUGINS:
        _METHODS[name] = _load_plugin(name, _PLUGINS[name])
    if name not in _METHODS:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(available)}")
    return _METHODS[name]


def method_specs() -> list[MethodSpec]:
    """Every method's declaration, by name (plugins loaded; one that cannot load is listed with
    no flags, and fails when it is used)."""
    return [method_spec(n) for n in available_methods()]


def method_factory(name: str) -> MethodFactory:
    return method_spec(name).factory


def _discover() -> None:
    import importlib
    import pkgutil
    from importlib.metadata import entry_points

    for pkg_name in BUILTIN_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _METHODS:
            _PLUGINS.setdefault(ep.name, ep)


def _load_plugin(name: str, ep: Any) -> MethodSpec:
    """A plugin's declaration: the one its factory carries (``register_method``), or a bare
    factory's (its docstring's first line as summary, no flags). One that cannot be loaded
    fails when it is built, naming the plugin and the reason."""
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the other methods
        return MethodSpec(name, _broken(f"method plugin {name!r} ({ep.value}) cannot be loaded: {exc}", exc),
                          f"(cannot be loaded: {exc})")
    spec = getattr(obj, "method_spec", None)
    if isinstance(spec, MethodSpec):
        return spec if spec.name == name else dataclasses.replace(spec, name=name)
    return MethodSpec(name, obj, _first_line(getattr(obj, "__doc__", None)))


def _broken(reason: str, cause: Exception) -> MethodFactory:
    """The factory of a plugin that cannot be loaded: it fails when the method is built."""

    def broken(ctx: "MethodContext") -> "Method":
        raise MethodError(reason) from cause

    return broken


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ").strip()


__all__ = ["BUILTIN_PACKAGES", "ENTRY_POINT_GROUP", "Flag", "MethodFactory", "MethodSpec", "ModelRole",
           "available_methods", "method_factory", "method_spec", "method_specs", "register_method"]
