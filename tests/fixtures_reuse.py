"""Helpers of the reuse tests (test_reuse_inputs.py, test_reuse_compat.py): the loopback echo
server (its answer repeats the prompt, so a region's box or instruction shows in the caption),
``--method region`` through it, and reading an output back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_plugin import pixscribe
from pixscribe.testing.openai_server import ServerProcess


@pytest.fixture(scope="module")
def echo_server():
    with ServerProcess("--mode", "echo") as srv:
        yield srv


def last_summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def rows_once(out: Path) -> dict[str, dict]:
    """The output's rows by id, checking that none was written twice."""
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "a row was written twice"
    return {r["id"]: r for r in rows}


def region_cli(echo, env, src: Path, out: Path, *extra: str):
    """``pixscribe caption SRC -o OUT --method region`` (focal prompts) on the echo server."""
    r = pixscribe(env, "caption", str(src), "-o", str(out), "--method", "region", "--region-prompt", "focal",
                  "--backend", "openai", "--base-url", echo.url, "--vlm", "pixscribe-test", "--no-progress", *extra)
    assert r.returncode == 0, r.stderr
    return r


def relocate_fixture(fixture: Path, tmp: Path) -> Path:
    """A copy of the fixture whose manifests name the copy's inputs, with the sizes and
    modification times they recorded (a checkout does not keep mtimes)."""
    dest = tmp / fixture.name
    shutil.copytree(fixture, dest)
    for state in dest.glob("out_*/_state"):
        head = json.loads((state / "manifest.json").read_text())
        first = head["inputs"][0]
        old = first[: first.index(f"/{fixture.name}/") + len(fixture.name) + 1]
        move = lambda p: str(dest) + p[len(old):] if p and p.startswith(old) else p  # noqa: E731
        head["roots"], head["inputs"] = [move(p) for p in head["roots"]], [move(p) for p in head["inputs"]]
        (state / "manifest.json").write_text(json.dumps(head))
        t = pq.read_table(state / "manifest.parquet")
        paths = [move(p) for p in t.column("path").to_pylist()]
        pq.write_table(t.set_column(t.column_names.index("path"), "path", pa.array(paths, pa.string())),
                       state / "manifest.parquet")
        for p, size, mtime in zip(paths, t.column("size").to_pylist(), t.column("mtime_ns").to_pylist()):
            if p and mtime is not None and os.path.getsize(p) == size:
                os.utime(p, ns=(mtime, mtime))
    return dest
