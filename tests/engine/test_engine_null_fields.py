"""A stage may provide a field whose value is null (``None``): the row keeps it, and a rerun
reuses the stage (an earlier row's null is a value, not a missing field)."""

from __future__ import annotations

import pyarrow.parquet as pq

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import Method, Stage


class _MaybeNote(Stage):
    """Sets ``note`` to None for landscape images, else a string; counts its calls."""

    name = "note"
    provides = ("note",)

    def __init__(self):
        self.calls = 0

    def __call__(self, records):
        self.calls += len(records)
        for r in records:
            r.set("note", None if r.width >= r.height else "portrait", stage=self.name, seconds=0.0)
        return records


def _run(photo_dir, out, **kw):
    st = _MaybeNote()
    cfg = RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, **kw)
    s = Runner(cfg, Method("notes", [st], ["note"], "note")).run()
    return s, st


def test_a_null_field_is_reused_on_overwrite(photo_dir, tmp_path):
    out = tmp_path / "out"
    _, st1 = _run(photo_dir, out)
    rows = pq.read_table(out).to_pylist()
    assert st1.calls == 6 and any(r["note"] is None for r in rows) and any(r["note"] for r in rows)
    s2, st2 = _run(photo_dir, out, overwrite=True)
    assert st2.calls == 0, "rows whose stage gave null were computed again"
    assert s2.stages["note"] == {"computed": 0, "reused": 6, "failed": 0, "seconds": 0.0}
    assert sorted(map(str, (r["note"] for r in pq.read_table(out).to_pylist()))) == sorted(
        map(str, (r["note"] for r in rows)))
