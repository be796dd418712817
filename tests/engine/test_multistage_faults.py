"""kill -9 at random moments, and several ``--shard K/N`` tasks at once into one folder, for the
multi-stage methods (issue 23): the real ``panoptic`` (four VLM stages) and ``region`` methods
answered by the loopback OpenAI-compatible echo server (slowed down so runs can be caught
mid-way), and the real ``textualize`` method (five stages, experts included) with the test
plugin's scripted models. After the faults every input is in the output exactly once, every
stage of every row is ``ok``, nothing finished was recomputed differently, and the sharded
output equals a single run's."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe, pixscribe_popen
from test_exactly_once import wait_for
from pixscribe.record import keyless_id
from pixscribe.testing.openai_server import ServerProcess

N = 24
COMMON = ("--no-progress", "--shard-size", "4", "--batch-size", "2", "--flush-rows", "2", "--flush-seconds", "0.3")


@pytest.fixture(scope="module")
def slow_echo():
    with ServerProcess("--mode", "echo", "--latency", "0.1") as srv:
        yield srv


def _images(d: Path) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(N):
        p = d / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, size=(24 + i % 3, 32, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def setup_method(name: str, tmp: Path, echo) -> tuple[Path, set[str], tuple[str, ...], dict[str, str]]:
    """(input, expected ids, arguments, environment) of one method's run."""
    files = _images(tmp / "in" / "img")
    vlm = ("--backend", "openai", "--base-url", echo.url, "--vlm", "pixscribe-test")
    if name == "panoptic":
        return tmp / "in" / "img", {keyless_id(str(p)) for p in files}, \
            ("--method", "panoptic", *vlm), {}
    if name == "region":
        src = tmp / "in" / "images.jsonl"
        src.write_text("".join(json.dumps({"id": f"i{i}", "path": f"img/{p.name}", "regions": [
            {"id": f"i{i}-a", "box": [2, 2, 12, 12]}, {"id": f"i{i}-b", "box": [10, 4, 30, 20], "attribute": "color"}]})
            + "\n" for i, p in enumerate(files)))
        return src, {f"i{i}" for i in range(N)}, ("--method", "region", "--region-prompt", "focal", *vlm), {}
    return tmp / "in" / "img", {keyless_id(str(p)) for p in files}, ("--method", "scripted-textualize"), \
        {"PIXSCRIBE_SCRIPTED_DELAY": "0.04"}


STAGES = {"panoptic": ("localize", "tag", "discover", "caption"), "region": ("region",),
          "textualize": ("detail", "describe", "objects", "verify", "rewrite")}


def progress(out: Path) -> int:
    """Batch files and completion markers written so far."""
    return len(list(out.glob("_state/batches/*/*.parquet"))) + len(list(out.glob("_state/done/*.json")))


def all_rows(out: Path) -> dict[str, dict]:
    """Every row on disk: finished parts, then the batch files of unfinished shards."""
    rows: dict[str, dict] = {}
    for f in sorted(out.glob("part-*.parquet")) + sorted(out.glob("_state/batches/*/*.parquet")):
        rows.update({r["id"]: r for r in pq.read_table(f).to_pylist()})
    return rows


def check_complete(out: Path, ids: set[str], name: str) -> dict[str, dict]:
    rows = pq.read_table(out).to_pylist()
    got = [r["id"] for r in rows]
    assert len(got) == len(set(got)), "a row was written twice"
    assert set(got) == ids, "rows are missing or extra"
    for r in rows:
        assert r["error"] is None, r["error"]
        st = json.loads(r["stages"])
        assert [st[s]["status"] for s in STAGES[name]] == ["ok"] * len(STAGES[name])
    assert not list(out.glob("_state/batches/*/*.parquet")) and not list(out.glob("_state/leases/*.claim"))
    return {r["id"]: r for r in rows}


def outputs(r: dict) -> tuple:
    return tuple(r[c] for c in ("caption", "regions", "entities", "description") if c in r)


@pytest.mark.parametrize("name", ["panoptic", "region", "textualize"])
def test_kill_9_at_random_moments_then_rerun(plugin_env, slow_echo, tmp_path, name):
    src, ids, args, env = setup_method(name, tmp_path, slow_echo)
    out = tmp_path / "out"
    cmd = ("caption", str(src), "-o", str(out), *args, *COMMON)
    rng = random.Random(sum(map(ord, name)))
    kills = 0
    for _ in range(4):  # each time: once the run has written something new, at a random moment after
        n0 = progress(out)
        p = pixscribe_popen(plugin_env, *cmd, **env)
        wait_for(lambda: progress(out) > n0 or p.poll() is not None, timeout=240)
        time.sleep(rng.uniform(0.0, 0.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    before = all_rows(out)
    assert before, "nothing was written before the kills"
    done = pixscribe(plugin_env, *cmd, **env)
    assert done.returncode == 0, done.stderr
    rows = check_complete(out, ids, name)
    for i, r in before.items():  # nothing finished was lost or recomputed differently
        assert outputs(rows[i]) == outputs(r), i


@pytest.mark.parametrize("name", ["panoptic", "region", "textualize"])
def test_three_shard_tasks_at_once_into_one_folder_equal_one_run(plugin_env, slow_echo, tmp_path, name):
    src, ids, args, env = setup_method(name, tmp_path, slow_echo)
    out, whole = tmp_path / "out", tmp_path / "whole"
    procs = [pixscribe_popen(plugin_env, "caption", str(src), "-o", str(out), *args, *COMMON, "--shard", f"{k}/3",
                             **env) for k in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    rows = check_complete(out, ids, name)
    assert len(list(out.glob("part-*.parquet"))) == N // 4
    summaries = [json.loads(p.read_text()) for p in (out / "_state" / "summaries").glob("*.json")]
    assert sorted(s["rows_written"] for s in summaries) == [8, 8, 8]  # each task its own two shards
    r = pixscribe(plugin_env, "caption", str(src), "-o", str(whole), *args, *COMMON, **env)
    assert r.returncode == 0, r.stderr
    one = check_complete(whole, ids, name)
    assert {i: outputs(x) for i, x in rows.items()} == {i: outputs(x) for i, x in one.items()}
