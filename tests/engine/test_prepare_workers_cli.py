"""`pixscribe caption` with prepare workers (real subprocesses): the same captions as with the
processor on the model's thread, ``_run.json`` names the processor classes, and Ctrl-C,
SIGTERM and kill -9 of the run leave no worker process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import ctrl_c_reaches_it

from pixscribe.testing import SAMPLE_NAMES, write_sample_photos

pytestmark = pytest.mark.slow


def _caption_args(model: Path, photos: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pixscribe", "caption", str(photos), "-o", str(out), "--vlm", str(model),
            "--device", "cpu", "--max-pixels", "65536", "--no-progress", "--prepare-workers", str(workers), *extra]


def test_same_captions_with_and_without_workers(tiny_qwen_vlms, tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos)  # real photos of several sizes
    Image.open(photos / "coffee.jpg").resize((90, 260)).save(photos / "tall.jpg")
    captions = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        p = subprocess.run(_caption_args(tiny_qwen_vlms["qwen3_vl"], photos, out, workers, "--batch-size", "3",
                                         "--max-new-tokens", "8"), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        rows = pq.read_table(out).to_pylist()
        assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
        captions[workers] = {r["id"]: r["caption"] for r in rows}
        (model,) = json.loads((out / "_run.json").read_text())["models"]
        assert model["prepare_workers"] == workers and model["device"] == "cpu"
        assert model["processor"] == {"class": "Qwen3VLProcessor", "image_processor": "Qwen2VLImageProcessor",
                                      "image_processor_kind": "fast (torchvision)"}
    assert len(captions[0]) == len(SAMPLE_NAMES) + 1 and captions[0] == captions[2]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = raw.rsplit(")", 1)[1].split()[:2]
    return None if state == "Z" else (state, int(ppid))


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None and st[1] == pid:
                out.append(int(d.name))
    return out


@pytest.fixture(scope="module")
def many_small(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(150):
        Image.fromarray(rng.integers(0, 255, (48 + i % 7, 64, 3), dtype=np.uint8)).save(d / f"i{i:03d}.jpg")
    return d


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "kill-9"])
def test_stopping_the_run_stops_its_workers(tiny_qwen_vlms, many_small, tmp_path, how):
    out = tmp_path / "out"
    args = _caption_args(tiny_qwen_vlms["qwen2_5_vl"], many_small, out, 2, "--batch-size", "2",
                         "--max-new-tokens", "24", "--flush-rows", "2", "--flush-seconds", "0.5")
    log = tmp_path / "stderr.txt"
    workers: list[int] = []
    with open(log, "w") as err:  # a file, not a pipe: an orphan holding a pipe would hang the test
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=ctrl_c_reaches_it,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("_state/batches/*/*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)  # the workers have prepared batches once rows are on disk
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers  # the two prepare workers (and spawn's resource tracker)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal sends it to the whole group
        else:
            proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        proc.wait(timeout=120)
        deadline = time.monotonic() + 30
        while any(_stat(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if _stat(w)]
    finally:
        for w in [proc.pid, *workers]:
            if _stat(w):
                os.kill(w, signal.SIGKILL)
    stderr = log.read_text()
    assert proc.returncode == (-9 if how == "kill-9" else 130), stderr
    if how != "kill-9":
        assert "Traceback" not in stderr, stderr
    assert not left, "worker processes outlived the run"
    rows = pq.read_table(out).to_pylist() if list(out.glob("part-*.parquet")) else []
    assert len({r["id"] for r in rows}) == len(rows)  # what was written is valid, never twice
