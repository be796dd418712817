"""One user-error family, shown in one place for every command (pixscribe/commands.py): each of
its kinds (the pip-hint error among them) and an OSError is one line and exit 2; anything else
is a bug and keeps its traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from pixscribe.commands import Commands
from pixscribe.errors import (
    BackendUnavailable,
    ConfigError,
    ConfigMismatch,
    InputFileError,
    MethodError,
    MissingDependency,
    ModelUnavailable,
    PixscribeError,
)


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer(cls=Commands)

    @app.command()
    def boom() -> None:
        raise exc

    @app.command()
    def fine() -> None:
        typer.echo("ok")

    return app


@pytest.mark.parametrize("exc", [
    ConfigError("--shard must be K/N"), MethodError("unknown method 'x'"), ConfigMismatch("changed: prompt"),
    BackendUnavailable("no server at http://h:1/v1"), InputFileError("--refs r.json: not valid JSON"),
    ModelUnavailable("the decoder could not be loaded"), PixscribeError("expert 'sam' could not be loaded", "expert"),
    MissingDependency("'duckdb' is needed for reports: pip install 'pixscribe[report]'"),
    FileNotFoundError(2, "No such file or directory", "x.json"), PermissionError(13, "Permission denied", "/out"),
])
def test_each_kind_is_one_line_and_exit_2(exc):
    r = CliRunner().invoke(_app(exc), ["boom"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {exc}"  # a pip hint's [brackets] are not markup


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug"), TypeError("a bug")])
def test_anything_else_is_a_bug_with_its_traceback(exc):
    r = CliRunner().invoke(_app(exc), ["boom"])
    assert r.exit_code == 1 and r.exception is exc  # not swallowed as a user error


def test_the_kinds_are_still_their_builtin_exceptions():
    assert isinstance(ConfigError("x"), ValueError) and isinstance(MethodError("x"), ValueError)
    assert isinstance(MissingDependency("x"), ImportError) and isinstance(BackendUnavailable("x"), RuntimeError)
    # a row that keeps one reads as it did before the family: the builtin's name as its kind
    from pixscribe.record import format_error

    assert format_error(ConfigError("bad")) == "ValueError: bad" and format_error(MethodError("m")) == "MethodError: m"


def test_a_bug_in_a_method_is_a_traceback_and_a_method_error_one_line(tmp_path, photo_dir):
    from pixscribe.api import registry
    from pixscribe.cli import app

    @registry.register_method("buggy-for-test", summary="raises")
    def buggy(ctx):
        return {}["missing"]

    @registry.register_method("refusing-for-test", summary="refuses")
    def refusing(ctx):
        raise MethodError("this method refuses the configuration")

    try:
        base = ["caption", str(photo_dir), "-o", str(tmp_path / "o"), "--no-progress", "--method"]
        r = CliRunner().invoke(app, [*base, "buggy-for-test"])
        assert r.exit_code == 1 and isinstance(r.exception, KeyError)
        r = CliRunner().invoke(app, [*base, "refusing-for-test"])
        assert r.exit_code == 2 and r.output.strip() == "error: this method refuses the configuration"
        assert not (tmp_path / "o").exists()
    finally:
        registry._METHODS.pop("buggy-for-test", None)
        registry._METHODS.pop("refusing-for-test", None)
