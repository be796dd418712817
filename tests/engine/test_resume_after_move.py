"""Output folders made before issue 24 moved every method into methods/<name>/ (tests/compat/
v887eef9, made by main at 887eef9) resume with today's code: the same command line is not
refused as a "changed configuration", nothing finished is redone and no row changes; the run
cut short finishes only what it had left. Through the real command: recap and region on the
loopback echo server, textualize's real stages with the test plugin's scripted models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_plugin import pixscribe
from fixtures_reuse import last_summary, relocate_fixture, rows_once

FIXTURE = Path(__file__).resolve().parents[1] / "compat" / "v887eef9"
_spec = importlib.util.spec_from_file_location("make_fixture_moved", FIXTURE.parent / "make_fixture_moved.py")
MAKER = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(MAKER)
FINISHED = [n for n in MAKER.RUNS if n not in MAKER.PARTIAL]


@pytest.fixture(scope="module")
def moved_fixture(tmp_path_factory) -> Path:
    return relocate_fixture(FIXTURE, tmp_path_factory.mktemp("moved"))


def _resume(env, echo, d: Path, name: str):
    r = pixscribe(env, *MAKER.command(name, d / "in", d / name, echo.url))
    assert r.returncode == 0, r.stderr
    assert "different configuration" not in r.stderr
    return last_summary(d / name)


@pytest.mark.parametrize("name", FINISHED)
def test_a_finished_run_made_before_the_move_resumes_unchanged(echo_server, plugin_env, moved_fixture, name):
    before = pq.read_table(moved_fixture / name).to_pylist()
    assert before and not any(r["error"] for r in before)
    s = _resume(plugin_env, echo_server, moved_fixture, name)
    assert s["rows_written"] == 0 and s["rows_skipped"] == len(before)
    assert pq.read_table(moved_fixture / name).to_pylist() == before


def test_a_cut_run_made_before_the_move_finishes_what_it_had_left(echo_server, plugin_env, moved_fixture):
    out = moved_fixture / "out_textualize_partial"
    old = {r["id"]: r for f in sorted(out.glob("part-*.parquet")) + sorted(out.glob("_state/batches/*/*"))
           for r in pq.read_table(f).to_pylist()}
    assert len(old) == 7
    s = _resume(plugin_env, echo_server, moved_fixture, "out_textualize_partial")
    assert s["rows_written"] == 5 and s["rows_skipped"] == 7
    rows = rows_once(out)
    assert len(rows) == 12 and all(rows[i]["caption"] == r["caption"] for i, r in old.items())
    assert not any(r["error"] for r in rows.values())
    finished = pq.read_table(moved_fixture / "out_textualize").to_pylist()
    assert {r["id"]: r["caption"] for r in finished} == {i: r["caption"] for i, r in rows.items()}
