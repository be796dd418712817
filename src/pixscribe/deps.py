"""Optional dependencies: one error type, with the pip hint, raised where the dependency is used.

    torch = require("torch", extra="transformers", what="the transformers backend")

A missing optional package is a :class:`MissingDependency` everywhere (experts, backends,
readers, metrics); the CLI shows it as one line and exits 2.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import MissingDependency


def pip_hint(extra: str | None, package: str | None = None) -> str:
    if extra and package:
        return f"pip install 'pixscribe[{extra}]' (or pip install {package})"
    if extra:
        return f"pip install 'pixscribe[{extra}]'"
    return f"pip install {package}"


def require(module: str, extra: str | None = None, package: str | None = None, what: str | None = None) -> Any:
    """Import ``module`` or raise :class:`MissingDependency` naming what needs it and the pip hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        need = f" for {what}" if what else ""
        raise MissingDependency(
            f"{pkg!r} is needed{need} but is not installed ({exc}): {pip_hint(extra, pkg)}"
        ) from exc


__all__ = ["MissingDependency", "pip_hint", "require"]
