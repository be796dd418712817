"""Readers on real files made here: folders, lists, globs, webdataset tars, parquet,
jsonl and saved Hugging Face datasets, with real photos from pixscribe.testing."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pixscribe.io import plan_shards
from pixscribe.io.readers import Shard
from pixscribe.record import InputError, Record
from pixscribe.testing import sample_photo


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Real photos encoded once: name -> JPEG bytes (small, to keep tests fast)."""
    out = {}
    for n in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "grace_hopper"):
        im = sample_photo(n)
        im.thumbnail((128, 128))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out[n] = buf.getvalue()
    return out


def png_bytes(jpeg: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, "PNG")
    return buf.getvalue()


def all_records(shards: list[Shard]) -> list[Record]:
    return [r for s in shards for r in s.records()]


def payload(rec: Record) -> bytes:
    assert (rec.data is None) != (rec.load is None), "exactly one of data/load must be set"
    return rec.data if rec.data is not None else rec.load()


def decodes(b: bytes) -> tuple[int, int]:
    im = Image.open(io.BytesIO(b))
    im.load()
    return im.size


# ---- folders, lists, globs -------------------------------------------------------------
@pytest.fixture
def folder(tmp_path: Path, photos) -> Path:
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    (root / "a.jpg").write_bytes(photos["astronaut"])
    (root / "B.JPEG").write_bytes(photos["chelsea"])
    (root / "sub" / "c.png").write_bytes(png_bytes(photos["coffee"]))
    (root / "sub" / "deeper" / "d.JpG").write_bytes(photos["rocket"])
    Image.open(io.BytesIO(photos["motorcycle"])).save(root / "sub" / "e.webp", "WEBP")
    (root / ".secret.jpg").write_bytes(photos["grace_hopper"])  # hidden file: ignored
    (root / ".hidden_dir" / "f.jpg").write_bytes(photos["grace_hopper"])  # hidden dir: ignored
    (root / "notes.md").write_text("not an image")
    (root / "meta.json").write_text("{}")
    return root


def test_folder_recursive_mixed_extensions_hidden_ignored(folder: Path, photos):
    shards = plan_shards([str(folder)])
    assert len(shards) == 1 and shards[0].index == 0 and shards[0].count == 5
    recs = list(shards[0].records())
    names = [os.path.relpath(r.source, folder) for r in recs]
    assert names == sorted(names)
    assert set(names) == {"a.jpg", "B.JPEG", "sub/c.png", "sub/deeper/d.JpG", "sub/e.webp"}
    assert [r.index for r in recs] == list(range(5))
    assert all(r.shard == 0 and r.key is None and r.error is None and r.columns == {} for r in recs)
    assert all(os.path.isabs(r.source) for r in recs)
    by = {os.path.basename(r.source): r for r in recs}
    assert payload(by["a.jpg"]) == photos["astronaut"]
    assert payload(by["d.JpG"]) == photos["rocket"]
    assert decodes(payload(by["e.webp"]))[0] > 0


def test_list_file_relative_paths_comments_and_urls(tmp_path: Path, folder: Path, photos):
    lst = folder / "sub" / "list.txt"
    lst.write_text(
        "# my list\n\n"
        "c.png\n"
        "  ../a.jpg  \n"
        f"{folder / 'B.JPEG'}\n"
        "missing.jpg\n"
        "https://example.invalid/x.jpg\n"
        "c.png\n"  # duplicate: dropped
    )
    recs = all_records(plan_shards([str(lst)]))
    srcs = [r.source for r in recs]
    assert srcs == [
        str(folder / "sub" / "c.png"),
        str(folder / "a.jpg"),
        str(folder / "B.JPEG"),
        str(folder / "sub" / "missing.jpg"),
        "https://example.invalid/x.jpg",
    ]
    assert payload(recs[1]) == photos["astronaut"]
    # a missing list entry is not a planning error: it fails when loaded, naming the file
    with pytest.raises(InputError, match="missing.jpg: no such file"):
        recs[3].load()


def test_globs_sorted_recursive_and_dedup(folder: Path):
    recs = all_records(plan_shards([str(folder / "**" / "*.png"), str(folder / "*.jpg"), str(folder / "sub" / "?.png")]))
    assert [os.path.relpath(r.source, folder) for r in recs] == ["sub/c.png", "a.jpg"]
    (folder / "sub" / "only_sidecars").mkdir()
    (folder / "sub" / "only_sidecars" / "x.json").write_text("{}")
    everything = all_records(plan_shards([str(folder / "**")]))
    assert len(everything) == 5  # dirs walked, sidecars (.md/.json) skipped, duplicates removed
    with pytest.raises(InputError, match=r"nomatch\*\.jpg: the pattern matched no files"):
        plan_shards([str(folder / "nomatch*.jpg")])


def test_shards_split_by_size_deterministically(folder: Path, photos):
    extra = folder / "extra"
    extra.mkdir()
    for i in range(7):
        (extra / f"{i:02d}.jpg").write_bytes(photos["coffee"])
    a = plan_shards([str(folder)], shard_size=5)
    b = plan_shards([str(folder)], shard_size=5)
    assert [(s.index, s.name, s.count) for s in a] == [(0, "files[0:5]", 5), (1, "files[5:10]", 5), (2, "files[10:12]", 2)]
    ra, rb = all_records(a), all_records(b)
    assert [(r.source, r.shard, r.index) for r in ra] == [(r.source, r.shard, r.index) for r in rb]
    assert [(r.shard, r.index) for r in ra][4:7] == [(0, 4), (1, 0), (1, 1)]
    assert len({r.source for r in ra}) == 12


def test_missing_and_unknown_inputs_fail_clearly(tmp_path: Path):
    with pytest.raises(InputError, match=r"nope\.jpg: no such file or directory"):
        plan_shards([str(tmp_path / "nope.jpg")])
    bad = tmp_path / "data.xyz"
    bad.write_text("x")
    with pytest.raises(InputError, match=r"data\.xyz: unknown input type \.xyz"):
        plan_shards([str(bad)])
    with pytest.raises(InputError, match="no inputs"):
        plan_shards([])
    (tmp_path / "tars").mkdir()
    (tmp_path / "tars" / "0.tar").write_bytes(b"")
    with pytest.raises(InputError, match=r"tars: the folder holds no image files.*tars/\*\.tar"):
        plan_shards([str(tmp_path / "tars")])


def test_loader_missing_file_at_load_time(tmp_path: Path, photos):
    p = tmp_path / "gone.jpg"
    p.write_bytes(photos["chelsea"])
    (rec,) = all_records(plan_shards([str(p)]))
    p.unlink()
    with pytest.raises(InputError, match="gone.jpg: no such file"):
        rec.load()


# ---- webdataset tars -----------------------------------------------------------------------
def _write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                ti.mtime = 0
                tf.addfile(ti, io.BytesIO(data))


def test_webdataset_tars_with_sidecars_and_brace_range(tmp_path: Path, photos):
    import webdataset as wds

    d = tmp_path / "shards"
    d.mkdir()
    # shard 0 written with webdataset's own TarWriter
    with wds.TarWriter(str(d / "00000.tar")) as w:
        w.write({"__key__": "s0/000", "jpg": photos["astronaut"], "json": {"caption": "an astronaut", "w": 128},
                 "cls": b"3"})
        w.write({"__key__": "s0/001", "png": png_bytes(photos["chelsea"]), "txt": "a cat on a table"})
    # shard 1 written with tarfile; a key without an image is reported, not dropped
    _write_tar(d / "00001.tar", [
        ("k.2", {"jpg": photos["coffee"], "txt": b"coffee", "meta.json": b'{"a": 1}'}),  # key: up to the FIRST dot
        ("orphan", {"json": b'{"caption": "no image here"}'}),
        ("last", {"jpeg": photos["rocket"]}),
    ])
    shards = plan_shards([str(d / "{00000..00001}.tar")])
    assert [(s.index, s.count) for s in shards] == [(0, None), (1, None)]
    assert shards[0].name.endswith("00000.tar") and shards[1].name.endswith("00001.tar")
    r0 = list(shards[0].records())
    assert [r.key for r in r0] == ["s0/000", "s0/001"]
    assert r0[0].columns == {"caption": "an astronaut", "w": 128, "cls": "3"}
    assert r0[0].data == photos["astronaut"] and r0[0].load is None
    assert r0[0].source == f"{d / '00000.tar'}::s0/000.jpg"
    assert r0[1].columns == {"caption": "a cat on a table"}
    assert decodes(r0[1].data) == decodes(photos["chelsea"])
    r1 = list(shards[1].records())
    assert [r.key for r in r1] == ["k", "orphan", "last"]
    assert r1[0].columns == {"2.txt": "coffee", "2.meta.json": {"a": 1}} and r1[0].data == photos["coffee"]
    assert r1[0].source.endswith("00001.tar::k.2.jpg")
    assert r1[1].data is None and r1[1].load is None
    assert r1[1].error.startswith("input: ") and "orphan has no image member" in r1[1].error
    assert r1[2].data == photos["rocket"] and r1[2].error is None
    assert [(r.shard, r.index) for r in r1] == [(1, 0), (1, 1), (1, 2)]


def test_truncated_tar_yields_what_it_read_plus_error(tmp_path: Path, photos):
    good = tmp_path / "good.tar"
    _write_tar(good, [(f"{i:03d}", {"jpg": photos["grace_hopper"], "txt": f"c{i}".encode()}) for i in range(4)])
    blob = good.read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(blob[: int(len(blob) * 0.6)])
    recs = all_records(plan_shards([str(bad)]))
    ok = [r for r in recs if r.error is None]
    errs = [r for r in recs if r.error is not None]
    assert 1 <= len(ok) < 4
    assert all(r.data == photos["grace_hopper"] for r in ok)
    assert len(errs) == 1 and "bad.tar" in errs[0].error and "truncated" in errs[0].error
    assert errs[0].error.startswith("input: ")


# ---- tables ------------------------------------------------------------------------------
def test_parquet_bytes_with_caption_and_key_columns_kept(tmp_path: Path, photos):
    names = list(photos)
    t = pa.table({
        "key": [f"k{i}" for i in range(len(names))],
        "jpg": [photos[n] for n in names],
        "caption": [f"a photo of {n}" for n in names],
        "score": [0.5 + i for i in range(len(names))],
    })
    p = tmp_path / "t.parquet"
    pq.write_table(t, p, row_group_size=3)  # shard boundaries fall inside row groups
    shards = plan_shards([str(p)], shard_size=4)
    assert [(s.index, s.count) for s in shards] == [(0, 4), (1, 2)]
    recs = all_records(shards)
    assert [r.key for r in recs] == [f"k{i}" for i in range(6)]
    assert [r.source for r in recs] == [f"{p}#row={i}" for i in range(6)]
    assert [(r.shard, r.index) for r in recs] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    for i, r in enumerate(recs):
        assert r.data == photos[names[i]] and r.load is None
        assert r.columns == {"key": f"k{i}", "caption": f"a photo of {names[i]}", "score": 0.5 + i}
        json.dumps(r.columns)


def test_parquet_hf_style_image_dict_and_missing_image_row(tmp_path: Path, photos):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_bytes(photos["rocket"])
    t = pa.table({
        "image": [
            {"bytes": photos["chelsea"], "path": "chelsea.jpg"},
            {"bytes": None, "path": "imgs/x.jpg"},
            None,
        ],
        "id": [10, 11, 12],
    })
    p = tmp_path / "hf.parquet"
    pq.write_table(t, p)
    recs = all_records(plan_shards([str(p)]))
    assert [r.key for r in recs] == ["10", "11", "12"]
    assert recs[0].data == photos["chelsea"]
    assert recs[1].source == str(tmp_path / "imgs" / "x.jpg") and recs[1].load() == photos["rocket"]
    assert recs[2].error == f"input: {p}#row=2 has no image (expected one of image, jpg, png, path, url)"
    assert recs[2].columns == {"id": 12}


def test_parquet_without_image_column_fails_at_planning(tmp_path: Path):
    p = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"caption": ["x"]}), p)
    with pytest.raises(InputError, match="meta.parquet: the table has no image column"):
        plan_shards([str(p)])


def test_jsonl_with_relative_paths_split_into_shards(tmp_path: Path, photos):
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    names = list(photos)
    for n in names:
        (d / "img" / f"{n}.jpg").write_bytes(photos[n])
    lines = [json.dumps({"path": f"img/{n}.jpg", "caption": n, "key": f"id-{n}"}) for n in names]
    lines.insert(3, "")  # blank lines are skipped
    lines.append(json.dumps({"caption": "nothing"}))
    lines.append("{not json")
    p = d / "rows.jsonl"
    p.write_text("\n".join(lines) + "\n")
    shards = plan_shards([str(p)], shard_size=3)
    assert [(s.index, s.count) for s in shards] == [(0, 3), (1, 3), (2, 2)]
    recs = all_records(shards)
    assert len(recs) == 8
    for n, r in zip(names, recs):
        assert r.key == f"id-{n}" and r.columns["caption"] == n and r.columns["key"] == f"id-{n}"
        assert r.columns["path"] == f"img/{n}.jpg"
        assert r.source == str(d / "img" / f"{n}.jpg")
        assert r.load() == photos[n]
    assert recs[6].error.endswith("#row=6 has no image (expected one of image, jpg, png, path, url)")
    assert recs[7].error.startswith(f"input: {p}#row=7: not valid JSON")
    assert [(r.shard, r.index) for r in recs][2:4] == [(0, 2), (1, 0)]


def test_mixed_inputs_shard_order(tmp_path: Path, photos):
    (tmp_path / "a.jpg").write_bytes(photos["astronaut"])
    _write_tar(tmp_path / "s.tar", [("x", {"jpg": photos["coffee"]})])
    pq.write_table(pa.table({"png": [png_bytes(photos["chelsea"])]}), tmp_path / "t.parquet")
    shards = plan_shards([str(tmp_path / "s.tar"), str(tmp_path / "a.jpg"), str(tmp_path / "t.parquet")])
    assert [s.index for s in shards] == [0, 1, 2]
    assert shards[0].name == "files[0:1]"  # loose files first, then tars/tables in input order
    assert shards[1].name.endswith("s.tar") and "t.parquet" in shards[2].name
    recs = all_records(shards)
    assert [r.shard for r in recs] == [0, 1, 2]


# ---- saved Hugging Face datasets -----------------------------------------------------------
def test_saved_hf_dataset_with_image_feature(tmp_path: Path, photos):
    datasets = pytest.importorskip("datasets")
    names = ["astronaut", "chelsea", "coffee"]
    ds = datasets.Dataset.from_dict(
        {"img": [Image.open(io.BytesIO(photos[n])) for n in names], "caption": names, "label": [0, 1, 2]},
        features=datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string"),
                                    "label": datasets.Value("int64")}),
    )
    out = tmp_path / "hfds"
    ds.save_to_disk(str(out))
    shards = plan_shards([str(out)], shard_size=2)
    assert [(s.index, s.count) for s in shards] == [(0, 2), (1, 1)]
    recs = all_records(shards)
    assert [r.columns for r in recs] == [{"caption": n, "label": i} for i, n in enumerate(names)]
    assert [r.source for r in recs] == [f"{out}#row={i}" for i in range(3)]
    for n, r in zip(names, recs):
        assert r.error is None and r.data is not None
        assert decodes(r.data) == decodes(photos[n])

    dd = datasets.DatasetDict({"validation": ds.select([2]), "train": ds.select([0, 1])})
    out2 = tmp_path / "hfdict"
    dd.save_to_disk(str(out2))
    recs = all_records(plan_shards([str(out2)]))
    assert [(r.columns["split"], r.columns["caption"]) for r in recs] == [
        ("train", "astronaut"), ("train", "chelsea"), ("validation", "coffee")]
    assert recs[2].source == f"{out2}#split=validation&row=0"


def test_gzipped_tar_found_by_glob(tmp_path: Path, photos):
    with tarfile.open(tmp_path / "s-0.tar.gz", "w:gz") as tf:
        for key, data in (("a", photos["chelsea"]), ("b", photos["rocket"])):
            ti = tarfile.TarInfo(f"{key}.jpg")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    (tmp_path / "s-0.json").write_text("{}")  # sidecar-like stray file: not an input
    shards = plan_shards([str(tmp_path / "s-*")])
    assert len(shards) == 1 and shards[0].count is None
    recs = list(shards[0].records())
    assert [(r.key, r.data) for r in recs] == [("a", photos["chelsea"]), ("b", photos["rocket"])]


def test_brace_range_with_a_missing_member_names_it(tmp_path: Path, photos):
    _write_tar(tmp_path / "00000.tar", [("a", {"jpg": photos["coffee"]})])
    with pytest.raises(InputError, match=r"00001\.tar: no such file or directory \(from .*\{00000\.\.00001\}\.tar\)"):
        plan_shards([str(tmp_path / "{00000..00001}.tar")])


def test_error_rows_keep_source_key_and_columns(tmp_path: Path, photos):
    """Rows that cannot give an image are records with an input error, not dropped rows."""
    tar = tmp_path / "dup.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in (("a.jpg", photos["coffee"]), ("a.jpg", photos["rocket"]), ("b.json", b"{oops"),
                           ("b.jpg", photos["coffee"])):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    r = all_records(plan_shards([str(tar)]))
    # the sample keeps its key and comes first; the extra member is an error row after it (the
    # engine gives it its own id, a~2), so no input is dropped
    assert [(x.key, x.error is None) for x in r] == [("a", True), ("a", False), ("b", False)]
    assert r[0].data == photos["coffee"]
    assert r[1].source == f"{tar}::a.jpg#2" and "a second member with key 'a'" in r[1].error
    assert r[2].source == f"{tar}::b.json" and "sidecar is not valid JSON" in r[2].error

    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"not a tar at all" * 10)
    (r,) = all_records(plan_shards([str(not_tar)]))
    assert r.source == str(not_tar) and r.error.startswith("input: ") and "cannot open the tar" in r.error

    table = tmp_path / "t.jsonl"
    rows = [{"url": "ftp://x/y.jpg", "key": "k0"}, {"image": 7, "note": "n"}, [1, 2]]
    table.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    r = all_records(plan_shards([str(table)]))
    assert [x.source for x in r] == [f"{table}#row={i}" for i in range(3)]
    assert r[0].key == "k0" and "the url column holds 'ftp://x/y.jpg', which is not an http(s) URL" in r[0].error
    assert r[1].columns == {"note": "n"} and "the image column holds a int, not image bytes" in r[1].error
    assert "expected a JSON object per line, got list" in r[2].error
    assert all(x.error.startswith("input: ") and x.data is None and x.load is None for x in r)
