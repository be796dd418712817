"""The Ray executor's driver loop: shards in, batches through the cluster, rows to the writer.

    read_shard (streaming task per shard) -> prepare_chunk (CPU task per batch)
        -> stage group 1 (actor pool) -> ... -> stage group N -> the driver's Writer

The driver holds object references, not data, until a batch leaves the last group: then
it fetches the rows and hands them to the same :class:`~pixscribe.engine.writer.Writer` as
the local executor (atomic batch files under the shard's claim, lease checks, flushes,
finalisation), so the output directory's markers stay the one source of truth.

Backpressure: at most ``max_batches`` batches are between a read and the writer; a read
generator is only advanced below that (and Ray pauses it a couple of chunks ahead), so
memory stays bounded by batches, not by the dataset. A shard is finished when its read
has ended and none of its batches is still out.

Failures: Ray retries a read or decode task whose worker died; a replica that dies is
restarted by Ray and its batches go back to the queue (see pool.py). A batch charged
``MAX_ATTEMPTS`` deaths (while it ran alone) is split into single records; a record charged
as many is an error row and the rest complete. A RunStop raised in a stage stops the run.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from ...record import Record, RunStop
from ..run import Run, ShardWork
from ..writer import Writer
from .pool import Pool, Replica, _get_cause
from .worker import RunInfo, ShardEnd, StageShape, fail_record

MAX_ATTEMPTS = 2
MAX_READY_FAILURES = 20  # a replica Ray cannot bring back (its node gone for good)
_LOST = ("ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError", "ObjectFetchTimedOutError",
         "ReferenceCountingAssertionError", "ObjectReconstructionFailedMaxAttemptsExceededError",
         "ObjectReconstructionFailedLineageEvictedError")


@dataclass(eq=False)
class Batch:
    shard: int
    raw: Any  # the read chunk: records with their loaders or bytes
    step: int = 0  # 0: prepare; k: stage group k
    data: Any = None  # the input of stage groups (the previous step's records)
    pick: list[int] | None = None  # only these records of the input (after a split)
    attempts: int = 0  # deaths of a replica that ran this batch alone
    suspect: bool = False  # in flight when a replica died: runs alone from now on
    recs: Any = None  # the pending result
    info: Any = None
    replica: Replica | None = None


@dataclass
class ShardState:
    work: ShardWork
    gen: Any = None
    held: Any = None  # the last item yielded: a chunk, or the ShardEnd once the read stops
    end: ShardEnd | None = None
    own: list[str] | None = None  # this shard's batch files, for --retry-errors
    outstanding: int = 0
    lost: int = 0
    shas: set[str] = field(default_factory=set)


class Flow:
    def __init__(self, ray: Any, run: Run, writer: Writer, info: RunInfo, tasks: Any, pools: list[Pool],
                 batch_size: int, max_batches: int, max_reads: int):
        self.ray, self.run, self.writer, self.info = ray, run, writer, info
        self.read_task, self.prep_task = tasks
        self.pools = pools
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.max_reads = 1 if run.config.limit is not None else max_reads
        self.budget = run.config.limit
        self.summary = run.summary
        self.stage_counts: dict[str, dict[str, float]] = {}
        self.queues: list[collections.deque[Batch]] = [collections.deque() for _ in range(len(pools) + 1)]
        self.todo: collections.deque[ShardWork] = collections.deque()
        self.reads: dict[int, ShardState] = {}
        self.shards: dict[int, ShardState] = {}
        self.waiting: dict[Any, tuple[str, Any]] = {}
        self.live = 0  # batches between a read and the writer
        self.touched: set[int] = set()
        self.decode_tasks = 0
        self.decode_seconds = 0.0
        self.lost_batches = 0

    # ---- the loop -----------------------------------------------------------------------------------------
    def execute(self, works: list[ShardWork]) -> None:
        self.todo.extend(works)
        while True:
            self._start_reads()
            self._dispatch()
            if not self.todo and not self.reads and self.live == 0:
                return
            for kind, obj, ref in self._wait():
                getattr(self, f"_on_{kind}")(obj, ref)
            for pool, q in zip(self.pools, self.queues[1:]):
                pool.autoscale(len(q))

    def _wait(self) -> list[tuple[str, Any, Any]]:
        refs = [r for r, (kind, _) in self.waiting.items() if kind != "read" or self.live < self.max_batches]
        if not refs:
            time.sleep(0.05)
            return []
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=0.5)
        if ready:
            more, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            ready = list(dict.fromkeys(list(ready) + list(more)))
        out = []
        for r in ready:
            kind, obj = self.waiting.pop(r)
            out.append((kind, obj, r))
        return out

    # ---- reading ------------------------------------------------------------------------------------------
    def _start_reads(self) -> None:
        while self.todo and len(self.reads) < self.max_reads and (self.budget is None or self.budget > 0):
            w = self.todo.popleft()
            st = ShardState(w, own=[str(f) for f in w.own.files] if w.own is not None else None)
            st.gen = self.read_task.remote(self.info, w.spec.to_dict(), set(w.skip), self.batch_size, self.budget)
            self.reads[w.index] = self.shards[w.index] = st
            self.waiting[st.gen] = ("read", st)
        if self.budget is not None and self.budget <= 0 and not self.reads:
            self.todo.clear()  # --limit reached: the rest is for a later run

    def _on_read(self, st: ShardState, gen: Any) -> None:
        try:
            ref = next(st.gen)
        except StopIteration:
            self._read_ended(st)
            return
        if st.held is not None:
            self._new_batch(st, st.held)
        st.held = ref
        self.waiting[st.gen] = ("read", st)

    def _read_ended(self, st: ShardState) -> None:
        del self.reads[st.work.index]
        try:
            end = self.ray.get(st.held) if st.held is not None else None
        except Exception as exc:  # noqa: BLE001 - the read failed for good (Ray retried it)
            end = None
            self.summary.notes.append(f"shard {st.work.index}: reading failed ({_short(exc)}); rerun to finish it")
        if not isinstance(end, ShardEnd):
            st.end = ShardEnd(st.work.index, 0, 0, 0, exhausted=False)
        else:
            st.end = end
            self.summary.rows_skipped += end.skipped
            self.summary.duplicate_keys += end.duplicate_keys
            if self.budget is not None:
                self.budget -= end.emitted
        st.held = None
        self._maybe_end(st)

    def _new_batch(self, st: ShardState, raw: Any) -> None:
        b = Batch(st.work.index, raw)
        st.outstanding += 1
        self.live += 1
        self.touched.add(b.shard)
        self.queues[0].append(b)

    # ---- dispatching ----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for k in range(len(self.pools), 0, -1):  # drain the later groups first
            pool, q = self.pools[k - 1], self.queues[k]
            while q:
                r = pool.free(q[0].suspect)
                if r is None:
                    break
                b = q.popleft()
                b.replica = r
                b.recs, b.info = pool.submit(r, b, b.data, b.pick)
                self.waiting[b.info] = ("group", b)
        q0 = self.queues[0]
        while q0:
            b = q0.popleft()
            own = self.shards[b.shard].own
            b.recs, b.info = self.prep_task.options(num_returns=2).remote(self.info, b.raw, own, b.pick)
            self.waiting[b.info] = ("prep", b)
        for pool in self.pools:
            for ref, r in pool.pending_ready().items():
                if ref not in self.waiting:
                    self.waiting[ref] = ("ready", (pool, r))

    # ---- results --------------------------------------------------------------------------------------------
    def _on_prep(self, b: Batch, ref: Any) -> None:
        try:
            info = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - Ray retried the task; the worker kept dying
            self._failed(b, exc, "decode")
            return
        self.decode_tasks += 1
        self.decode_seconds += float(info.get("seconds", 0.0))
        self._advance(b)

    def _on_group(self, b: Batch, ref: Any) -> None:
        if ref is not b.info:
            return  # a stale result: the batch was handed back (its replica died) or already handled
        pool, r = self.pools[b.step - 1], b.replica
        assert r is not None
        try:
            info = _get_cause(self.ray, ref)
        except RunStop:
            raise
        except self.ray.exceptions.RayActorError as exc:
            self._replica_died(pool, r, b, exc)
            return
        except Exception as exc:  # noqa: BLE001 - lost objects, or a bug outside the stages
            b.info = None
            pool.done(r, b, {})
            self._failed(b, exc, None)
            return
        self._group_ok(pool, r, b, info)

    def _group_ok(self, pool: Pool, r: Replica, b: Batch, info: dict[str, Any]) -> None:
        b.info = None  # handled: any later sighting of its result is stale
        pool.done(r, b, info)
        self._count(info.get("counts", {}))
        self._advance(b)

    def _replica_died(self, pool: Pool, r: Replica, b: Batch, exc: BaseException) -> None:
        """Batches the replica finished before it died are kept; the others go back to the
        queue (see Pool.died for which one is charged the death)."""
        dead = []
        for x in list(r.inflight) + ([b] if b not in r.inflight else []):
            got = self._result_now(x) if x is not b else None
            if got is not None:
                self._group_ok(pool, r, x, got)
            else:
                dead.append(x)
        pool.died(r, dead)
        for x in dead:
            self._retry(x, exc)

    def _result_now(self, b: Batch) -> dict[str, Any] | None:
        """``b``'s result if it is there and is not an error."""
        ready, _ = self.ray.wait([b.info], timeout=0)
        if not ready:
            return None
        try:
            return self.ray.get(b.info)
        except Exception:  # noqa: BLE001 - it died with its replica
            return None

    def _on_ready(self, obj: tuple[Pool, Replica], ref: Any) -> None:
        pool, r = obj
        try:
            pool.on_ready(r, ref)
        except self.ray.exceptions.RayActorError as exc:
            r.ready_failures += 1
            if r.ready_failures <= MAX_READY_FAILURES:
                r.ready_ref = r.handle.ready.remote()  # still restarting: ask again
                return
            pool.lost_replica(r)
            if not pool.live():
                raise RunStop(f"stage group {pool.group.name}: no replica left ({_short(exc)})") from exc
        except Exception as exc:  # noqa: BLE001 - a restarted replica that cannot load its models again
            pool.lost_replica(r)
            if not pool.live():
                raise RunStop(f"stage group {pool.group.name}: no replica left ({_short(exc)})") from exc

    def _advance(self, b: Batch) -> None:
        if b.step == len(self.pools):
            self._write(b, self.ray.get(b.recs))
            return
        if b.step == 0:
            b.raw = None  # decoded: the read chunk (its bytes) is no longer needed
        b.data, b.step, b.pick, b.attempts, b.replica, b.suspect = b.recs, b.step + 1, None, 0, None, False
        b.recs = b.info = None
        self.queues[b.step].append(b)

    def _retry(self, b: Batch, exc: BaseException) -> None:
        """Back to its queue; split into single records, or failed for good, once charged
        ``MAX_ATTEMPTS`` deaths."""
        self.waiting.pop(b.info, None)  # its old result is never read
        b.recs = b.info = b.replica = None
        if b.attempts < MAX_ATTEMPTS:
            self.queues[b.step].appendleft(b)
            return
        if b.pick is not None and len(b.pick) == 1:
            self._fail_rows(b, f"the worker running it died {b.attempts} times on this row ({_short(exc)})")
            return
        n = len(b.pick) if b.pick is not None else len(self._inputs(b))
        picks = [[i] for i in (b.pick or range(n))]
        st = self.shards[b.shard]
        st.outstanding += len(picks) - 1
        self.live += len(picks) - 1
        for p in reversed(picks):
            self.queues[b.step].appendleft(Batch(b.shard, b.raw, b.step, b.data, p, suspect=True))

    def _failed(self, b: Batch, exc: BaseException, kind: str | None) -> None:
        name = type(exc).__name__
        if any(n in name for n in _LOST) or any(n in type(getattr(exc, "cause", None)).__name__ for n in _LOST):
            self.lost_batches += 1
            self.shards[b.shard].lost += 1
            self._batch_done(b.shard)
            return
        if kind == "decode" and (b.pick is None or len(b.pick) > 1):
            b.attempts = MAX_ATTEMPTS
            self._retry(b, exc)  # split: find the record that kills its decoder
            return
        self._fail_rows(b, f"{_short(exc)}")

    def _inputs(self, b: Batch) -> list[Record]:
        return self.ray.get(b.raw if b.step == 0 else b.data)

    def _fail_rows(self, b: Batch, message: str) -> None:
        recs = self._inputs(b)
        recs = [recs[i] for i in b.pick] if b.pick is not None else recs
        if b.step == 0:
            out = [fail_record(r, message, "decode") for r in recs]
        else:
            g = self.pools[b.step - 1].group
            first = self.run.method.stages[g.start]
            shape = StageShape(first.name, tuple(first.provides), first.needs_image)
            out = [fail_record(r, message, f"stage {first.name}", shape,
                               self.run.method.fingerprints.get(first.name, "")) for r in recs]
            for _ in out:
                self._count({first.name: {"failed": 1}})
        self._write(b, out)

    # ---- writing ---------------------------------------------------------------------------------------------
    def _write(self, b: Batch, recs: list[Record]) -> None:
        st = self.shards[b.shard]
        for r in recs:
            if r.sha256:
                if r.sha256 in st.shas:
                    self.summary.duplicate_images += 1
                st.shas.add(r.sha256)
        if recs:
            self.writer.batch(b.shard, recs)
        self._batch_done(b.shard)

    def _batch_done(self, shard: int) -> None:
        st = self.shards[shard]
        st.outstanding -= 1
        self.live -= 1
        self._maybe_end(st)

    def _maybe_end(self, st: ShardState) -> None:
        if st.end is None or st.outstanding > 0:
            return
        s = st.work.index
        if s in self.touched or st.end.exhausted:
            self.writer.end_shard(s, st.end.exhausted and st.lost == 0)
            self.touched.discard(s)
        self.shards.pop(s, None)
        st.shas.clear()

    def _count(self, counts: dict[str, dict[str, float]]) -> None:
        for name, c in counts.items():
            agg = self.stage_counts.setdefault(name, {"computed": 0, "reused": 0, "failed": 0, "seconds": 0.0})
            for k, v in c.items():
                agg[k] = agg.get(k, 0) + v

    def stage_summary(self) -> dict[str, Any]:
        out = {}
        for st in self.run.method.stages:
            c = self.stage_counts.get(st.name, {"computed": 0, "reused": 0, "failed": 0, "seconds": 0.0})
            out[st.name] = {"computed": int(c["computed"]), "reused": int(c["reused"]), "failed": int(c["failed"]),
                            "seconds": round(float(c["seconds"]), 3)}
        return out


def _short(exc: BaseException, n: int = 200) -> str:
    cause = getattr(exc, "cause", None)
    e = cause if isinstance(cause, BaseException) else exc
    s = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return s if len(s) <= n else s[: n - 3] + "..."
