"""The end-of-run summary and the progress display."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


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

    def __enter__(self) -> "Progress":
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


