"""Progress in logs: when stderr is not a terminal, a line every ``--log-every`` seconds from a
timer (whatever the batches do), and a tar's total counted from its member headers."""

from __future__ import annotations

import gzip
import io
import os
import queue
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pixscribe.engine.summary import Progress, clock
from pixscribe.io.readers import _iter_tar, count_tar_samples
from pixscribe.testing import SAMPLE_NAMES, sample_photo
from pixscribe.testing.openai_server import ServerProcess


def _jpeg(name: str) -> bytes:
    buf = io.BytesIO()
    sample_photo(name).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _photo_tar(path: Path, n: int) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            name = SAMPLE_NAMES[i % len(SAMPLE_NAMES)]
            _add(tar, f"k{i:03d}.jpg", _jpeg(name))
            _add(tar, f"k{i:03d}.txt", f"a photo of {name}".encode())
    return path


def test_tar_count_matches_what_the_reader_yields(tmp_path):
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        _add(tar, "a.jpg", _jpeg("chelsea"))
        _add(tar, "a.json", b'{"caption": "a cat"}')
        _add(tar, ".hidden", b"x")  # no sample
        _add(tar, "README", b"x")  # no extension: no sample
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        _add(tar, "sub/b.png", _jpeg("coffee"))
        _add(tar, "sub/b.png", _jpeg("coffee"))  # the same key and extension twice: an error row
        _add(tar, "c.txt", b"no image")  # a sample without an image: an error row
        _add(tar, "a.jpg", _jpeg("rocket"))  # a key seen before, not adjacent: a new sample
    rows = list(_iter_tar(str(path)))
    assert len(rows) == 5
    assert count_tar_samples(str(path)) == 5


def test_tar_count_reads_headers_only_and_skips_what_it_cannot_count_cheaply(tmp_path):
    big = _photo_tar(tmp_path / "s.tar", 7)
    assert count_tar_samples(str(big)) == 7
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(big.read_bytes()))
    assert count_tar_samples(str(gz)) is None  # counting would decompress it all
    assert len(list(_iter_tar(str(gz)))) == 7
    assert count_tar_samples(str(tmp_path / "missing.tar")) is None
    os.mkfifo(tmp_path / "pipe.tar")
    assert count_tar_samples(str(tmp_path / "pipe.tar")) is None  # never waits on a pipe


def test_progress_line_says_rows_rate_and_eta():
    p = Progress(None, enabled=False)
    p._t0 -= 100.0
    assert re.fullmatch(r"pixscribe: 0 rows, 0\.00 rows/s, elapsed 0:01:4\d, total not known", p.line())
    p.total = 1000
    assert p.line().endswith("ETA unknown until a row is done")
    p.advance(100)
    m = re.fullmatch(r"pixscribe: 100/1000 rows \(10%\), ([\d.]+) rows/s, elapsed 0:01:\d\d, ETA (\d+):(\d\d):(\d\d)",
                     p.line())
    assert m, p.line()
    eta = int(m[2]) * 3600 + int(m[3]) * 60 + int(m[4])
    assert 850 <= eta <= 900  # 900 rows at about 1 row/s
    assert clock(3 * 86400 + 61) == "72:01:01"  # hours are not wrapped at a day


def _read_lines(stream, out: "queue.Queue[str]") -> None:
    for line in stream:
        out.put(line.rstrip("\n"))


def _wait_for(lines: "queue.Queue[str]", seen: list[str], pattern: str, count: int, proc, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while sum(bool(re.fullmatch(pattern, s)) for s in seen) < count:
        if proc.poll() is not None and lines.empty():
            pytest.fail(f"the run ended (exit {proc.returncode}) before {count} lines like {pattern!r}:\n"
                        + "\n".join(seen))
        if time.monotonic() > deadline:
            pytest.fail(f"no {count} lines like {pattern!r} in {timeout:.0f} s:\n" + "\n".join(seen))
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            pass


def test_non_terminal_run_logs_progress_on_a_timer_with_a_tar_total_and_eta(tmp_path):
    tar = _photo_tar(tmp_path / "shard-00000.tar", 8)
    out = tmp_path / "out"
    # the server answers the first batch (4 requests: batches are 4 x concurrency), then holds
    # the second batch until the test has seen the timer print while nothing moves
    with ServerProcess("--mode", "echo", "--model", "m", "--hold", "4") as srv:
        cmd = [sys.executable, "-m", "pixscribe", "caption", str(tar), "-o", str(out), "--backend", "openai",
               "--base-url", srv.url, "--vlm", "m", "--concurrency", "1", "--batch-size", "1",
               "--log-every", "0.2"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
        seen: list[str] = []
        try:
            line = r"pixscribe: 4/8 rows \(50%\), [\d.]+ rows/s, elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d"
            _wait_for(lines, seen, line, 3, proc)  # the same row count 3 times: a timer, not a batch callback
            srv.admin(hold=None)
            assert proc.wait(300) == 0, "\n".join(seen)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 8 and all(r["error"] is None for r in rows)


def test_no_progress_prints_no_progress_lines(tmp_path):
    tar = _photo_tar(tmp_path / "shard-00000.tar", 2)
    with ServerProcess("--mode", "echo", "--model", "m", "--latency", "0.5") as srv:
        p = subprocess.run([sys.executable, "-m", "pixscribe", "caption", str(tar), "-o", str(tmp_path / "out"),
                            "--backend", "openai", "--base-url", srv.url, "--vlm", "m", "--log-every", "0.05",
                            "--no-progress"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "rows/s" not in p.stderr
