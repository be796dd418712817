"""A run that stops (RunStop) keeps every batch that finished, even one that finished after
the batch that stopped it started: with several batches in flight, an early batch whose
request is being retried can still be running when later ones are done."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import Method, Stage
from pixscribe.record import RunStop


class _FirstBatchStops(Stage):
    """Three batches in flight; the first waits until the next two are done, then stops the run."""

    name = "note"
    provides = ("note",)
    max_inflight_batches = 3

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()
        self.others_done = threading.Event()
        self.done = 0

    def __call__(self, records):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.others_done.wait(30)
            raise RunStop("the endpoint went away")
        for r in records:
            r.set("note", "ok", stage=self.name, seconds=0.0)
        with self.lock:
            self.done += 1
            if self.done >= 2:
                self.others_done.set()
        return records


def test_batches_finished_behind_a_stopping_one_are_written(photo_dir, tmp_path):
    out = tmp_path / "out"
    st = _FirstBatchStops()
    cfg = RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, batch_size=2, flush_rows=1)
    s = Runner(cfg, Method("notes", [st], ["note"], "note")).run()
    assert s.stopped and "went away" in s.stopped
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4, "the two batches that finished were thrown away"
    assert all(r["note"] == "ok" and r["error"] is None for r in rows)
    assert len({r["id"] for r in rows}) == 4
    # the rerun does only the two rows of the batch that stopped
    st2 = _FirstBatchStops()
    st2.calls = 1  # nothing stops this time
    Runner(cfg, Method("notes", [st2], ["note"], "note")).run()
    assert len(pq.read_table(out)) == 6 and st2.calls == 2
