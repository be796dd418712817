"""The command group every ``pixscribe`` command runs in, and the one place where user errors
become one line: an error of the family :class:`pixscribe.errors.PixscribeError` (a bad option,
a missing optional package, a refused resume, an unusable input file...) or an ``OSError`` is
printed as ``error: MESSAGE`` on stderr and the command exits 2. Anything else is a bug and
keeps its traceback.

An app that mounts pixscribe's commands (``cli.app``; a test's own app, a module's
``python -m`` entry point) is made with ``typer.Typer(cls=Commands)``.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from .errors import PixscribeError

err = Console(stderr=True, emoji=False)  # a model named "m" must not print as an emoji (":m:")


class Commands(TyperGroup):
    """A command group whose commands' user errors are one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PixscribeError, OSError) as exc:
            fail(str(exc))


def fail(msg: str, code: int = 2) -> NoReturn:
    """``error: MSG`` on stderr, then exit ``code``."""
    from rich.markup import escape

    # escaped: a pip hint like pip install 'pixscribe[hf]' is not rich markup
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


__all__ = ["Commands", "err", "fail"]
