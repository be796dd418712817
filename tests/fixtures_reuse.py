"""Helpers of the reuse tests (test_reuse_inputs.py, test_reuse_compat.py): the loopback echo
server (its answer repeats the prompt, so a region's box or instruction shows in the caption),
``--method region`` through it, and reading an output back."""

from __future__ import annotations

import json
from pathlib import Path

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
