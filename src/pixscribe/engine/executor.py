"""Executors own the shards: they open a :class:`~pixscribe.engine.run.Run` (plan, claims,
manifest), check and load the method, execute the pending shards, and close the run. The
local executor runs them in this process (:mod:`pixscribe.engine.pipeline`); the Ray
executor (``--executor ray``) fans them out. Both write the same layout with the same
protocol, so a run can move between them.
"""

from __future__ import annotations

import abc
import signal
import threading
import time
from typing import Any, Callable

from ..api.stage import Method
from ..config import RunConfig
from ..record import Record, RunStop
from .apply import MethodRunner
from .pipeline import Pipeline
from .prepare import Identifier
from .run import Run, ShardWork
from .summary import Progress, Summary
from .writer import Writer


class Executor(abc.ABC):
    name = "executor"

    def __init__(self, config: RunConfig, *, console: Any = None, on_batch: Callable[[list[Record]], None] | None = None):
        self.config = config
        self.console = console
        self.on_batch = on_batch

    def run(self, method: Method) -> Summary:
        run = Run.open(self.config, method)
        try:
            works = run.pending()
            inputs = probe_columns(works, method)
            method.check(inputs + list(run.state.known_columns()))
            run.set_columns(inputs)
            self.setup(run, method)  # load models before any work: fail fast
            run.record_models()
        except BaseException:
            method.close()
            run._abandon()
            raise
        t0 = time.perf_counter()
        summary = run.summary
        try:
            self.execute(run, works)
        finally:
            summary.seconds = time.perf_counter() - t0
            summary.usage = self.usage(method)
            method.close()
            run.close(summary)
        return summary

    def setup(self, run: Run, method: Method) -> None:
        """Get the method's models ready before any work (fail fast). Here, in this process;
        an executor whose stages run elsewhere loads them there instead."""
        method.setup()

    def usage(self, method: Method) -> dict[str, Any]:
        """The summary's ``usage``: per model (requests, tokens, latency), then per stage.
        Counted where the stages ran: here, for this process."""
        return {**_pool_usage(method), **method.summary()}

    @abc.abstractmethod
    def execute(self, run: Run, works: list[ShardWork]) -> None:
        """Compute and write ``works``; set ``run.summary`` counters (interrupted, stopped)."""


class LocalExecutor(Executor):
    name = "local"

    def setup(self, run: Run, method: Method) -> None:
        from .dryrun import preflight

        preflight(method)  # offline: every missing model named at once, before any loads
        method.setup()

    def execute(self, run: Run, works: list[ShardWork]) -> None:
        cfg, method, summary = run.config, run.method, run.summary
        runner = MethodRunner(method)
        progress = make_progress(works, cfg, self.console)
        writer = Writer(run, method, summary, progress, self.on_batch).start()
        pipe = Pipeline(run, runner, writer, _batch_size(cfg, method), _inflight(method))
        restore = _sigterm_as_interrupt()
        try:
            with progress:
                pipe.execute(works)
        except KeyboardInterrupt:
            summary.interrupted = True
        except RunStop as exc:
            summary.stopped = str(exc)
        finally:
            pipe.stop.set()
            writer.close()
            restore()
            summary.stages = {k: v.to_dict() for k, v in runner.counts.items()}
            if not writer.errors:
                _finalize_touched(run, pipe.touched, writer)
        if writer.errors:
            raise writer.errors[0]


def _finalize_touched(run: Run, touched: set[int], writer: Writer) -> None:
    """Make whatever was written visible (and valid) without marking it done."""
    for s in sorted(touched):
        run.finish(s, complete=False)


def _batch_size(cfg: RunConfig, method: Method) -> int:
    return max([cfg.batch_size] + [int(s.batch_size) for s in method.stages if s.batch_size])


def _inflight(method: Method) -> int:
    return max(1, min(int(st.max_inflight_batches) for st in method.stages)) if method.stages else 1


def make_progress(works: list[ShardWork], cfg: Any, console: Any) -> Progress:
    """The run's progress; a total that needs tars' member indexes is counted in the background."""
    progress = Progress(_total(works, cfg.limit), enabled=cfg.progress, console=console,
                        log_every=cfg.log_every)
    if progress.total is None and progress.enabled:
        progress.total_from(lambda: _total(works, cfg.limit, count_tars=True))
    return progress


def _total(works: list[ShardWork], limit: int | None, count_tars: bool = False) -> int | None:
    counts = [_count(w, count_tars) for w in works]
    if any(c is None for c in counts):
        return None
    total = sum(counts) - sum(len(w.skip) for w in works)  # type: ignore[arg-type]
    return min(total, limit) if limit is not None else total


def _count(w: ShardWork, count_tars: bool) -> int | None:
    if w.shard.count is None and count_tars and w.spec.kind == "tar" and w.spec.path:
        from ..io.readers import count_tar_samples

        return count_tar_samples(w.spec.path)
    return w.shard.count


def _pool_usage(method: Method) -> dict[str, Any]:
    return method.pool.usage() if method.pool is not None else {}


def _sigterm_as_interrupt() -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    prev = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, prev)


def probe_columns(works: list[ShardWork], method: Method, budget_s: float = 3.0) -> list[str]:
    """Input columns from the first record of every shard (and a table's whole schema), so
    every part file starts with them; later discoveries are added to the union by
    :meth:`Run.finish` and older parts widened when the run closes."""
    ident = Identifier(method)
    cols: list[str] = []
    t0 = time.perf_counter()
    for w in works:
        if time.perf_counter() - t0 > budget_s:
            break
        for c in _first_record_columns(w, ident) + _table_columns(w, ident):
            if c not in cols:
                cols.append(c)
    return cols


def _first_record_columns(w: ShardWork, ident: Identifier) -> list[str]:
    it = None
    try:
        it = iter(w.shard.records())
        rec = next(it)
    except Exception:  # noqa: BLE001 - StopIteration, or a reader failure shown later as a row
        return []
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    return list(ident(rec).columns)


def _table_columns(w: ShardWork, ident: Identifier) -> list[str]:
    if w.spec.kind != "parquet" or not w.spec.path:
        return []
    import pyarrow.parquet as pq

    from ..io.files import open_regular
    from ..io.readers import BYTES_COLUMNS

    try:
        with open_regular(w.spec.path) as f:  # a table swapped for a pipe since the plan: refused, not waited on
            names = pq.read_schema(f).names
    except Exception:  # noqa: BLE001
        return []
    rec = Record(source="", columns={n: None for n in names if n not in BYTES_COLUMNS})
    return list(ident(rec).columns)


def make_executor(config: RunConfig, **kwargs: Any) -> Executor:
    name = config.executor
    if name == "local":
        return LocalExecutor(config, **kwargs)
    if name == "ray":
        from .ray.executor import RayExecutor

        return RayExecutor(config, **kwargs)
    raise ValueError(f"unknown executor {name!r}; use local or ray")
