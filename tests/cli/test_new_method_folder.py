"""A new method is one folder (issue 24): a package written here into a temporary directory,
holding one module with a two-stage method, its typed options and one declared flag, is
installed with pip (its ``pixscribe.methods`` entry point, as plugins do) and run by the real
``pixscribe caption`` command with that flag. No file of pixscribe or of tests/ is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

from fixtures_plugin import pixscribe
from fixtures_reuse import last_summary

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pixscribe-tally"
version = "0.1.0"
requires-python = ">=3.11"

[project.entry-points."pixscribe.methods"]
tally = "pixscribe_tally:tally"
"""

METHOD = '''\
"""tally: a stage that measures each image, then one that writes the measure in words."""
from dataclasses import dataclass

import numpy as np

from pixscribe.api import Flag, Method, ModelRole, Stage, StageOptions, option, register_method


@dataclass(frozen=True)
class MeasureOptions(StageOptions):
    """Each image's mean brightness."""

    scale: float = option(1.0, "the brightness is multiplied by this")


@dataclass(frozen=True)
class WordsOptions(StageOptions):
    """The measure in words."""

    prefix: str = option("brightness", "the word before the number")


class Measure(Stage):
    name, provides, needs_image = "measure", ("level",), True

    def __init__(self, opts):
        self.opts = opts

    def options(self):
        return dict(self.opts)

    def __call__(self, records):
        for r in records:
            r.fields["level"] = round(float(np.asarray(r.image.convert("L")).mean()) * self.opts["scale"], 1)
        return records


class Words(Stage):
    name, provides, needs, needs_image = "words", ("text",), ("level",), False

    def __init__(self, opts):
        self.opts = opts

    def options(self):
        return dict(self.opts)

    def __call__(self, records):
        for r in records:
            r.fields["text"] = f"{self.opts['prefix']} {r.fields['level']}"
        return records


@register_method("tally", summary="a two-stage method from a temporary package",
                 options={"measure": MeasureOptions, "words": WordsOptions},
                 flags=[Flag("tally_prefix", "words", "prefix")], roles=[])
def tally(ctx):
    stages = [Measure(ctx.options("measure", MeasureOptions)), Words(ctx.options("words", WordsOptions))]
    return Method("tally", stages, ["level", "text"], "text")
'''


def _install(tmp: Path) -> dict[str, str]:
    pkg = tmp / "pkg"
    (pkg / "src" / "pixscribe_tally").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "src" / "pixscribe_tally" / "__init__.py").write_text(METHOD)
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_a_new_method_in_one_folder_runs_from_the_command_line_with_its_flag(photo_dir, tmp_path):
    env = _install(tmp_path)
    help_text = pixscribe(env, "caption", "--help", COLUMNS="200").stdout
    assert "--tally-prefix <str>" in help_text and "a two-stage method from a temporary package" in help_text
    out = tmp_path / "out"
    r = pixscribe(env, "caption", str(photo_dir), "-o", str(out), "--tally-prefix", "lum", "--no-progress")
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "_run.json").read_text())["method"]
    assert run["method"] == "tally"  # the flag picked its method
    stages = [{k: v for k, v in s.items() if k != "fingerprint"} for s in run["stages"]]
    assert stages == [{"stage": "measure", "scale": 1.0}, {"stage": "words", "prefix": "lum"}]
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6 and all(x["error"] is None for x in rows)
    assert all(x["text"] == f"lum {x['level']}" and 0 < float(x["level"]) < 256 for x in rows)  # text columns
    assert len({x["level"] for x in rows}) > 1  # measured from each image, not a constant
    r = pixscribe(env, "caption", str(photo_dir), "-o", str(out), "--tally-prefix", "lum", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert last_summary(out)["rows_written"] == 0  # the same flag is the same run: resumed, nothing redone
    r = pixscribe(env, "caption", str(photo_dir), "-o", str(out), "--tally-prefix", "brightness", "--no-progress")
    assert r.returncode == 2 and "words.prefix" in r.stderr  # the flag is in the words stage's fingerprint
    docs = pixscribe(env, "methods", "--markdown").stdout
    assert "## tally" in docs and "| `--tally-prefix` | `words.prefix` |" in docs
