"""One path guard for caption, report and export (issue 23, point 4).

A caption run refuses a path outside its input folders but keeps it as the row's ``source``;
the row records the refusal (error kind ``refused``) and ``_run.json`` records the guard.
Report and export then never open that source again, re-read every other local source
through the same guard, and never copy or quote a byte of a file that is not an image.
Everything runs from the CLI on real files; the exports are read back with webdataset and
datasets, and every file they and the report wrote is searched for the secret."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup

from pixscribe.testing import write_sample_photos
from test_e2e_cli import cli

SECRET = "root:x:0:0:root:/root:/bin/bash AKIA-SECRET-do-not-leak"
CAPTION = ("--method", "experts", "--experts", "stats", "--no-progress")


def _leaks(root: Path) -> list[str]:
    """Files under ``root`` holding any piece of the secret (in any encoding a writer might use)."""
    needles = (b"root:x:0", b"AKIA-SECRET", b"cm9vdDp4OjA")  # the last: base64 of "root:x:0"
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A caption run over a folder, a .txt list and a jsonl table that name a secret outside the
    inputs (a text file named .png), a symlink out of the folder, and a text file named .png
    inside the inputs (read by the run, a decode error)."""
    private = tmp_path / "private"
    private.mkdir()
    (private / "secrets.png").write_text(SECRET + "\n")
    (private / "other.png").write_text(SECRET + "\n")
    data = tmp_path / "data"
    write_sample_photos(data / "imgs", ("astronaut", "coffee"))
    os.symlink(private / "other.png", data / "imgs" / "link.png")
    (data / "imgs" / "notes.png").write_text(SECRET + "\n")
    (data / "list.txt").write_text("../private/secrets.png\nimgs/coffee.jpg\n")
    (data / "t.jsonl").write_text(json.dumps({"path": str(private / "secrets.png")}) + "\n")
    out = tmp_path / "out"
    cli("caption", str(data / "imgs"), str(data / "list.txt"), str(data / "t.jsonl"), "-o", str(out), *CAPTION)
    return out


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist()


def test_the_run_records_the_refusal_and_its_guard(run, tmp_path):
    rows = _rows(run)
    refused = [r for r in rows if r["error"] and r["error"].startswith("refused: ")]
    assert len(refused) == 3  # the list's, the table's and the symlink
    assert all("outside the input folders" in r["error"] for r in refused)
    guard = json.loads((run / "_run.json").read_text())["input_guard"]
    assert guard == {"roots": [os.path.realpath(tmp_path / "data" / "imgs"), os.path.realpath(tmp_path / "data")],
                     "allow_any_path": False}
    assert _leaks(run) == []


def test_report_never_opens_a_refused_source(run, tmp_path):
    rep = tmp_path / "rep"
    p = cli("report", str(run), "-o", str(rep))
    assert "2 thumbnails" in p.stderr and "refused 3" in p.stderr, p.stderr
    cards = BeautifulSoup((rep / "page-0001.html").read_text(), "html.parser").select("article.row")
    refused = [c for c in cards if "not read: the run refused this source" in c.get_text()]
    assert len(refused) == 3
    assert not any("plain text" in c.get_text() or "bytes" in c.get_text() for c in refused)  # nothing learnt of them
    assert len(list((rep / "thumbs").iterdir())) == 2
    assert _leaks(rep) == []


@pytest.mark.parametrize("fmt", ["webdataset", "hf", "hub", "folder", "embed"])
def test_export_keeps_error_rows_without_their_bytes(run, tmp_path, fmt):
    dest = tmp_path / fmt
    p = cli("export", str(run), "--to", fmt, str(dest), "--keep-errors")
    assert "7 rows" in p.stderr or "rows as" in p.stderr, p.stderr
    errors = [json.loads(x) for x in (dest / "_export_errors.jsonl").read_text().splitlines()]
    # the three refused rows and the text file inside the inputs: listed, never copied
    assert sorted(Path(e["source"]).name for e in errors) == ["link.png", "notes.png", "secrets.png", "secrets.png"]
    assert sum("the run refused this source" in e["error"] for e in errors) == 3
    notes = next(e for e in errors if e["source"].endswith("notes.png"))
    assert "not a known image format" in notes["error"] and "b'" not in notes["error"]
    assert _leaks(dest) == []
    if fmt == "webdataset":
        import webdataset as wds

        samples = list(wds.WebDataset([str(t) for t in sorted(dest.glob("shard-*.tar"))], shardshuffle=False))
        with_image = [s for s in samples if "jpg" in s or "png" in s]
        assert len(with_image) == 2 and all("jpg" in s for s in with_image)
        assert len(samples) == 2  # rows whose image cannot be given are left out of an image format
    elif fmt in ("hf", "hub"):
        import datasets

        ds = datasets.load_from_disk(str(dest)) if fmt == "hf" else datasets.load_dataset(str(dest), split="train")
        assert ds.num_rows == 2 and all(r["image"] is not None for r in ds)
    else:  # the two images the run read, nothing else
        assert sorted(f.suffix for f in dest.iterdir() if f.name[0] != "_") == [".jpg", ".jpg"] + \
            ([".txt", ".txt"] if fmt == "folder" else [])


def test_report_and_export_consult_the_runs_guard_now(run, tmp_path):
    """A source inside the inputs that became a symlink to a file outside them since the run is
    refused by report and export alike: the guard is applied again, not only the row's record."""
    coffee = tmp_path / "data" / "imgs" / "coffee.jpg"
    coffee.unlink()
    os.symlink(tmp_path / "private" / "secrets.png", coffee)
    p = cli("report", str(run), "-o", str(tmp_path / "rep"))
    assert "1 thumbnails" in p.stderr and "refused 4" in p.stderr, p.stderr
    page = (tmp_path / "rep" / "page-0001.html").read_text()
    assert "is a symlink to a file outside the input folders" in page
    p = cli("export", str(run), "--to", "webdataset", str(tmp_path / "wds"))
    errs = (tmp_path / "wds" / "_export_errors.jsonl").read_text()
    assert "coffee.jpg" in errs and "outside the input folders" in errs
    assert _leaks(tmp_path / "rep") == [] and _leaks(tmp_path / "wds") == []


def test_an_output_that_records_no_guard_reads_no_local_source(run, tmp_path):
    """An output from before the guard was recorded: its sources are read only on request."""
    info = json.loads((run / "_run.json").read_text())
    del info["input_guard"]
    (run / "_run.json").write_text(json.dumps(info))
    p = cli("report", str(run), "-o", str(tmp_path / "rep"))
    assert "0 thumbnails" in p.stderr, p.stderr
    page = BeautifulSoup((tmp_path / "rep" / "page-0001.html").read_text(), "html.parser").get_text()
    assert "does not record the run's input folders" in page
    p = cli("report", str(run), "-o", str(tmp_path / "rep"), "--allow-any-path")
    assert "2 thumbnails" in p.stderr and "refused 3" in p.stderr, p.stderr  # never a refused row
    assert _leaks(tmp_path / "rep") == []


def test_a_list_naming_a_table_or_tar_outside_the_inputs_stops_the_run(tmp_path):
    private = tmp_path / "private"
    write_sample_photos(private, ("rocket",))
    pq.write_table(pa.table({"image": [(private / "rocket.jpg").read_bytes()]}), private / "t.parquet")
    with tarfile.open(private / "s.tar", "w") as tar:
        tar.add(private / "rocket.jpg", "k.jpg")
    data = tmp_path / "data"
    write_sample_photos(data, ("coffee",))
    for name in ("t.parquet", "s.tar"):
        (data / "list.txt").write_text(f"coffee.jpg\n../private/{name}\n")
        p = cli("caption", str(data / "list.txt"), "-o", str(tmp_path / "out"), *CAPTION, check=False)
        assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
        assert f"private/{name} (from {data / 'list.txt'})" in p.stderr and "outside the input folders" in p.stderr
        assert not (tmp_path / "out").exists()
    p = cli("caption", str(data / "list.txt"), "-o", str(tmp_path / "out"), *CAPTION, "--allow-any-path")
    assert len(_rows(tmp_path / "out")) == 2
