"""The local executor: read -> decode (thread pool, prefetched) -> method stages -> write.

CPU work overlaps model work: a producer thread walks the shards and submits each
record's load + decode to a pool; the main thread takes finished records in order,
groups them into batches and runs the method's stages, while the pool is already
decoding the next batches. The queue between them is bounded, so memory stays flat
whatever the dataset size.

The executor owns sharding and resume (see state.py); stages know nothing of either.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..config import RunConfig
from ..record import BASE_COLUMNS, TAIL_COLUMNS, PixscribeError, Record, error_kind, sha256_hex
from .stage import Method, build_method
from .state import RunState


@dataclass
class Summary:
    rows_written: int = 0
    rows_skipped: int = 0  # already in OUT_DIR from an earlier run
    duplicates: int = 0  # same id twice in one shard (identical bytes or keys)
    errors: dict[str, int] = field(default_factory=dict)
    shards_total: int = 0
    shards_done_before: int = 0
    shards_completed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rows(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "duplicates": self.duplicates,
            "error_rows": self.error_rows,
            "errors": dict(sorted(self.errors.items())),
            "shards_total": self.shards_total,
            "shards_done_before": self.shards_done_before,
            "shards_completed": self.shards_completed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "interrupted": self.interrupted,
            "usage": self.usage,
        }


class _Skip:
    __slots__ = ("record", "why")

    def __init__(self, record: Record, why: str):
        self.record = record
        self.why = why


class _ShardEnd:
    __slots__ = ("shard", "exhausted")

    def __init__(self, shard: int, exhausted: bool):
        self.shard = shard
        self.exhausted = exhausted


_DONE = object()


def _id_for_unreadable(rec: Record) -> str:
    return rec.key or sha256_hex(("source:" + rec.source).encode())


class Runner:
    """Runs one method over inputs into an output directory. Use :func:`run`."""

    def __init__(
        self,
        config: RunConfig,
        method: Method | None = None,
        *,
        console: Any = None,
        on_batch: Callable[[list[Record]], None] | None = None,
    ):
        self.config = config
        self.method = method
        self.console = console
        self.on_batch = on_batch
        self.state = RunState(config.output, config.format)
        self.summary = Summary()
        self._stop = threading.Event()
        self._input_columns: list[str] = []
        self._pending: dict[int, list[Any]] = {}
        self._pending_rows: dict[int, int] = {}
        self._last_flush: dict[int, float] = {}
        self._t_start = time.monotonic()

    # ---- preparing records (runs in the decode pool) -----------------------------
    def _prepare(self, rec: Record, skip_ids: set[str]) -> Record | _Skip:
        cfg = self.config
        if rec.key is not None:
            rec.id = str(rec.key)
            if rec.id in skip_ids:
                return _Skip(rec, "done")
        if rec.error is not None:
            rec.id = rec.id or _id_for_unreadable(rec)
            return rec
        try:
            data = rec.data if rec.data is not None else (rec.load() if rec.load else b"")
        except PixscribeError as exc:
            rec.id = rec.id or _id_for_unreadable(rec)
            rec.fail(exc)
            return rec
        except Exception as exc:  # an unexpected reader failure is still a row
            rec.id = rec.id or _id_for_unreadable(rec)
            rec.fail(exc, "input")
            return rec
        rec.data = None
        if data:
            rec.sha256 = sha256_hex(data)
        if rec.id is None:
            rec.id = rec.sha256 if data else _id_for_unreadable(rec)
            if rec.id in skip_ids:
                return _Skip(rec, "done")
        from ..imaging import decode

        try:
            dec = decode(
                data,
                max_pixels=cfg.max_pixels,
                max_side=cfg.max_side,
                max_image_pixels=cfg.max_image_pixels,
                source=rec.source,
            )
        except PixscribeError as exc:
            rec.fail(exc)
            return rec
        except Exception as exc:
            rec.fail(exc, "decode")
            return rec
        rec.image = dec.image
        rec.width, rec.height = dec.width, dec.height
        rec.orig_width, rec.orig_height = dec.orig_width, dec.orig_height
        exif = getattr(dec, "exif", None)
        if exif:
            rec.fields["exif"] = exif
        return rec

    # ---- the producer ------------------------------------------------------------
    def _produce(
        self,
        shards: list[Any],
        skip: dict[int, set[str]],
        pool: cf.ThreadPoolExecutor,
        out: "queue.Queue[Any]",
    ) -> None:
        rename = self.method.rename_inputs if self.method else {}
        try:
            for shard in shards:
                if self._stop.is_set():
                    break
                skip_ids = skip[shard.index]
                exhausted = True
                try:
                    for rec in shard.records():
                        if self._stop.is_set():
                            exhausted = False
                            break
                        rec.shard = shard.index
                        for a, b in rename.items():
                            if a in rec.columns and b not in rec.columns:
                                rec.columns[b] = rec.columns.pop(a)
                        self._put(out, pool.submit(self._prepare, rec, skip_ids))
                except Exception as exc:  # the reader itself failed mid-shard: one error row
                    bad = Record(source=shard.name, shard=shard.index)
                    bad.fail(exc, "input")
                    bad.id = _id_for_unreadable(bad)
                    self._put(out, _resolved(bad))
                self._put(out, _ShardEnd(shard.index, exhausted))
        finally:
            self._put(out, _DONE, force=True)

    def _put(self, out: "queue.Queue[Any]", item: Any, force: bool = False) -> None:
        while True:
            if self._stop.is_set() and not force:
                if isinstance(item, cf.Future):
                    item.cancel()
                return
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # ---- running the method on a batch ------------------------------------------------
    def _run_stages(self, batch: list[Record]) -> None:
        assert self.method is not None
        for stage in self.method.stages:
            live = [r for r in batch if r.ok]
            if not live:
                break
            try:
                stage(live)
            except Exception as exc:  # isolate: run records one by one
                if len(live) == 1:
                    live[0].fail(exc, f"stage {stage.name}")
                    continue
                for r in live:
                    try:
                        stage([r])
                    except Exception as exc1:
                        r.fail(exc1, f"stage {stage.name}")
        for r in batch:
            r.drop_image()

    def _column_order(self) -> list[str]:
        assert self.method is not None
        cols = list(BASE_COLUMNS) + [c for c in self.method.columns if c not in BASE_COLUMNS]
        cols += [c for c in self._input_columns if c not in cols and c not in TAIL_COLUMNS]
        return cols

    def _probe_columns(self, shards: list[Any], budget_s: float = 3.0) -> list[str]:
        """The input columns of every shard, from its first record, so that every part file
        has the same columns (null where an input lacks one) and readers that take the schema
        from the first file (pyarrow.parquet.read_table(dir)) see them all."""
        rename = self.method.rename_inputs if self.method else {}
        cols: list[str] = []
        t0 = time.perf_counter()
        for shard in shards:
            if time.perf_counter() - t0 > budget_s:
                break
            it = None
            try:
                it = iter(shard.records())
                rec = next(it)
            except StopIteration:
                continue
            except Exception:
                continue
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()
            for c in rec.columns:
                c = rename.get(c, c)
                if c not in cols:
                    cols.append(c)
        return cols

    def _write(self, shard: int, batch: list[Record]) -> None:
        from ..io.writers import rows_to_table

        assert self.method is not None
        rows = [r.to_row(self.method.name, self.method.caption_field, self.method.columns) for r in batch]
        order = self._column_order()
        extra = [c for r in rows for c in r if c not in order and c not in TAIL_COLUMNS]
        table = rows_to_table(rows, order + list(dict.fromkeys(extra)) + list(TAIL_COLUMNS))
        self._pending.setdefault(shard, []).append(table)
        self._pending_rows[shard] = self._pending_rows.get(shard, 0) + table.num_rows
        now = time.monotonic()
        if (
            self._pending_rows[shard] >= self.config.flush_rows
            or now - self._last_flush.get(shard, self._t_start) >= self.config.flush_seconds
        ):
            self._flush_pending(shard)
        self.summary.rows_written += len(batch)
        for r in batch:
            k = error_kind(r.error)
            if k:
                self.summary.errors[k] = self.summary.errors.get(k, 0) + 1

    def _flush_pending(self, shard: int) -> None:
        """Persist buffered rows of a shard as one atomic batch file. Rows are buffered up to
        --flush-rows or --flush-seconds, so a shard is a few files, not one per batch; a crash
        loses at most that window, which the rerun redoes."""
        from ..io.writers import concat_tables

        tables = self._pending.pop(shard, None)
        self._pending_rows.pop(shard, None)
        self._last_flush[shard] = time.monotonic()
        if tables:
            self.state.append_batch(shard, concat_tables(tables))

    # ---- main loop ------------------------------------------------------------------
    def run(self) -> Summary:
        cfg = self.config
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        from ..io.fetch import UrlFetcher
        from ..io.readers import plan_shards

        fetcher = UrlFetcher.from_config(cfg)
        plan = plan_shards(cfg.inputs, shard_size=cfg.shard_size, fetcher=fetcher)
        k, n = cfg.shard_k_n
        mine = [s for s in plan if s.index % n == k]
        self.summary.shards_total = len(mine)

        fp_fields = cfg.fingerprint_fields()
        self.state.check_config(cfg.fingerprint(), fp_fields, cfg.overwrite)
        if cfg.overwrite:
            self.state.clear([s.index for s in mine] if n > 1 else None)

        if self.method is None:
            self.method = build_method(cfg.method, cfg)
        self.method.setup()  # load models before any work: fail fast

        self.state.write_run_json(
            {
                "pixscribe_version": __version__,
                "fingerprint": cfg.fingerprint(),
                "fingerprint_fields": fp_fields,
                "config": cfg.model_dump(mode="json"),
                "method": self.method.describe(),
                "shards": len(plan),
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

        self._input_columns = self._probe_columns(mine)
        todo = []
        skip: dict[int, set[str]] = {}
        for s in mine:
            if self.state.is_done(s.index):
                m = self.state.marker(s.index) or {}
                if cfg.retry_errors and m.get("errors", 0) > 0:
                    self.state.reopen(s.index)
                else:
                    self.state.cleanup_done(s.index)
                    self.summary.shards_done_before += 1
                    self.summary.rows_skipped += int(m.get("rows", 0))
                    continue
            skip[s.index] = self.state.written_ids(s.index, retry_errors=cfg.retry_errors)
            todo.append(s)

        total = None
        if all(s.count is not None for s in todo):
            total = sum(s.count for s in todo) - sum(len(v) for v in skip.values())
            if cfg.limit is not None:
                total = min(total, cfg.limit)

        batch_size = cfg.batch_size
        for st in self.method.stages:
            pref = getattr(st, "preferred_batch_size", None)
            if pref:
                batch_size = max(batch_size, int(pref))

        t0 = time.perf_counter()
        # The main thread drives the model; hand it the GIL quickly when it wakes, so the
        # decode threads (which hold the GIL between C calls) never delay a model call.
        prev_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(prev_switch, 0.0005))
        q: "queue.Queue[Any]" = queue.Queue(maxsize=max(2, batch_size * cfg.prefetch_batches))
        pool = cf.ThreadPoolExecutor(max_workers=cfg.decode_workers, thread_name_prefix="pixscribe-decode")
        producer = threading.Thread(target=self._produce, args=(todo, skip, pool, q), daemon=True, name="pixscribe-read")
        touched: set[int] = set()
        progress = _Progress(total, enabled=cfg.progress, console=self.console)
        processed = 0
        seen: dict[int, set[str]] = collections.defaultdict(set)
        batch: list[Record] = []
        batch_shard: int | None = None
        # Writing (rows -> table -> fsynced batch file, shard finalisation) runs on its own
        # thread so the model never waits on the disk.
        writes: "queue.Queue[Any]" = queue.Queue(maxsize=4)
        finalizer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixscribe-finalize")
        finalizing: list[cf.Future] = []
        write_error: list[BaseException] = []
        order = self._column_order()

        def writer() -> None:
            while True:
                job = writes.get()
                if job is None:
                    try:
                        for shard_i in list(self._pending):
                            self._flush_pending(shard_i)
                    except BaseException as exc:
                        write_error.append(exc)
                    return
                if write_error:
                    continue
                try:
                    if job[0] == "batch":
                        _, shard_i, recs = job
                        self._write(shard_i, recs)
                        if self.on_batch:
                            self.on_batch(recs)
                        progress.advance(len(recs))
                    else:
                        _, shard_i, complete = job
                        self._flush_pending(shard_i)
                        # the part file is built on its own thread: batches of the next
                        # shard keep flowing (and the model keeps working) meanwhile
                        finalizing.append(finalizer.submit(finalize, shard_i, complete))
                except BaseException as exc:  # surfaced on the main thread
                    write_error.append(exc)

        def finalize(shard_i: int, complete: bool) -> None:
            try:
                self.state.finalize(shard_i, complete, order)
                if complete:
                    self.summary.shards_completed += 1
            except BaseException as exc:
                write_error.append(exc)

        def submit_write(job: Any) -> None:
            if write_error:
                raise write_error[0]
            writes.put(job)

        # Backends that serve many requests at once (HTTP servers) keep several batches in
        # flight; results are still written in order. A local model runs one at a time.
        inflight_max = max(1, min(int(getattr(st, "max_inflight_batches", 1)) for st in self.method.stages))
        stage_pool = (
            cf.ThreadPoolExecutor(max_workers=inflight_max, thread_name_prefix="pixscribe-stage")
            if inflight_max > 1
            else None
        )
        inflight: "collections.deque[tuple[int, list[Record], cf.Future]]" = collections.deque()

        def retire(keep: int) -> None:
            while len(inflight) > keep:
                shard_i, recs, fut = inflight.popleft()
                fut.result()
                submit_write(("batch", shard_i, recs))

        def flush() -> None:
            nonlocal batch
            if not batch:
                return
            assert batch_shard is not None
            if stage_pool is None:
                self._run_stages(batch)
                submit_write(("batch", batch_shard, batch))
            else:
                inflight.append((batch_shard, batch, stage_pool.submit(self._run_stages, batch)))
                retire(inflight_max - 1)
            batch = []

        prev_handler = None
        if threading.current_thread() is threading.main_thread():
            prev_handler = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        writer_thread = threading.Thread(target=writer, daemon=True, name="pixscribe-write")
        writer_thread.start()
        producer.start()
        try:
            with progress:
                while True:
                    item = q.get()
                    if item is _DONE:
                        break
                    if isinstance(item, _ShardEnd):
                        if batch and batch_shard == item.shard:
                            flush()
                        retire(0)
                        seen.pop(item.shard, None)
                        skip.pop(item.shard, None)
                        if item.shard in touched or item.exhausted:
                            complete = item.exhausted and not self._stop.is_set()
                            submit_write(("end", item.shard, complete))
                            touched.discard(item.shard)
                        continue
                    if self._stop.is_set():  # --limit reached: the rest is redone by a later run
                        if isinstance(item, cf.Future):
                            item.cancel()
                        continue
                    rec = item.result() if isinstance(item, cf.Future) else item
                    if isinstance(rec, _Skip):
                        self.summary.rows_skipped += 1
                        continue
                    if rec.id in seen[rec.shard]:
                        self.summary.duplicates += 1
                        continue
                    seen[rec.shard].add(rec.id)
                    if batch and batch_shard != rec.shard:
                        flush()
                    batch_shard = rec.shard
                    batch.append(rec)
                    touched.add(rec.shard)
                    processed += 1
                    if len(batch) >= batch_size:
                        flush()
                    if cfg.limit is not None and processed >= cfg.limit:
                        flush()
                        self._stop.set()
                flush()
                retire(0)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._stop.set()
        finally:
            self._stop.set()
            if stage_pool is not None:  # on Ctrl-C, batches still in flight are redone later
                stage_pool.shutdown(wait=False, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
            _drain(q)
            producer.join(timeout=10)
            writes.put(None)
            writer_thread.join()
            finalizer.shutdown(wait=True)
            # Make whatever was written visible (and valid) without marking it done.
            for s in sorted(touched):
                self.state.finalize(s, False, order)
            if prev_handler is not None:
                signal.signal(signal.SIGTERM, prev_handler)
            sys.setswitchinterval(prev_switch)
            self.summary.seconds = time.perf_counter() - t0
            self.summary.usage = self.method.summary() if self.method else {}
            self.method.close() if self.method else None
            fetcher.close()
            self._write_summary()
        if write_error:
            raise write_error[0]
        return self.summary

    def _write_summary(self) -> None:
        from ..io.writers import atomic_write_json

        k, n = self.config.shard_k_n
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-shard{k}of{n}.json"
        try:
            atomic_write_json(self.state.state / "summaries" / name, self.summary.to_dict())
        except OSError:
            pass


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


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Progress:
    """A rich progress bar with img/s and ETA (quiet when disabled)."""

    def __init__(self, total: int | None, enabled: bool, console: Any = None, log_every: float = 30.0):
        self.enabled = enabled
        self.total = total
        self._p = None
        self._console = console
        self._log_every = log_every
        self._last_log = time.perf_counter()
        # Not a terminal (a Slurm log, a pipe): a plain line every ``log_every`` seconds.
        self._log_mode = enabled and console is not None and not getattr(console, "is_terminal", True)
        if enabled and not self._log_mode:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("[bold]captioning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._task = self._p.add_task("run", total=total, rate="-")
        self._t0 = time.perf_counter()
        self._n = 0

    def __enter__(self) -> "_Progress":
        if self._p:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p:
            self._p.stop()

    def advance(self, n: int) -> None:
        self._n += n
        now = time.perf_counter()
        dt = now - self._t0
        if self._p:
            rate = f"{self._n / dt:.2f}" if dt > 0 else "-"
            self._p.update(self._task, advance=n, rate=rate)
        elif self._log_mode and now - self._last_log >= self._log_every:
            self._last_log = now
            r = self._n / dt if dt > 0 else 0.0
            of = f"/{self.total}" if self.total is not None else ""
            eta = ""
            if self.total is not None and r > 0:
                eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(max(0, self.total - self._n) / r))}"
            self._console.print(f"pixscribe: {self._n}{of} rows, {r:.2f} img/s{eta}", highlight=False)


def run(config: RunConfig, method: Method | None = None, **kwargs: Any) -> Summary:
    """Run ``config.method`` (or ``method``) over ``config.inputs`` into ``config.output``."""
    return Runner(config, method, **kwargs).run()


__all__ = ["Runner", "Summary", "run"]
