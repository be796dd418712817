"""A method may name its rows from an input column (``Method.id_column``): one row per region
is named by its ``region_id`` even when every row repeats the image's ``id``; rows without it
fall back to the key (a repeated key gets ``~N``); a rerun skips them all by that id."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from fixtures_engine import ScriptedBackend, write_sample_photos
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.testing.methods import method_with


def test_rows_are_named_by_the_methods_id_column(tmp_path):
    photo = write_sample_photos(tmp_path / "p")[0]
    rows = [{"id": "img1", "region_id": f"r{i}", "path": str(photo)} for i in range(3)]
    rows += [{"id": "img1", "path": str(photo)}, {"id": "img1", "region_id": "", "path": str(photo)}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig(inputs=[str(src)], output=str(tmp_path / "out"), progress=False, vlm="scripted",
                    allow_any_path=True)
    m = method_with(cfg, ScriptedBackend())
    m.id_column = "region_id"
    s = Runner(cfg, m).run()
    assert s.rows_written == 5
    ids = sorted(r["id"] for r in pq.read_table(tmp_path / "out").to_pylist())
    assert ids == ["img1", "img1~2", "r0", "r1", "r2"]  # no region_id (or an empty one): the key
    m2 = method_with(cfg, ScriptedBackend())
    m2.id_column = "region_id"
    s2 = Runner(cfg, m2).run()
    assert s2.rows_written == 0 and s2.rows_skipped == 5
