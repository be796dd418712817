"""The end-of-run summary and the progress display."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Summary:
    rows_written: int = 0
    rows_skipped: int = 0  # already in OUT_DIR from an earlier run
    duplicate_keys: int = 0  # inputs whose key repeated in their shard (written as key~N)
    duplicate_images: int = 0  # rows whose image bytes equal an earlier row's in the same shard
    errors: dict[str, int] = field(default_factory=dict)
    shards_total: int = 0
    shards_done_before: int = 0
    shards_completed: int = 0
    shards_redone: list[str] = field(default_factory=list)  # damaged parts found and redone
    seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped early (RunStop), if it did
    stages: dict[str, Any] = field(default_factory=dict)  # per stage: computed, reused, failed
    usage: dict[str, Any] = field(default_factory=dict)  # per model: requests, tokens, latency
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rows(self) -> int:
        return sum(self.errors.values())

    def count_error(self, kind: str | None) -> None:
        if kind:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "duplicate_keys": self.duplicate_keys,
            "duplicate_images": self.duplicate_images,
            "error_rows": self.error_rows,
            "errors": dict(sorted(self.errors.items())),
            "shards_total": self.shards_total,
            "shards_done_before": self.shards_done_before,
            "shards_completed": self.shards_completed,
            "shards_redone": self.shards_redone,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "stages": self.stages,
            "usage": self.usage,
            "notes": self.notes,
        }


class Progress:
    """The run's progress: a rich bar on a terminal; elsewhere (a Slurm log, a pipe) a plain line
    every ``log_every`` seconds from its own timer thread, so a log shows life even while one
    slow batch is in flight. ``total`` may be learnt later (:meth:`total_from`): tars are
    counted from their member index in the background."""

    def __init__(self, total: int | None, enabled: bool, console: Any = None, log_every: float = 30.0):
        self.enabled = enabled
        self.total = total
        self._p = None
        self._console = console
        self._log_every = log_every
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        # Not a terminal (a Slurm log, a pipe): a plain line every ``log_every`` seconds.
        self._log_mode = enabled and console is not None and not getattr(console, "is_terminal", True)
        if enabled and not self._log_mode:
            self._p = _bar(console, total)
            self._task = self._p.task_ids[0]
        self._t0 = time.perf_counter()
        self._n = 0

    def __enter__(self) -> "Progress":
        self._t0 = time.perf_counter()
        if self._p:
            self._p.start()
        if self._log_mode:
            self._timer = threading.Thread(target=self._tick, daemon=True, name="pixscribe-progress")
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        if self._p:
            self._p.stop()

    def total_from(self, count: Callable[[], int | None]) -> None:
        """Learn the total in a background thread (``count`` may read file indexes)."""
        def run() -> None:
            try:
                n = count()
            except Exception:  # noqa: BLE001 - a total is a nicety; the reader reports bad files
                return
            if n is not None:
                self.total = n
                if self._p:
                    self._p.update(self._task, total=n)

        threading.Thread(target=run, daemon=True, name="pixscribe-count").start()

    def advance(self, n: int) -> None:
        self._n += n
        if self._p:
            dt = time.perf_counter() - self._t0
            self._p.update(self._task, advance=n, rate=f"{self._n / dt:.2f}" if dt > 0 else "-")

    def line(self) -> str:
        """``pixscribe: 120/1000 rows (12%), 0.85 rows/s, elapsed 0:02:21, ETA 0:17:15``."""
        n, total = self._n, self.total
        dt = time.perf_counter() - self._t0
        rate = n / dt if dt > 0 else 0.0
        done = f"{n}/{total} rows ({100 * n / total:.0f}%)" if total else f"{n} rows"
        if total is None:
            eta = "total not known"
        elif rate > 0:
            eta = "ETA " + clock(max(0, total - n) / rate)
        else:
            eta = "ETA unknown until a row is done"
        return f"pixscribe: {done}, {rate:.2f} rows/s, elapsed {clock(dt)}, {eta}"

    def _tick(self) -> None:
        while not self._stop.wait(self._log_every):
            self._console.print(self.line(), highlight=False, markup=False, soft_wrap=True)


def clock(seconds: float) -> str:
    """``H:MM:SS`` (hours not wrapped at a day)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _bar(console: Any, total: int | None) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    p = Progress(
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
    p.add_task("run", total=total, rate="-")
    return p
