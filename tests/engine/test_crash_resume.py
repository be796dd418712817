"""kill -9 and Ctrl-C at any moment, then a rerun: every input id exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import ctrl_c_reaches_it

N_IMAGES = 80

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from fixtures_engine import ScriptedBackend
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.testing.methods import method_with

    class Gated(ScriptedBackend):  # GATE=PATH: after two batches, each waits until PATH exists
        def _generate(self, requests):
            gate = os.environ.get("GATE")
            while gate and len(self.batches) >= 2 and not os.path.exists(gate):
                time.sleep(0.02)
            return super()._generate(requests)

    cfg = RunConfig(inputs=[{inp!r}], output={out!r}, progress=False, batch_size=4, shard_size=25, vlm="scripted-vlm",
                flush_rows=4, flush_seconds=0.5)
    s = Runner(cfg, method_with(cfg, Gated(delay=0.15))).run()
    print("written", s.rows_written, "skipped", s.rows_skipped, flush=True)
    sys.exit(130 if s.interrupted else 0)
    """
)


@pytest.fixture()
def many_images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        arr = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"img{i:03d}.png")
    return d


def _script(tmp_path: Path, inp: Path, out: Path) -> Path:
    p = tmp_path / "run_it.py"
    p.write_text(SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), inp=str(inp), out=str(out)))
    return p


def _check_exactly_once(out: Path, inp: Path) -> None:
    from pixscribe.record import keyless_id

    expected = {keyless_id(str(p)) for p in inp.iterdir()}
    rows = pq.read_table(out).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert set(ids) == expected, f"missing {len(expected - set(ids))}"
    assert {r["sha256"] for r in rows} == {hashlib.sha256(p.read_bytes()).hexdigest() for p in inp.iterdir()}
    assert all(r["error"] is None and r["caption"] for r in rows)


def test_kill_9_at_random_moments_then_rerun(tmp_path, many_images):
    out = tmp_path / "out"
    script = _script(tmp_path, many_images, out)
    rng = random.Random(1234)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.9, 2.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    # the output may hold partial shards now, but never a duplicate
    if any(out.glob("part-*.parquet")):
        ids = pq.read_table(out).column("id").to_pylist()
        assert len(ids) == len(set(ids))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _check_exactly_once(out, many_images)
    # no batch files are left behind once every shard is complete
    assert not list((out / "_state" / "batches").glob("*/*.parquet"))
    assert len(list((out / "_state" / "done").glob("*.json"))) == 4


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path, many_images):
    out = tmp_path / "out"
    script = _script(tmp_path, many_images, out)
    gate = tmp_path / "go"  # the run writes two batches, then waits: the interrupt meets it mid-run
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_it, env={**os.environ, "GATE": str(gate)})
    deadline = time.monotonic() + 300
    while not list(out.glob("_state/batches/*/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupt once some rows are on disk, however slow the machine
    proc.send_signal(signal.SIGINT)
    gate.touch()  # the batch in flight may end; nothing new starts
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    written = int(stdout.split()[1])
    assert 0 < written < N_IMAGES
    # what was written is valid and readable right away
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == written and len({r["id"] for r in rows}) == written
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"skipped {written}" in done.stdout
    _check_exactly_once(out, many_images)


def test_kill_9_during_a_multi_stage_run(tmp_path, many_images, plugin_env):
    """Two stages per row (the test plugin's image stage and text stage): after kills at
    random moments, the rerun writes every row once and recomputes no finished row."""
    from fixtures_plugin import pixscribe, pixscribe_popen

    out = tmp_path / "out"
    args = ("caption", str(many_images), "-o", str(out), "--method", "scripted", "--no-progress", "--shard-size",
            "25", "--batch-size", "4", "--flush-rows", "4", "--flush-seconds", "0.5")
    rng = random.Random(99)
    kills = 0
    for _ in range(4):
        p = pixscribe_popen(plugin_env, *args, PIXSCRIBE_SCRIPTED_DELAY="0.1")
        time.sleep(rng.uniform(1.2, 2.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
    assert kills >= 2
    before = {}  # every row on disk: finished parts and the batch files of unfinished shards
    for f in sorted(out.glob("part-*.parquet")) + sorted(out.glob("_state/batches/*/*.parquet")):
        before.update({r["id"]: (r["seen"], r["final"]) for r in pq.read_table(f).to_pylist()})
    assert all(s and f for s, f in before.values())  # a finished row has both stages' outputs
    done = pixscribe(plugin_env, *args)
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    from pixscribe.record import keyless_id

    assert set(rows) == {keyless_id(str(p)) for p in many_images.iterdir()} and len(rows) == N_IMAGES
    for i, (seen, final) in before.items():  # nothing finished was lost or recomputed differently
        assert (rows[i]["seen"], rows[i]["final"]) == (seen, final)
    summary = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert summary["stages"]["see"]["computed"] == N_IMAGES - len(before) == summary["rows_written"]
    assert summary["rows_skipped"] == len(before)
