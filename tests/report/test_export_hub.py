"""`pixscribe export --to hub`: a folder `datasets.load_dataset(DEST)` reads as it is (images,
captions, typed columns, splits), with a dataset card whose YAML header matches what was
written, from the CLI on a real caption run with hostile ids and captions; the card renders
hostile prompts and names as text (CommonMark, with raw HTML on, as the Hub renders cards)."""

from __future__ import annotations

import hashlib
import json

import yaml
from markdown_it import MarkdownIt

from fixtures_export import hostile_run, rows_by_width  # noqa: F401
from fixtures_report import HOSTILE, sample_out  # noqa: F401
from pixscribe.report import hub
from pixscribe.report.captions import uniform
from pixscribe.report.export import ExportOptions, export
from pixscribe.report.card import code, fenced
from test_e2e_cli import cli


def _card(dest) -> tuple[dict, str]:
    text = (dest / "README.md").read_text(encoding="utf-8")
    _, head, body = text.split("---\n", 2)
    return yaml.safe_load(head), body


def test_load_dataset_reads_images_captions_and_splits(hostile_run, tmp_path):
    import datasets

    dest = tmp_path / "hub"
    p = cli("export", str(hostile_run.out), "--to", "hub", str(dest), "--test-fraction", "0.5", "--seed", "2")
    assert "export: 11 rows as hub (train " in p.stderr and ", test " in p.stderr, p.stderr
    ds = datasets.load_dataset(str(dest))
    rows = {r["sha256"]: r for r in rows_by_width(hostile_run.out).values()}
    want = {k: sorted(r["id"] for r in rows.values() if (uniform(r["id"], 2, "split") < 0.5) == (k == "test"))
            for k in ("train", "test")}
    assert {k: sorted(ds[k]["id"]) for k in ds} == want and want["train"] and want["test"]
    for split in ds.values():
        assert isinstance(split.features["image"], datasets.Image) and split.features["width"].dtype == "int32"
        for r in split.cast_column("image", datasets.Image(decode=False)):
            assert hashlib.sha256(r["image"]["bytes"]).hexdigest() == r["sha256"]  # the original file, GIF or TIFF too
            assert r["text"] == r["caption"] == rows[r["sha256"]]["caption"]  # control characters and all
        assert all(im.size[1] == 40 for im in split["image"])  # decodes as an image
    meta, body = _card(dest)
    info = meta["dataset_info"]
    assert [f["name"] for f in info["features"]] == ds["train"].column_names
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {k: len(v) for k, v in want.items()}
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    assert meta["size_categories"] == ["n<1K"] and "image-to-text" in meta["task_categories"]
    assert info["download_size"] == sum(f.stat().st_size for f in (dest / "data").iterdir())
    assert "- rows: 11; error rows left out: 0" in body and "rows by model: `m` 11" in body
    assert "Please generate a detailed caption" in body and f"splits: train {len(want['train'])}" in body
    assert json.loads((dest / "_export.json").read_text())["format"] == "hub"


def test_shards_and_text_only(hostile_run, tmp_path, monkeypatch):
    import datasets

    dest = tmp_path / "hub"
    cli("export", str(hostile_run.out), "--to", "hub", str(dest), "--shard-size", "4", "--prefix", "ohwx, ")
    files = sorted(f.name for f in (dest / "data").iterdir())
    assert files == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset(str(dest), split="train")
    assert ds.num_rows == 11 and all(t.startswith("ohwx, ") for t, c in zip(ds["text"], ds["caption"]) if c)
    cli("export", str(hostile_run.out), "--to", "hub", str(dest), "--text-only", "--overwrite")
    ds = datasets.load_dataset(str(dest), split="train")
    assert ds.num_rows == 11 and "image" not in ds.column_names
    assert "- name: image" not in (dest / "README.md").read_text()
    monkeypatch.setattr(hub, "SHARD_BYTES", 1)  # every row past the byte bound: a file each
    export(hostile_run.out, tmp_path / "small", ExportOptions(fmt="hub"))
    assert len(list((tmp_path / "small" / "data").iterdir())) == 11
    assert datasets.load_dataset(str(tmp_path / "small"), split="train").num_rows == 11


def test_the_card_shows_hostile_text_as_text(sample_out, tmp_path):
    dest = tmp_path / "hub"
    cli("export", str(sample_out), "--to", "hub", str(dest), "--text-only", "--keep-errors")
    html = MarkdownIt("commonmark").render(_card(dest)[1])
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;window.__pwned = 1" in html
    assert "error rows exported (--keep-errors), by kind: <code>decode</code> 1" in html


def test_code_spans_and_fences_hold_any_text():
    md = MarkdownIt("commonmark")
    for s in ["a`b", "``x``", "`", "<b>bold</b>", "*em* [l](u)", "x\ny\r\n# h", HOSTILE]:
        html = md.render(f"p {code(s)}")
        assert "<code>" in html and "<b>" not in html and "<script" not in html, html
        block = md.render("\n".join(fenced(s + "\n```\n<i>x</i>")))
        assert block.count("<pre>") == 1 and "<i>" not in block and "<script" not in block, block
