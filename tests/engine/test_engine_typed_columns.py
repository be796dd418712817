"""A method's typed columns (a list of structs) are written with their Arrow type, survive
part finalisation and the widening of a part when a column appears late, read back for reuse
(parquet and jsonl), and a field a stage set to None does not block its reuse."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_engine import write_sample_photos
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import Method, Stage

ITEM = pa.struct([("name", pa.string()), ("box", pa.list_(pa.float64()))])


class ItemsStage(Stage):
    name = "items"
    provides = ("items", "maybe")

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, records):
        for r in records:
            self.calls += 1
            items = [{"name": f"{r.id}-{i}", "box": [0.0, 0.0, float(r.width), float(i)]} for i in range(2)]
            r.set("items", items, stage=self.name, seconds=0.01)
            r.set("maybe", None if r.width % 2 else "even", stage=self.name)
        return records


def method(stage: ItemsStage) -> Method:
    return Method("typed", [stage], ["items", "maybe"], None, column_types={"items": pa.list_(ITEM)})


def _inputs(tmp_path):
    photos = write_sample_photos(tmp_path / "photos")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": f"a{i}", "path": str(p)}) + "\n" for i, p in enumerate(photos[:3])))
    b.write_text("".join(json.dumps({"id": f"b{i}", "path": str(p), "license": "cc"}) + "\n"
                         for i, p in enumerate(photos[3:5])))  # a column only the second file has
    return [str(a), str(b)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_typed_column_is_written_typed_and_reused(tmp_path, fmt):
    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    cfg = RunConfig(inputs=inputs, output=str(out), progress=False, format=fmt, allow_any_path=True)
    st = ItemsStage()
    s = Runner(cfg, method(st)).run()
    assert s.rows_written == 5 and s.error_rows == 0 and st.calls == 5
    parts = sorted(out.glob("part-*"))
    assert len(parts) == 2
    if fmt == "parquet":
        for p in parts:  # both parts, the first one widened for `license`, keep the type
            sch = pq.read_schema(p)
            assert sch.field("items").type == pa.list_(ITEM) and "license" in sch.names
        rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    else:
        rows = {r["id"]: r for p in parts for r in map(json.loads, p.read_text().splitlines())}
    assert rows["a0"]["items"][1] == {"name": "a0-1", "box": [0.0, 0.0, float(rows["a0"]["width"]), 1.0]}
    assert {r["maybe"] for r in rows.values()} <= {None, "even"} and None in {r["maybe"] for r in rows.values()}
    # start over: every row's stage is reused (the None field included), nothing recomputed
    st2 = ItemsStage()
    s2 = Runner(cfg.model_copy(update={"overwrite": True}), method(st2)).run()
    assert st2.calls == 0 and s2.stages["items"]["reused"] == 5
    again = (pq.read_table(out).to_pylist() if fmt == "parquet"
             else [json.loads(x) for p in sorted(out.glob("part-*")) for x in p.read_text().splitlines()])
    assert {r["id"]: (r["items"], r["maybe"]) for r in again} == {k: (r["items"], r["maybe"]) for k, r in rows.items()}
