"""`pixscribe export`: webdataset shards read back by webdataset, a saved dataset read back by
datasets, jsonl; the original/new caption mix within a binomial bound on 10,000 rows and the
same choice per id for the same seed, whatever the order; errors left out and listed."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from fixtures_report import write_output
from pixscribe.io.writers import member_key
from pixscribe.report.export import ExportOptions, export, takes_original
from pixscribe.testing import write_sample_photos
from test_e2e_cli import cli

RUN = {"fingerprint": "f1", "models": [{"role": "vlm", "model": "tiny/llava", "backend": "transformers"}],
       "method": {"method": "recap", "caption_field": "re_caption", "stages": [
           {"stage": "recap", "fingerprint": "abcd", "model": "tiny/llava", "prompt": "Describe the image.",
            "prompt_sha": "85ee"}]}}


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    photos = write_sample_photos(tmp_path / "photos", ("astronaut", "chelsea", "coffee", "rocket"))
    rows = []
    for i, p in enumerate(photos):
        rows.append({"id": f"{p.stem}/{i}.x", "source": str(p), "width": 10, "height": 10,
                     "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "method": "recap",
                     "caption": f"new caption of {p.stem}", "org_caption": f"original of {p.stem}" if i < 2 else None,
                     "re_caption": f"new caption of {p.stem}", "seconds": 0.1, "error": None})
    rows.append({"id": "bad", "source": str(tmp_path / "photos" / "nope.jpg"), "method": "recap", "caption": None,
                 "error": "decode: nope.jpg: not an image", "seconds": None})
    (tmp_path / "photos" / "rocket.jpg").unlink()  # gone since the run
    return write_output(tmp_path / "out", rows, RUN)


def _tars(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("shard-*.tar"))]


def test_webdataset_read_back_by_webdataset(out, tmp_path):
    import webdataset as wds

    dest = tmp_path / "wds"
    p = cli("export", str(out), "--to", "webdataset", str(dest), "--shard-size", "2")
    assert "export: 3 rows as webdataset" in p.stderr and "1 error rows left out" in p.stderr
    assert "1 rows whose image could not be read again" in p.stderr
    assert len(_tars(dest)) == 2
    samples = list(wds.WebDataset(_tars(dest), shardshuffle=False))
    by_key = {s["__key__"]: s for s in samples}
    assert sorted(by_key) == sorted(member_key(f"{n}/{i}.x") for i, n in enumerate(("astronaut", "chelsea", "coffee")))
    for s in samples:
        row = json.loads(s["json"])
        assert hashlib.sha256(s["jpg"]).hexdigest() == row["sha256"]  # the original bytes
        assert s["txt"].decode() == row["text"] == row["caption"]
    (err,) = [json.loads(line) for line in (dest / "_export_errors.jsonl").read_text().splitlines()]
    assert err["id"] == "rocket/3.x" and "no such file" in err["error"]

    cli("export", str(out), "--to", "webdataset", str(dest), "--text-only", "--overwrite")
    samples = list(wds.WebDataset(_tars(dest), shardshuffle=False))
    assert len(samples) == 4 and all("jpg" not in s for s in samples) and not (dest / "_export_errors.jsonl").exists()


def test_hf_read_back_by_datasets(out, tmp_path):
    import datasets

    dest = tmp_path / "hf"
    res = export(out, dest, ExportOptions(fmt="hf", mix_original=1.0))
    assert (res.written, res.image_errors, res.took_original, res.had_original) == (3, 1, 2, 2)
    ds = datasets.load_from_disk(str(dest))
    assert ds.num_rows == 3 and {"image", "text", "text_source", "caption", "org_caption"} <= set(ds.column_names)
    for r in ds:
        assert r["image"].size == (512, 512) or r["image"].size[0] > 100
        if r["org_caption"]:
            assert (r["text"], r["text_source"]) == (r["org_caption"], "original")
        else:
            assert (r["text"], r["text_source"]) == (r["caption"], "recaption")
    card = (dest / "README.md").read_text()
    assert "method: **recap**" in card and "`tiny/llava`" in card and "Describe the image." in card
    assert "rows: 3; error rows left out: 1; rows whose image could not be read again: 1" in card
    assert "probability 1.0 (seed 0): 2 of 2" in card

    res = export(out, tmp_path / "hf2", ExportOptions(fmt="hf", text_only=True, keep_errors=True))
    ds = datasets.load_from_disk(str(tmp_path / "hf2"))
    assert res.written == ds.num_rows == 5 and "image" not in ds.column_names
    assert ds.filter(lambda r: r["id"] == "bad")[0]["error"].startswith("decode:")


def test_jsonl_and_refusals(out, tmp_path):
    dest = tmp_path / "rows.jsonl"
    export(out, dest)
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"] == r["caption"] for r in rows) and "text_source" not in rows[0]
    p = cli("export", str(out), "--to", "jsonl", str(dest), check=False)
    assert p.returncode == 2 and "exists; pass --overwrite" in p.stderr
    p = cli("export", str(out), "--to", "jsonl", str(tmp_path / "x.jsonl"), "--mix-original", "1.5", check=False)
    assert p.returncode == 2 and "between 0 and 1" in p.stderr and not (tmp_path / "x.jsonl").exists()
    p = cli("export", str(tmp_path), "--to", "jsonl", str(tmp_path / "y.jsonl"), check=False)
    assert p.returncode == 2 and "no part-*.parquet" in p.stderr


def _many(tmp_path: Path, n: int, reverse: bool = False) -> Path:
    rows = [{"id": f"img-{i:05d}", "source": f"/nowhere/{i}.jpg", "method": "recap", "caption": f"new {i}",
             "org_caption": None if i % 10 == 0 else f"old {i}", "error": None} for i in range(n)]
    if reverse:  # another order, another sharding: the choice per id must not change
        rows.reverse()
        write_output(tmp_path, rows[: n // 3], part=0)
        return write_output(tmp_path, rows[n // 3:], part=1)
    return write_output(tmp_path, rows)


def _choices(out: Path, dest: Path, p: float, seed: int) -> dict[str, str]:
    export(out, dest, ExportOptions(mix_original=p, seed=seed, overwrite=True))
    return {r["id"]: r["text_source"] for r in map(json.loads, dest.read_text().splitlines())}


@pytest.mark.parametrize("p", [0.8, 0.1])
def test_mix_ratio_within_a_binomial_bound(tmp_path, p):
    n = 10_000
    out = _many(tmp_path / "out", n)
    got = _choices(out, tmp_path / "a.jsonl", p, seed=7)
    with_original = [f"img-{i:05d}" for i in range(n) if i % 10]
    assert all(got[f"img-{i:05d}"] == "recaption" for i in range(0, n, 10))  # no original: always the new one
    k = sum(got[i] == "original" for i in with_original)
    m = len(with_original)
    assert abs(k - m * p) <= 4 * math.sqrt(m * p * (1 - p)), (k, m * p)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    assert all(r["text"] == (r["org_caption"] if r["text_source"] == "original" else r["caption"]) for r in rows.values())


def test_same_seed_same_choice_per_id(tmp_path):
    n = 10_000
    a = _choices(_many(tmp_path / "a", n), tmp_path / "a.jsonl", 0.5, seed=3)
    b = _choices(_many(tmp_path / "b", n, reverse=True), tmp_path / "b.jsonl", 0.5, seed=3)
    assert a == b
    c = _choices(_many(tmp_path / "a", n), tmp_path / "c.jsonl", 0.5, seed=4)
    differ = sum(a[i] != c[i] for i in a)
    assert 0.4 * 0.9 * n < differ < 0.6 * 0.9 * n  # independent coins differ half the time (9,000 with an original)
    assert [takes_original(i, 3, 0.5) for i in ("x", "y", "z")] == [takes_original(i, 3, 0.5) for i in ("x", "y", "z")]
    assert not takes_original("x", 3, 0.0) and takes_original("x", 3, 1.0)
