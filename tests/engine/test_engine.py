"""The local executor: output layout, error rows, resume, sharding, formats, retry.

These drive the real engine (readers, decode pool, writers, state) with a scripted
backend whose answers depend on the decoded pixels, so what is asserted is real.
The real transformers path is in test_e2e_cli.py.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from fixtures_engine import ScriptedBackend
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.engine.state import ConfigMismatch
from pixscribe.testing.methods import method_with
from pixscribe.record import keyless_id


def run(inputs, out, backend=None, **kw):
    cfg = RunConfig(inputs=[str(i) for i in inputs], output=str(out), progress=False, vlm="scripted-vlm", **kw)
    backend = backend or ScriptedBackend()
    summary = Runner(cfg, method_with(cfg, backend)).run()
    return summary, backend


def read(out: Path):
    return pq.read_table(out).to_pylist()


def test_folder_of_photos_to_parquet(photo_dir, tmp_path):
    out = tmp_path / "out"
    summary, backend = run([photo_dir], out, batch_size=4)
    rows = read(out)
    assert len(rows) == 6 and summary.rows_written == 6 and summary.error_rows == 0
    assert len({r["id"] for r in rows}) == 6
    assert max(backend.batches) == 4  # batched
    for r in rows:
        assert r["id"] == keyless_id(r["source"]) and len(r["sha256"]) == 64  # one row per input
        assert r["method"] == "recap" and r["error"] is None
        assert r["caption"] == r["re_caption"] and r["caption"].startswith(f"an image of {r['width']}x{r['height']}")
        assert r["model"] == "scripted-vlm" and r["prompt_sha"] and r["seconds"] is not None
        prov = json.loads(r["provenance"])
        assert prov["re_caption"]["stage"] == "recap" and prov["re_caption"]["prompt_sha"] == r["prompt_sha"]
    # DuckDB reads the same directory
    con = duckdb.connect()
    n, uniq = con.execute(f"select count(*), count(distinct id) from read_parquet('{out}/*.parquet')").fetchone()
    assert (n, uniq) == (6, 6)
    run_json = json.loads((out / "_run.json").read_text())
    assert run_json["config"]["method"] == "recap" and run_json["pixscribe_version"]
    assert run_json["method"]["stages"][0]["model"] == "scripted-vlm"


def test_hostile_inputs_give_rows_not_crashes(hostile_dir, tmp_path):
    d, files = hostile_dir
    out = tmp_path / "out"
    summary, _ = run([d], out, batch_size=3)
    rows = {Path(r["source"]).name: r for r in read(out)}
    assert len(rows) == len(files)
    errs = {name: r["error"] for name, r in rows.items() if r["error"]}
    assert set(errs) == {"truncated.jpg", "zero.jpg", "text.jpg", "bomb.png"}
    assert all(e.startswith("decode: ") for e in errs.values())
    assert "max-image-pixels" in errs["bomb.png"] or "bomb" in errs["bomb.png"]
    assert summary.errors == {"decode": 4}
    ok = {n: r for n, r in rows.items() if not r["error"]}
    assert ok["exif_rotated.jpg"]["width"] < ok["exif_rotated.jpg"]["height"]  # 640x427 rotated to portrait
    assert ok["thin.png"]["width"] >= 1 and ok["thin.png"]["height"] >= 1
    assert ok["animated.gif"]["caption"].endswith("mean [255, 0, 0]")  # first frame
    assert ok["palette_alpha.png"]["caption"]  # decoded to RGB
    for r in rows.values():
        assert r["id"]


def test_resume_after_limit_skips_done_ids(photo_dir, tmp_path):
    out = tmp_path / "out"
    s1, _ = run([photo_dir], out, limit=4, batch_size=2)
    assert s1.rows_written == 4
    assert len(read(out)) == 4  # a stopped shard is still readable
    s2, b2 = run([photo_dir], out, batch_size=2)
    assert s2.rows_written == 2 and s2.rows_skipped == 4
    rows = read(out)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    s3, b3 = run([photo_dir], out)
    assert s3.rows_written == 0 and s3.shards_done_before == 1 and b3.batches == []


def test_changed_config_is_refused_unless_overwrite(photo_dir, tmp_path):
    out = tmp_path / "out"
    run([photo_dir], out)
    with pytest.raises(ConfigMismatch, match="prompt"):
        cfg = RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, prompt="Say one word.")
        Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    cfg = RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, prompt="Say one word.", overwrite=True)
    s = Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    assert s.rows_written == 6 and len(read(out)) == 6


def test_shards_union_equals_full_run(photo_dir, hostile_dir, tmp_path):
    d, _ = hostile_dir
    full = tmp_path / "full"
    run([photo_dir, d], full, shard_size=3)
    full_ids = sorted(r["id"] for r in read(full))
    parts = []
    shard_out = tmp_path / "sharded"
    for k in range(3):
        run([photo_dir, d], shard_out, shard_size=3, shard=f"{k}/3")
    # each task wrote only its own shards, into one directory
    files = sorted(p.name for p in shard_out.glob("part-*.parquet"))
    assert len(files) == len(list(full.glob("part-*.parquet"))) >= 5
    parts = [r["id"] for r in read(shard_out)]
    assert sorted(parts) == full_ids and len(parts) == len(set(parts))


@pytest.mark.parametrize("fmt", ["jsonl", "tar"])
def test_other_formats(photo_dir, tmp_path, fmt):
    out = tmp_path / "out"
    run([photo_dir], out, format=fmt)
    (part,) = out.glob(f"part-*.{fmt}")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in part.read_text().splitlines()]
    else:
        with tarfile.open(part) as tar:
            names = tar.getnames()
            rows = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
            assert sum(n.endswith(".txt") for n in names) == 6
    assert len(rows) == 6 and all(r["caption"] for r in rows)


def test_retry_errors_redoes_only_failed_rows(photo_dir, tmp_path):
    out = tmp_path / "out"
    s0, b0 = run([photo_dir], out)
    ids = sorted(r["id"] for r in read(out))
    bad = set(ids[:2])
    out2 = tmp_path / "out2"
    s1, _ = run([photo_dir], out2, backend=ScriptedBackend(fail_ids=bad))
    assert s1.errors == {"generate": 2}
    errs = {r["id"]: r["error"] for r in read(out2) if r["error"]}
    assert set(errs) == bad and all("500" in e for e in errs.values())
    s2, b2 = run([photo_dir], out2)  # plain rerun: nothing to do
    assert s2.rows_written == 0
    s3, b3 = run([photo_dir], out2, retry_errors=True)
    assert s3.rows_written == 2 and sum(b3.batches) == 2
    rows = read(out2)
    assert len(rows) == 6 and all(r["error"] is None for r in rows)


def test_input_columns_kept_and_caption_renamed(tmp_path):
    import io

    import pyarrow as pa

    from pixscribe.testing import sample_photo

    blobs = []
    for n in ("astronaut", "coffee"):
        b = io.BytesIO()
        sample_photo(n).save(b, "JPEG")
        blobs.append(b.getvalue())
    t = pa.table({"key": ["k1", "k2"], "jpg": blobs, "caption": ["an astronaut", "a cup"], "url": ["u1", "u2"]})
    pq.write_table(t, tmp_path / "in.parquet")
    out = tmp_path / "out"
    run([tmp_path / "in.parquet"], out)
    rows = sorted(read(out), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == ["k1", "k2"]
    assert [r["org_caption"] for r in rows] == ["an astronaut", "a cup"]
    assert [r["key"] for r in rows] == ["k1", "k2"] and [r["url"] for r in rows] == ["u1", "u2"]
    assert "caption" in rows[0] and rows[0]["caption"].startswith("an image of")


def test_remote_code_is_off_by_default():
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.cli import app
    from pixscribe.experts.detection import GroundingDinoExpert
    from pixscribe.experts.florence import FlorenceExpert

    cfg = RunConfig()
    assert cfg.trust_remote_code is False
    assert TransformersBackend.from_config(cfg).trust_remote_code is False
    assert GroundingDinoExpert.from_config(cfg).trust_remote_code is False
    assert FlorenceExpert.from_config(cfg).trust_remote_code is False
    import typer.main

    params = {p.name: p for p in typer.main.get_command(app).commands["caption"].params}
    assert params["trust_remote_code"].default is False
