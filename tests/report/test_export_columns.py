"""Export never replaces an output column: an input ``text`` (LAION's alt text) is kept as
``input_text`` beside the export's own ``text`` (issue 23, point 9); hf writes region structs
and lists as JSON text, not Python repr (point 13). Real runs (a LAION-style parquet table
from the CLI; the region method through the engine with the scripted colour reader), every
format read back by webdataset, datasets and json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_region import ColourBackend
from pixscribe.testing import sample_photo
from test_e2e_cli import cli
from test_region_method import image_rows, run, write_scene

ALT = {"k0": "LAION alt text of the astronaut", "k1": "a cat, alt text", "k2": None}


def _jpeg(name: str) -> bytes:
    b = io.BytesIO()
    sample_photo(name).save(b, "JPEG", quality=85)
    return b.getvalue()


@pytest.fixture(scope="module")
def laion(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("laion")
    pq.write_table(pa.table({"key": list(ALT), "image": [_jpeg(n) for n in ("astronaut", "chelsea", "coffee")],
                             "text": list(ALT.values()), "text_source": ["laion"] * 3}), root / "t.parquet")
    cli("caption", str(root / "t.parquet"), "-o", str(root / "out"), "--method", "experts", "--experts", "stats",
        "--no-progress")
    return root / "out"


def test_the_input_text_column_reaches_the_output_as_it_was(laion):
    rows = {r["id"]: r for r in pq.read_table(laion).to_pylist()}
    assert {k: r["text"] for k, r in rows.items()} == ALT and all(r["caption"] for r in rows.values())


def test_every_format_keeps_the_input_text_as_input_text(laion, tmp_path):
    import datasets
    import webdataset as wds

    cap = {r["id"]: r["caption"] for r in pq.read_table(laion).to_pylist()}
    cli("export", str(laion), "--to", "jsonl", str(tmp_path / "x.jsonl"))
    rows = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert {r["id"]: (r["text"], r["input_text"], r["text_source"]) for r in rows} == \
        {k: (cap[k], ALT[k], "laion") for k in ALT}  # text_source is the export's only with --mix-original

    cli("export", str(laion), "--to", "webdataset", str(tmp_path / "wds"))
    samples = list(wds.WebDataset([str(p) for p in (tmp_path / "wds").glob("shard-*.tar")], shardshuffle=False))
    for s in samples:
        row = json.loads(s["json"])
        assert s["txt"].decode() == row["text"] == cap[row["id"]] and row["input_text"] == ALT[row["id"]]

    cli("export", str(laion), "--to", "hf", str(tmp_path / "hf"), "--mix-original", "1", "--original-column", "text")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert {"text", "input_text", "text_source", "input_text_source", "image"} <= set(ds.column_names)
    for r in ds:  # the alt text taken as the original, read from where it now is
        assert (r["input_text"], r["input_text_source"]) == (ALT[r["id"]], "laion")
        assert (r["text"], r["text_source"]) == ((ALT[r["id"]], "original") if ALT[r["id"]] else (cap[r["id"]], "recaption"))
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "`text` column is `input_text` here" in card and "original caption (`input_text`)" in card


def test_hf_writes_region_structs_as_json(tmp_path):
    import datasets

    d = tmp_path / "in"
    regions = write_scene(d)
    _, rows, _ = run([image_rows(d, list(regions))], tmp_path / "out", ColourBackend())
    assert isinstance(pq.read_table(tmp_path / "out").column("regions").type, pa.ListType)  # a typed list of structs
    cli("export", str(tmp_path / "out"), "--to", "hf", str(tmp_path / "hf"))
    (r,) = datasets.load_from_disk(str(tmp_path / "hf"))
    got = json.loads(r["regions"])  # JSON, not a Python repr with None and single quotes
    assert [(x["region_id"], x["caption"]) for x in got] == [(x["region_id"], x["caption"]) for x in rows[0]["regions"]]
    assert json.loads(r["stages"]) and r["width"] == rows[0]["width"]


def test_a_caption_column_of_structs_is_written_as_json(tmp_path):
    import webdataset as wds

    d = tmp_path / "in"
    regions = write_scene(d)
    _, rows, _ = run([image_rows(d, list(regions))], tmp_path / "out", ColourBackend())
    cli("export", str(tmp_path / "out"), "--to", "webdataset", str(tmp_path / "wds"), "--caption-column", "regions")
    (s,) = wds.WebDataset([str(p) for p in (tmp_path / "wds").glob("shard-*.tar")], shardshuffle=False)
    assert [x["caption"] for x in json.loads(s["txt"])] == [x["caption"] for x in rows[0]["regions"]]
    cli("export", str(tmp_path / "out"), "--to", "folder", str(tmp_path / "f"), "--caption-column", "regions")
    (txt,) = (tmp_path / "f").glob("*.txt")
    assert json.loads(txt.read_text(encoding="utf-8")) == json.loads(s["txt"])
