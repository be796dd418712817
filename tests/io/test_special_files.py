"""Named pipes, sockets and devices among the inputs: refused by type before anything opens
them, so no run, report or export can hang on one (issue 23, point 5).

Real FIFOs (``os.mkfifo``) named ``*.png`` in an input folder, in a ``.txt`` list and in a
table's ``path`` column; FIFOs named as the list or table itself; a symlink to ``/dev/zero``
named as an image. Every command runs as a real process: a run still going after a generous
limit is a hang, and is then sent SIGTERM (it must end) before it is killed."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pixscribe.io.files import NotRegularFile, open_regular
from pixscribe.testing import write_sample_photos

HANG_S = 300  # far beyond what these runs take on a loaded machine: only a hang reaches it


def _limit_memory() -> None:
    """A child that reads /dev/zero without end must fail on memory, not take the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def pixscribe(*args: str) -> subprocess.CompletedProcess:
    """``pixscribe ARGS`` as a process; a hang fails the test, saying whether SIGTERM ended it."""
    p = subprocess.Popen([sys.executable, "-m", "pixscribe", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
                         preexec_fn=_limit_memory)
    try:
        out, err = p.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=30)
            ended = "SIGTERM ended it"
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            ended = "SIGTERM did not end it either"
        pytest.fail(f"pixscribe {' '.join(args)} hung ({HANG_S} s); {ended}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


CAPTION = ("--method", "experts", "--experts", "stats", "--no-progress")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    write_sample_photos(d / "imgs", ("astronaut", "coffee"))
    os.mkfifo(d / "imgs" / "pipe.png")  # in a folder
    os.mkfifo(d / "listed.png")  # in a .txt list
    os.mkfifo(d / "tabled.png")  # in a table's path column
    (d / "list.txt").write_text("listed.png\nimgs/coffee.jpg\n")
    (d / "t.jsonl").write_text(json.dumps({"path": "tabled.png"}) + "\n" + json.dumps({"path": "imgs/astronaut.jpg"}) + "\n")
    return d


def test_pipes_named_as_images_are_error_rows_and_the_run_ends(data, tmp_path):
    out = tmp_path / "out"
    p = pixscribe("caption", str(data / "imgs"), str(data / "list.txt"), str(data / "t.jsonl"), "-o", str(out), *CAPTION)
    assert p.returncode == 0, p.stderr
    table = pq.read_table(out).to_pylist()
    rows = {Path(r["source"]).name: r for r in table}
    assert len(table) == 6  # the table's astronaut is a row of its own beside the folder's
    assert sorted(rows) == ["astronaut.jpg", "coffee.jpg", "listed.png", "pipe.png", "tabled.png"]
    for name in ("pipe.png", "listed.png", "tabled.png"):
        err = rows[name]["error"]
        assert err.startswith("input: ") and name in err and "is a named pipe, not a regular file" in err, err
    assert "t.jsonl#row=0" in rows["tabled.png"]["error"]  # and where the path came from
    assert rows["astronaut.jpg"]["error"] is None and rows["coffee.jpg"]["error"] is None

    # report and export re-read sources: a pipe is refused there too, by type, and they end
    (data / "imgs" / "coffee.jpg").unlink()
    os.mkfifo(data / "imgs" / "coffee.jpg")  # a source that became a pipe since the run
    p = pixscribe("report", str(out), "-o", str(tmp_path / "rep"))
    assert p.returncode == 0 and "2 thumbnails (source 4 could not be read)" in p.stderr, p.stderr
    page = (tmp_path / "rep" / "page-0001.html").read_text()
    assert page.count("is a named pipe, not a regular file") >= 4
    p = pixscribe("export", str(out), "--to", "webdataset", str(tmp_path / "wds"), "--keep-errors")
    assert p.returncode == 0 and "4 rows whose image could not be read again" in p.stderr, p.stderr
    errs = [json.loads(x) for x in (tmp_path / "wds" / "_export_errors.jsonl").read_text().splitlines()]
    assert sum("is a named pipe" in e["error"] for e in errs) == 4


@pytest.mark.parametrize("name", ["list.txt", "rows.jsonl", "rows.parquet"])
def test_a_pipe_named_as_a_list_or_table_stops_the_run_with_one_line(tmp_path, name):
    os.mkfifo(tmp_path / name)
    p = pixscribe("caption", str(tmp_path / name), "-o", str(tmp_path / "out"), *CAPTION)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and name in p.stderr and "is a named pipe" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_device_or_socket_named_as_an_image_is_refused(tmp_path):
    d = tmp_path / "data"
    write_sample_photos(d, ("rocket",))
    os.symlink("/dev/zero", d / "zero.png")  # endless bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.png"))
    try:
        p = pixscribe("caption", str(d), "-o", str(tmp_path / "out"), "--allow-any-path", *CAPTION)
    finally:
        sock.close()
    assert p.returncode == 0, p.stderr
    rows = {Path(r["source"]).name: r["error"] for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert "is a character device, not a regular file" in rows["zero.png"]
    assert "is a socket, not a regular file" in rows["sock.png"]
    assert rows["rocket.jpg"] is None


def test_open_regular_refuses_by_type_before_opening(tmp_path):
    os.mkfifo(tmp_path / "p")
    for path, kind in ((tmp_path / "p", "a named pipe"), ("/dev/zero", "a character device"), (tmp_path, "a directory")):
        with pytest.raises(NotRegularFile) as exc:
            open_regular(path)  # a pipe with no writer would block here forever
        assert exc.value.strerror == f"is {kind}, not a regular file" and str(path) in str(exc.value)
    (tmp_path / "f").write_bytes(b"ok")
    with open_regular(tmp_path / "f") as f:
        assert f.read() == b"ok"
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "nope")


def test_a_pipe_named_as_a_region_mask_is_that_regions_error(tmp_path):
    from pixscribe.methods.region.masks import decode_mask
    from pixscribe.methods.region.types import RegionError

    os.mkfifo(tmp_path / "mask.png")
    with pytest.raises(RegionError, match=r"mask\.png'?: cannot read: is a named pipe, not a regular file"):
        decode_mask("mask.png", 10, 10, base_dir=str(tmp_path))
