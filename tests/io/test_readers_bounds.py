"""A .jsonl input table with a row over 64 MiB: that row is an error row naming its size, read
past in pieces (never held, never parsed); the rows after it are read, planned and captioned,
and a rerun writes nothing twice."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from fixtures_engine import ScriptedBackend

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.io.lines import MAX_TABLE_ROW_BYTES
from pixscribe.testing.methods import method_with


def test_a_row_over_the_bound_is_an_error_row_and_the_run_goes_on(tmp_path, photo_dir):
    photo = sorted(Path(photo_dir).rglob("*.jpg"))[0]
    table = tmp_path / "rows.jsonl"
    huge = MAX_TABLE_ROW_BYTES + 1000
    with table.open("w") as f:
        f.write(json.dumps({"id": "a", "path": str(photo)}) + "\n\n")
        big_line = '{"id": "big", "path": "' + "x" * (huge - 30) + '"}\n'
        f.write(big_line)
        f.write(json.dumps({"id": "c", "path": str(photo)}) + "\n")
    out = tmp_path / "out"
    for _ in range(2):  # the rerun finds everything done
        cfg = RunConfig(inputs=[str(table)], output=str(out), progress=False, vlm="scripted-vlm", shard_size=2)
        Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 3 and rows["a"]["error"] is None and rows["c"]["error"] is None
    (big,) = [r for k, r in rows.items() if k not in ("a", "c")]
    assert big["source"] == f"{table}#row=1"
    assert big["error"] == (f"input: {table}#row=1: a row of {len(big_line):,} bytes (line 3) is over the limit of "
                            f"{MAX_TABLE_ROW_BYTES:,} bytes a jsonl row may hold; put large images in files named by "
                            "a path column")
