"""Exactly once under the faults a cluster throws: two runs on one output directory, a
killed owner, inputs that change between runs, damaged parts, columns that appear late.

These run the real `pixscribe` command in subprocesses with the test plugin's scripted
method (tests/plugin_pkg: answers come from the pixels)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe, pixscribe_popen
from pixscribe.record import keyless_id

SLOW = {"PIXSCRIBE_SCRIPTED_DELAY": "0.25"}  # 10 batches: a few seconds per run


def make_images(d: Path, n: int, start: int = 0, seed: int = 0) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        p = d / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, size=(16, 24, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def caption(env, inp, out, *args, **extra):
    return pixscribe(env, "caption", str(inp), "-o", str(out), "--method", "scripted", "--no-progress",
                     "--shard-size", "10", "--batch-size", "4", "--flush-rows", "4", *args, **extra)


def start(env, inp, out, *args, **extra):
    return pixscribe_popen(env, "caption", str(inp), "-o", str(out), "--method", "scripted", "--no-progress",
                           "--shard-size", "10", "--batch-size", "4", "--flush-rows", "4", *args, **extra)


def assert_exactly_once(out: Path, files: list[Path]) -> list[dict]:
    rows = pq.read_table(out).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert set(ids) == {keyless_id(str(p)) for p in files}, "rows are missing or extra"
    assert all(r["error"] is None and r["final"] for r in rows)
    return rows


def wait_for(pred, timeout=300.0):  # a state, not a time: however slow the machine
    t = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < t, "timed out"
        time.sleep(0.05)


# ---- two runs, one output directory -------------------------------------------------------------
def test_two_runs_started_together_write_everything_once(plugin_env, tmp_path):
    files = make_images(tmp_path / "in", 40)
    out = tmp_path / "out"
    gate = tmp_path / "go"  # the winner waits at its first batch until the loser has stopped: no race
    a = start(plugin_env, tmp_path / "in", out, PIXSCRIBE_SCRIPTED_GATE=str(gate))
    b = start(plugin_env, tmp_path / "in", out, PIXSCRIBE_SCRIPTED_GATE=str(gate))
    wait_for(lambda: a.poll() is not None or b.poll() is not None, timeout=300)
    gate.touch()
    ra, rb = a.wait(timeout=300), b.wait(timeout=300)
    errs = (a.stderr.read(), b.stderr.read())
    assert sorted([ra, rb]) == [0, 2], errs
    loser = errs[0] if ra else errs[1]
    assert "is being written by another run: pid" in loser and "--wait" in loser and "Traceback" not in loser
    assert_exactly_once(out, files)


def test_a_second_run_staggered_fails_fast_or_waits(plugin_env, tmp_path):
    files = make_images(tmp_path / "in", 40)
    out = tmp_path / "out"
    gate = tmp_path / "go"  # a writes one batch, then waits until the test lets it go on
    a = start(plugin_env, tmp_path / "in", out, PIXSCRIBE_SCRIPTED_GATE=f"{gate}:1")
    wait_for(lambda: list(out.glob("_state/batches/*/*.parquet")))
    b = caption(plugin_env, tmp_path / "in", out, **SLOW)  # stops at once: it does not wait for a
    assert b.returncode == 2 and f"pid {a.pid}" in b.stderr
    c = start(plugin_env, tmp_path / "in", out, "--wait", **SLOW)  # waits for a, then finds all done
    gate.touch()
    assert a.wait(timeout=300) == 0 and c.wait(timeout=300) == 0, c.stderr.read()
    assert_exactly_once(out, files)
    summaries = [json.loads(p.read_text()) for p in sorted((out / "_state" / "summaries").glob("*.json"))]
    assert sum(s["rows_written"] for s in summaries) == len(files)  # nobody wrote a row twice


def test_a_killed_owner_is_taken_over(plugin_env, tmp_path):
    files = make_images(tmp_path / "in", 40)
    out = tmp_path / "out"
    never = tmp_path / "never"  # a writes one batch, then waits: it is killed holding its claims
    a = start(plugin_env, tmp_path / "in", out, PIXSCRIBE_SCRIPTED_GATE=f"{never}:1")
    wait_for(lambda: list(out.glob("_state/batches/*/*.parquet")))
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=60)
    assert list((out / "_state" / "leases").glob("*.claim"))  # its claims are still there...
    r = caption(plugin_env, tmp_path / "in", out)  # ...but it is dead: taken over at once
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)
    assert not list((out / "_state" / "leases").glob("*.claim"))


# ---- the inputs change between runs -------------------------------------------------------------
def test_changed_inputs_are_refused_then_updated_exactly_once(plugin_env, tmp_path):
    inp = tmp_path / "in"
    files = make_images(inp, 30)
    out = tmp_path / "out"
    r = caption(plugin_env, inp, out, "--limit", "14")  # interrupted: shard 0 done, shard 1 partial
    assert r.returncode == 0, r.stderr
    files[3].unlink()  # removed from a finished shard
    files[12].unlink()  # removed from an unfinished one
    Image.new("RGB", (20, 20), (255, 0, 0)).save(files[5])  # modified: same path, new bytes
    added = make_images(inp, 3, start=100, seed=1)
    r = caption(plugin_env, inp, out)
    assert r.returncode == 2 and "3 added" in r.stderr and "2 removed" in r.stderr and "1 modified" in r.stderr
    assert "--update" in r.stderr
    r = caption(plugin_env, inp, out, "--update")
    assert r.returncode == 0, r.stderr
    now = [p for p in files if p.exists()] + added
    rows = assert_exactly_once(out, now)
    five = next(x for x in rows if x["source"] == str(files[5]))
    assert five["seen"] == "20x20 mean [255, 0, 0]"  # the new bytes, not the old row
    again = caption(plugin_env, inp, out)
    assert again.returncode == 0 and "rows written" in again.stderr
    assert_exactly_once(out, now)


# ---- damaged parts --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_part_is_noticed_and_redone(plugin_env, tmp_path, damage):
    files = make_images(tmp_path / "in", 25)
    out = tmp_path / "out"
    assert caption(plugin_env, tmp_path / "in", out).returncode == 0
    part = out / "part-00001.parquet"
    data = part.read_bytes()
    if damage == "truncate":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, footer intact: only the checksum can tell (--verify)
        mid = len(data) // 3
        part.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:])
    else:
        part.unlink()
    extra = ["--verify"] if damage == "flip" else []
    r = caption(plugin_env, tmp_path / "in", out, *extra)
    assert r.returncode == 0, r.stderr
    assert "redone (damaged)" in r.stderr and "part-00001.parquet" in r.stderr
    assert_exactly_once(out, files)
    summary = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert summary["rows_written"] == 10 and len(summary["shards_redone"]) == 1


def test_retry_errors_on_a_damaged_shard_redoes_it(plugin_env, tmp_path):
    files = make_images(tmp_path / "in", 12)
    out = tmp_path / "out"
    bad = keyless_id(str(files[11]))
    assert caption(plugin_env, tmp_path / "in", out, PIXSCRIBE_SCRIPTED_FAIL=bad).returncode == 0
    (out / "part-00001.parquet").write_bytes(b"PAR1 garbage")
    r = caption(plugin_env, tmp_path / "in", out, "--retry-errors")
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)


# ---- one schema for the whole output ------------------------------------------------------------
def _tar(path: Path, samples: list[tuple[str, bytes, dict | None]]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        for key, img, side in samples:
            members = [(f"{key}.png", img)] + ([(f"{key}.json", json.dumps(side).encode())] if side else [])
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def _png(color) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_a_column_that_appears_late_is_in_every_part(plugin_env, tmp_path):
    """img2dataset-style tars: the first sample has no `license` key, later ones do, and a
    second tar has none at all; its sidecar `width`/`sha256` keys collide with pixscribe's."""
    d = tmp_path / "in"
    d.mkdir()
    _tar(d / "00000.tar", [(f"b{i}", _png((0, 0, i)), None) for i in range(3)])  # part-00000 is pyarrow's schema
    _tar(d / "00001.tar", [("a0", _png((255, 0, 0)), {"width": 8, "sha256": "x"})]
         + [(f"a{i}", _png((0, i, 0)), {"width": 8, "license": f"cc-{i}"}) for i in range(1, 4)])
    out = tmp_path / "out"
    r = pixscribe(plugin_env, "caption", str(d / "{00000..00001}.tar"), "-o", str(out), "--method", "scripted",
                  "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "license" in pq.read_schema(out / "part-00000.parquet").names  # widened when the column appeared
    t = pq.read_table(out)  # takes the schema of the first part file
    assert {"license", "input_width", "input_sha256"} <= set(t.column_names)
    rows = {x["id"]: x for x in t.to_pylist()}
    assert rows["a2"]["license"] == "cc-2" and rows["a0"]["license"] is None and rows["b1"]["license"] is None
    assert rows["a0"]["input_sha256"] == "x" and rows["a0"]["sha256"] != "x" and rows["a0"]["width"] == 8
    import duckdb

    n = duckdb.connect().execute(f"select count(license) from read_parquet('{out}/*.parquet')").fetchone()[0]
    assert n == 3


# ---- ids: every input one row -------------------------------------------------------------------
def test_repeated_keys_and_identical_images_are_rows_of_their_own(plugin_env, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    import io
    import tarfile

    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    with tarfile.open(d / "dup.tar", "w") as tf:  # k0.png twice, then k1 with the same bytes as k0
        for name, data in (("k0.png", red), ("k0.png", blue), ("k1.png", red)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    (d / "same_a.png").write_bytes(red)  # identical bytes in another shard, no key
    (d / "same_b.png").write_bytes(red)
    out = tmp_path / "out"
    r = pixscribe(plugin_env, "caption", str(d / "dup.tar"), str(d / "same_a.png"), str(d / "same_b.png"),
                  "-o", str(out), "--method", "scripted", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in pq.read_table(out).to_pylist()}
    assert set(rows) == {"k0", "k0~2", "k1", keyless_id(str(d / "same_a.png")), keyless_id(str(d / "same_b.png"))}
    assert rows["k0"]["error"] is None and rows["k0"]["seen"].endswith("[255, 0, 0]")  # the real sample
    assert "a second member with key 'k0'" in rows["k0~2"]["error"]
    assert len({x["sha256"] for x in rows.values() if x["error"] is None}) == 1  # reported, not merged
    s = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert s["duplicate_keys"] == 1 and s["duplicate_images"] == 2  # k1 = k0 in the tar; same_b = same_a
    assert "identical images" in r.stderr and "KEY~N" in r.stderr


# ---- leftovers ------------------------------------------------------------------------------------
def test_temporary_files_of_dead_processes_are_removed(plugin_env, tmp_path):
    import subprocess
    import sys

    from pixscribe.io.writers import _HOST

    files = make_images(tmp_path / "in", 5)
    out = tmp_path / "out"
    assert caption(plugin_env, tmp_path / "in", out).returncode == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    left = out / f".part-00000.parquet.tmp-{_HOST}-{dead}-123"
    left.write_bytes(b"x" * 1000)
    live = out / f".part-00000.parquet.tmp-{_HOST}-{os.getpid()}-456"  # this pytest process: alive
    live.write_bytes(b"y")
    assert caption(plugin_env, tmp_path / "in", out).returncode == 0
    assert not left.exists() and live.exists()
    assert_exactly_once(out, files)


def test_batch_files_a_kill_left_beside_a_finished_shard_are_removed(plugin_env, tmp_path):
    """Killed after a shard's marker, before its batch files went: the next run removes
    them (they were never part of anything again) and leaves the part as it was."""
    import shutil

    files = make_images(tmp_path / "in", 15)
    out = tmp_path / "out"
    assert caption(plugin_env, tmp_path / "in", out).returncode == 0
    before = (out / "part-00000.parquet").read_bytes()
    stale = out / "_state" / "batches" / "00000"
    stale.mkdir(parents=True)
    shutil.copy(out / "part-00000.parquet", stale / "0000000000001-1-000001.parquet")
    r = caption(plugin_env, tmp_path / "in", out)
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert (out / "part-00000.parquet").read_bytes() == before
    assert not list((out / "_state" / "leases").glob("0000*"))
    assert_exactly_once(out, files)


# ---- a full disk ------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_clear_line_then_resume_completes(plugin_env, tmp_path, small_disk):
    import subprocess

    files = make_images(tmp_path / "in", 150)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (600 * 1024 - 160 * 1024))  # leaves room to plan and start, not to finish
    out = small_disk / "out"
    r = caption(plugin_env, tmp_path / "in", out)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "No space left on device" in r.stderr and "rerun the same command to resume" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert list(out.glob("_state/batches/*/*.parquet")) or list(out.glob("part-*"))  # it got going first
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = caption(plugin_env, tmp_path / "in", out)
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)


def test_a_read_only_mount_is_one_clear_line(plugin_env, tmp_path, small_disk):
    import subprocess

    files = make_images(tmp_path / "in", 12)
    out = small_disk / "out"
    assert caption(plugin_env, tmp_path / "in", out, "--limit", "5").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        r = caption(plugin_env, tmp_path / "in", out)
        assert r.returncode == 1, r.stderr
        assert "Read-only file system" in r.stderr and "rerun the same command" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    r = caption(plugin_env, tmp_path / "in", out)
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)


def test_a_dead_runs_claim_on_a_finished_shard_is_removed(plugin_env, tmp_path):
    """Killed after a shard's marker, before it released its claim: no run claims a finished
    shard again, so the next run sweeps the dead claim (and the dead owner's file) at its end."""
    import socket
    import subprocess
    import sys

    files = make_images(tmp_path / "in", 12)
    out = tmp_path / "out"
    assert caption(plugin_env, tmp_path / "in", out).returncode == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leases = out / "_state" / "leases"
    (leases / "owner-gone.json").write_text(json.dumps({"owner": "gone", "host": socket.gethostname(),
                                                        "pid": int(dead), "heartbeat": time.time()}))
    (leases / "00000.claim").write_text("gone")
    r = caption(plugin_env, tmp_path / "in", out)
    assert r.returncode == 0, r.stderr
    assert not list(leases.glob("*.claim")) and not list(leases.glob("owner-*"))
    assert_exactly_once(out, files)
