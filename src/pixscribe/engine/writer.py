"""The writer thread: rows -> arrow tables -> atomic batch files, and shard finalisation on
its own thread, so the model never waits on the disk.

Rows of a shard are buffered and written as one batch file every ``flush_rows`` rows or
``flush_seconds`` seconds, whichever comes first (a real timer: a quiet shard is flushed
even when no new batch arrives), so a crash redoes at most that much.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from typing import Any, Callable

from ..api.stage import Method
from ..record import Record, error_kind
from .run import Run
from .summary import Progress, Summary

_TICK = 0.5


class Writer:
    def __init__(self, run: Run, method: Method, summary: Summary, progress: Progress,
                 on_batch: Callable[[list[Record]], None] | None = None):
        self.run = run
        self.method = method
        self.summary = summary
        self.progress = progress
        self.on_batch = on_batch
        self.flush_rows = run.config.flush_rows
        self.flush_seconds = run.config.flush_seconds
        self._q: "queue.Queue[Any]" = queue.Queue(maxsize=4)
        self._pending: dict[int, list[Any]] = {}
        self._pending_rows: dict[int, int] = {}
        self._since: dict[int, float] = {}
        self._finalizer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixscribe-finalize")
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pixscribe-write")

    # ---- the engine's side -------------------------------------------------------------
    def start(self) -> "Writer":
        self._thread.start()
        return self

    def batch(self, shard: int, records: list[Record]) -> None:
        self._put(("batch", shard, records))

    def end_shard(self, shard: int, complete: bool) -> None:
        self._put(("end", shard, complete))

    def _put(self, job: Any) -> None:
        if self.errors:
            raise self.errors[0]
        self._q.put(job)

    def close(self) -> None:
        """Flush everything, finish pending finalisations (errors stay in ``errors``)."""
        self._q.put(None)
        self._thread.join()
        self._finalizer.shutdown(wait=True)

    # ---- the thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                job = self._q.get(timeout=_TICK)
            except queue.Empty:
                self._guard(self._flush_old)
                continue
            if job is None:
                self._guard(lambda: [self._flush(s) for s in list(self._pending)])
                return
            if not self.errors:
                self._guard(lambda: self._do(job))

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as exc:  # surfaced on the engine's thread
            self.errors.append(exc)

    def _do(self, job: Any) -> None:
        if job[0] == "batch":
            _, shard, recs = job
            self._add(shard, recs)
            if self.on_batch:
                self.on_batch(recs)
            self.progress.advance(len(recs))
        else:
            _, shard, complete = job
            self._flush(shard)
            self._finalizer.submit(self._finalize, shard, complete)

    def _finalize(self, shard: int, complete: bool) -> None:
        self._guard(lambda: self.run.finish(shard, complete))

    def _add(self, shard: int, batch: list[Record]) -> None:
        from ..io.writers import rows_to_table

        m = self.method
        rows = [r.to_row(m.name, m.caption_field, m.columns) for r in batch]
        order = self.run.columns
        extra = [c for r in rows for c in r if c not in order]
        table = rows_to_table(rows, order + list(dict.fromkeys(extra)), m.column_types)
        self._pending.setdefault(shard, []).append(table)
        self._pending_rows[shard] = self._pending_rows.get(shard, 0) + table.num_rows
        self._since.setdefault(shard, time.monotonic())
        if self._pending_rows[shard] >= self.flush_rows:
            self._flush(shard)
        self.summary.rows_written += len(batch)
        for r in batch:
            self.summary.count_error(error_kind(r.error))

    def _flush_old(self) -> None:
        now = time.monotonic()
        for shard, t in list(self._since.items()):
            if now - t >= self.flush_seconds:
                self._flush(shard)

    def _flush(self, shard: int) -> None:
        from ..io.writers import concat_tables

        tables = self._pending.pop(shard, None)
        self._pending_rows.pop(shard, None)
        self._since.pop(shard, None)
        if tables:
            self.run.check_lease(shard)
            self.run.state.append_batch(shard, concat_tables(tables))
