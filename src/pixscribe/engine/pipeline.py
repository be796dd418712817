"""The local data plane: read -> prepare (decode pool, prefetched) -> stages -> writer.

CPU work overlaps model work: a producer thread walks the shards, gives every record its
id, skips what is done, and submits each record's load + decode to a pool; the engine's
thread takes finished records in order, groups them into batches and runs the method's
stages, while the pool is already decoding the next batches. The queues between them are
bounded, so memory stays flat whatever the dataset size.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import queue
import sys
import threading
from typing import Any

from ..record import Record, keyless_id
from .apply import MethodRunner
from .prepare import DecodeCache, Identifier, prepare
from .run import Run, ShardWork
from .writer import Writer

_DONE = object()


class _Skip:
    __slots__ = ("record",)

    def __init__(self, record: Record):
        self.record = record


class _ShardEnd:
    __slots__ = ("shard", "exhausted")

    def __init__(self, shard: int, exhausted: bool):
        self.shard = shard
        self.exhausted = exhausted


class Producer:
    """Walks the shards in order and hands records to the decode pool (see module doc)."""

    def __init__(self, run: Run, works: list[ShardWork], pool: cf.ThreadPoolExecutor, out: "queue.Queue[Any]",
                 stop: threading.Event):
        self.thread = threading.Thread(target=self.produce, daemon=True, name="pixscribe-read")
        self.run_ = run
        self.works = works
        self.pool = pool
        self.out = out
        self.stop = stop
        self.ident = Identifier(run.method)
        self.decodes = DecodeCache()  # identical bytes (an image repeated on rows) decoded once

    def produce(self) -> None:
        try:
            for w in self.works:
                if self.stop.is_set():
                    break
                self._shard(w)
        finally:
            self._put(_DONE, force=True)

    def _shard(self, w: ShardWork) -> None:
        self.ident.new_shard()
        exhausted = True
        try:
            for rec in w.shard.records():
                if self.stop.is_set():
                    exhausted = False
                    break
                self.ident(rec)
                if rec.id in w.skip:
                    self._put(_Skip(rec))
                    continue
                self._put(self.pool.submit(prepare, rec, self.run_.method, self.run_.config, w.own,
                                           self.run_.priors, self.decodes))
        except Exception as exc:  # the reader itself failed mid-shard: one error row
            bad = Record(source=w.shard.name, shard=w.index)
            bad.fail(exc, "input")
            bad.id = keyless_id(f"{w.shard.name}#reader-failure")
            self._put(_resolved(bad))
        self._put(_ShardEnd(w.index, exhausted))

    def _put(self, item: Any, force: bool = False) -> None:
        while True:
            if self.stop.is_set() and not force:
                if isinstance(item, cf.Future):
                    item.cancel()
                return
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class Pipeline:
    """Runs ``works`` through the method in this process; stops cleanly on Ctrl-C, SIGTERM
    (the caller turns it into KeyboardInterrupt) or a RunStop from a stage."""

    def __init__(self, run: Run, runner: MethodRunner, writer: Writer, batch_size: int, inflight: int):
        self.run = run
        self.cfg = run.config
        self.runner = runner
        self.writer = writer
        self.batch_size = batch_size
        self.inflight_max = inflight
        self.stop = threading.Event()
        self.touched: set[int] = set()
        self.processed = 0
        self._sha_seen: dict[int, set[str]] = collections.defaultdict(set)
        self._batch: list[Record] = []
        self._batch_shard: int | None = None
        self._inflight: "collections.deque[tuple[int, list[Record], cf.Future]]" = collections.deque()
        self._stage_pool = (cf.ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="pixscribe-stage")
                            if inflight > 1 else None)

    def execute(self, works: list[ShardWork]) -> None:
        cfg = self.cfg
        q: "queue.Queue[Any]" = queue.Queue(maxsize=max(2, self.batch_size * cfg.prefetch_batches))
        pool = cf.ThreadPoolExecutor(max_workers=cfg.decode_workers, thread_name_prefix="pixscribe-decode")
        producer = Producer(self.run, works, pool, q, self.stop)
        # the engine's thread drives the model; hand it the GIL quickly when it wakes
        prev_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(prev_switch, 0.0005))
        producer.thread.start()
        try:
            self._consume(q)
            self._flush()
            self._retire(0)
        finally:
            self.stop.set()
            self._salvage()
            if self._stage_pool is not None:  # on Ctrl-C, batches still in flight are redone later
                self._stage_pool.shutdown(wait=False, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
            _drain(q)
            producer.thread.join(timeout=10)
            sys.setswitchinterval(prev_switch)
            self.run.summary.duplicate_keys += producer.ident.duplicate_keys

    def _consume(self, q: "queue.Queue[Any]") -> None:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _ShardEnd):
                self._end_shard(item)
                continue
            if self.stop.is_set():  # --limit reached: the rest is redone by a later run
                if isinstance(item, cf.Future):
                    item.cancel()
                continue
            rec = item.result() if isinstance(item, cf.Future) else item
            if isinstance(rec, _Skip):
                self.run.summary.rows_skipped += 1
                continue
            self._add(rec)

    def _add(self, rec: Record) -> None:
        if rec.sha256:
            seen = self._sha_seen[rec.shard]
            if rec.sha256 in seen:
                self.run.summary.duplicate_images += 1
            seen.add(rec.sha256)
        if self._batch and self._batch_shard != rec.shard:
            self._flush()
        self._batch_shard = rec.shard
        self._batch.append(rec)
        self.touched.add(rec.shard)
        self.processed += 1
        if len(self._batch) >= self.batch_size:
            self._flush()
        if self.cfg.limit is not None and self.processed >= self.cfg.limit:
            self._flush()
            self.stop.set()

    def _end_shard(self, end: _ShardEnd) -> None:
        if self._batch and self._batch_shard == end.shard:
            self._flush()
        self._retire(0)
        self._sha_seen.pop(end.shard, None)
        if end.shard in self.touched or end.exhausted:
            complete = end.exhausted and not self.stop.is_set()
            self.writer.end_shard(end.shard, complete)
            self.touched.discard(end.shard)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        assert self._batch_shard is not None
        if self._stage_pool is None:
            self.runner(batch)
            self.writer.batch(self._batch_shard, batch)
            return
        self._inflight.append((self._batch_shard, batch, self._stage_pool.submit(self.runner, batch)))
        self._retire(self.inflight_max - 1)

    def _retire(self, keep: int) -> None:
        while len(self._inflight) > keep:
            shard, recs, fut = self._inflight.popleft()
            fut.result()
            self.writer.batch(shard, recs)

    def _salvage(self) -> None:
        """On a stop (Ctrl-C, a RunStop from a later batch): write the batches in flight that
        did finish, so no computed row is thrown away; the others are redone by a later run."""
        while self._inflight:
            shard, recs, fut = self._inflight.popleft()
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.writer.batch(shard, recs)


def _resolved(rec: Record) -> cf.Future:
    f: cf.Future = cf.Future()
    f.set_result(rec)
    return f


def _drain(q: "queue.Queue[Any]") -> None:
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, cf.Future):
            item.cancel()
