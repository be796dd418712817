"""Where export and report write (issue 23, point 3): never the output they read, nothing
inside it or holding it, and ``--overwrite`` replaces only an earlier export, never an
arbitrary folder or file. From the CLI on a real caption run; the earlier exports that are
replaced are read back by webdataset and datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pixscribe.testing import write_sample_photos
from test_e2e_cli import cli


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dest")
    write_sample_photos(root / "photos", ("astronaut", "coffee", "rocket"))
    cli("caption", str(root / "photos"), "-o", str(root / "out"), "--method", "experts", "--experts", "stats",
        "--no-progress")
    return root / "out"


def _intact(out: Path) -> None:
    assert pq.read_table(out).num_rows == 3 and (out / "_run.json").is_file()


def _refused(*args: str) -> str:
    p = cli(*args, check=False)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    return p.stderr


@pytest.mark.parametrize("fmt", ["webdataset", "hf", "hub", "folder", "embed", "jsonl"])
def test_export_never_replaces_or_writes_into_its_own_output(out, tmp_path, fmt):
    err = _refused("export", str(out), "--to", fmt, str(out), "--overwrite")
    assert "is the output directory" in err
    _intact(out)
    err = _refused("export", str(out), "--to", fmt, str(out / "sub"), "--overwrite")
    assert "is inside the output directory" in err and not (out / "sub").exists()
    err = _refused("export", str(out), "--to", fmt, str(out.parent), "--overwrite")
    assert "holds the output directory" in err
    _intact(out)
    link = tmp_path / "link"
    os.symlink(out, link)  # the same folder by another name
    err = _refused("export", str(out), "--to", fmt, str(link), "--overwrite")
    assert "is the output directory" in err
    _intact(out)
    assert not list(out.parent.glob(".*tmp-*"))


def test_overwrite_replaces_only_an_earlier_export(out, tmp_path):
    import datasets
    import webdataset as wds

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for fmt in ("webdataset", "hf", "hub", "folder", "embed", "jsonl"):
        err = _refused("export", str(out), "--to", fmt, str(mine), "--overwrite")
        assert "is not a pixscribe" in err and "even with --overwrite" in err
    assert (mine / "thesis.tex").read_text() == "years of work"

    dest = tmp_path / "wds"
    cli("export", str(out), "--to", "webdataset", str(dest))
    marker = json.loads((dest / "_export.json").read_text())
    assert marker["format"] == "webdataset" and marker["rows"] == 3
    assert len(list(wds.WebDataset([str(t) for t in dest.glob("shard-*.tar")], shardshuffle=False))) == 3
    assert "exists; pass --overwrite" in _refused("export", str(out), "--to", "webdataset", str(dest))
    cli("export", str(out), "--to", "hf", str(dest), "--overwrite")  # an export of pixscribe's: replaced whole
    assert datasets.load_from_disk(str(dest)).num_rows == 3 and not list(dest.glob("shard-*.tar"))
    cli("export", str(out), "--to", "webdataset", str(dest), "--overwrite", "--text-only")
    assert not (dest / "dataset_info.json").exists() and len(list(dest.glob("shard-*.tar"))) == 1
    cli("export", str(out), "--to", "folder", str(dest), "--overwrite")  # each layout replaces any other's
    assert len(list(dest.glob("*.txt"))) == 3 and not list(dest.glob("shard-*.tar"))
    cli("export", str(out), "--to", "hub", str(dest), "--overwrite")
    assert datasets.load_dataset(str(dest), split="train").num_rows == 3 and not list(dest.glob("*.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cli("export", str(out), "--to", "webdataset", str(empty), "--overwrite", "--text-only")
    assert (empty / "_export.json").is_file()


def test_a_jsonl_dest_is_replaced_only_when_it_is_an_export(out, tmp_path):
    table = tmp_path / "table.jsonl"  # someone's data, not an export
    table.write_text(json.dumps({"path": "a.jpg", "caption": "mine"}) + "\n")
    err = _refused("export", str(out), "--to", "jsonl", str(table), "--overwrite")
    assert "is not a pixscribe jsonl export" in err and table.read_text().startswith('{"path"')
    notes = tmp_path / "notes.txt"
    notes.write_text("not json")
    _refused("export", str(out), "--to", "jsonl", str(notes), "--overwrite")
    assert notes.read_text() == "not json"
    _refused("export", str(out), "--to", "jsonl", str(out / "part-00000.parquet"), "--overwrite")
    _intact(out)
    dest = tmp_path / "x.jsonl"
    cli("export", str(out), "--to", "jsonl", str(dest))
    cli("export", str(out), "--to", "jsonl", str(dest), "--overwrite")
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert len(rows) == 3 and all({"id", "source", "text"} <= set(r) for r in rows)


def test_report_never_writes_into_the_output_it_reads(out, tmp_path):
    err = _refused("report", str(out), "-o", str(out / "report"))
    assert "is inside the output directory" in err and not (out / "report").exists()
    _intact(out)
    err = _refused("report", str(out), "-o", str(out))
    assert "is the output directory" in err
    _intact(out)
