"""Running a method's stages on a batch: reuse what may be reused, compute the rest, keep
every stage's status on every row, and count per stage.

A record arrives with ``compute_from``: the index of the first stage it must compute (the
stages before it are copied from its :class:`~pixscribe.record.PriorRow`). A stage runs on
the records that need it, in chunks of its own batch size; if a chunk raises, its records
run one by one so the error stays with the record that caused it.

What a stage reads is declared (:func:`~pixscribe.engine.stage.stage_reads`): while it runs,
a record shows it only those input columns, and a row it computed records a hash of their
values (``stages[NAME]["in"]``). A stage is reused for a row only when that hash is the
same now: a changed box, instruction or description column reruns the stage that reads it
and every stage after it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ..io.writers import as_text
from ..record import PriorRow, Record, RunStop, prompt_sha
from .stage import Method, Stage


@dataclass
class StageCount:
    computed: int = 0
    reused: int = 0
    failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"computed": self.computed, "reused": self.reused, "failed": self.failed,
                "seconds": round(self.seconds, 3)}


def read_digest(columns: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """A hash of the values of the input columns ``names``, each as the output stores it
    (text; JSON for other values), so an old row's stored columns give the same hash.
    None when a stage reads no input column."""
    if not names:
        return None
    return prompt_sha([[n, as_text(columns.get(n))] for n in names])


def first_to_compute(method: Method, rec: Record) -> int:
    """Index of the first stage ``rec`` must compute (``len(stages)``: nothing to compute)."""
    prior = rec.prior
    if prior is None:
        return 0
    for i, st in enumerate(method.stages):
        if not prior.can_reuse(st.name, method.fingerprints.get(st.name, ""), st.provides):
            return i
        names = method.input_reads.get(st.name, ())
        if prior.id is not None and prior.id != rec.id and (names or st.reads_id):
            return i  # a row of another id, found by its image bytes: only what depends on nothing else
        if names and _prior_digest(prior, st.name, names) != read_digest(rec.columns, names):
            return i
    return len(method.stages)


def _prior_digest(prior: PriorRow, stage: str, names: tuple[str, ...]) -> str | None:
    """The hash the earlier row recorded for ``stage``; a row written before rows recorded
    one (pixscribe <= 44eff38) gives it from its stored input columns."""
    recorded = (prior.stages.get(stage) or {}).get("in")
    return recorded if recorded is not None else read_digest(prior.columns, names)


class UndeclaredRead(KeyError):
    """A stage read an input column of the row that it does not declare reading."""

    def __str__(self) -> str:
        return str(self.args[0])


class DeclaredColumns(dict):  # type: ignore[type-arg]
    """The input columns a stage declared reading. Reading another column the row has is a
    mistake in the stage's declaration (reuse could not tell when that column changed): it
    fails the row, naming the stage and the column."""

    def __init__(self, stage: str, columns: dict[str, Any], names: tuple[str, ...]):
        super().__init__((n, columns[n]) for n in names if n in columns)
        self._stage, self._hidden = stage, columns

    def __missing__(self, key: str) -> Any:
        self._check(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return self[key]
        self._check(key)
        return default

    def _check(self, key: str) -> None:
        if key in self._hidden:
            raise UndeclaredRead(f"stage {self._stage!r} reads the input column {key!r} without declaring it: add it "
                                 "to the stage's reads (or needs), so that reuse compares it")


@contextmanager
def showing_reads(stage: str, records: list[Record], names: tuple[str, ...]) -> Iterator[None]:
    """While a stage runs, its records show it only the input columns it declared reading."""
    saved = [r.columns for r in records]
    for r in records:
        r.columns = DeclaredColumns(stage, r.columns, names)
    try:
        yield
    finally:
        for r, cols in zip(records, saved):
            r.columns = cols


def needs_decode(method: Method, start: int) -> bool:
    return any(st.needs_image for st in method.stages[start:])


class MethodRunner:
    def __init__(self, method: Method):
        self.method = method
        self.counts = {s.name: StageCount() for s in method.stages}
        self._lock = threading.Lock()

    def __call__(self, batch: list[Record], start: int = 0, stop: int | None = None) -> None:
        """Run the stages on ``batch``; each record begins at its ``compute_from``.

        ``start``/``stop`` run only the stages ``start..stop-1`` (an executor that runs a
        method's stages in separate workers, one group after another); images and priors
        are dropped only after the method's last stage, since later groups may need them."""
        stages = self.method.stages
        stop = len(stages) if stop is None else stop
        for i in range(start, stop):
            stage = stages[i]
            live = [r for r in batch if r.ok]
            if not live:
                break
            todo = []
            for r in live:
                if r.compute_from > i:
                    r.reuse_stage(stage.name, stage.provides)
                    with self._lock:
                        self.counts[stage.name].reused += 1
                else:
                    todo.append(r)
            if todo:
                self._compute(stage, todo)
        if stop < len(stages):
            return
        for r in batch:
            r.drop_image()
            r.prior = None

    def _compute(self, stage: Stage, todo: list[Record]) -> None:
        size = stage.batch_size or len(todo)
        reads = self.method.input_reads.get(stage.name, ())
        for k in range(0, len(todo), size):
            chunk = todo[k: k + size]
            with showing_reads(stage.name, chunk, reads):
                run_isolated(stage, chunk)
        fp = self.method.fingerprints.get(stage.name, "")
        c = StageCount()
        for r in todo:
            mark(r, stage, fp, read_digest(r.columns, reads))
            st = r.stages[stage.name]
            c.failed += st["status"] == "error"
            c.computed += st["status"] == "ok"
            c.seconds += float(st.get("seconds") or 0.0)
        with self._lock:
            agg = self.counts[stage.name]
            agg.computed += c.computed
            agg.failed += c.failed
            agg.seconds += c.seconds


def run_isolated(stage: Stage, records: list[Record]) -> None:
    try:
        stage(records)
        return
    except RunStop:
        raise
    except Exception as exc:  # isolate: run records one by one
        if len(records) == 1:
            records[0].fail(exc, f"stage {stage.name}")
            return
    for r in records:
        try:
            stage([r])
        except RunStop:
            raise
        except Exception as exc1:
            r.fail(exc1, f"stage {stage.name}")


def mark(r: Record, stage: Stage, fp: str, inputs: str | None = None) -> None:
    """Record ``stage``'s status on ``r`` (its fields, which of them are JSON, its seconds, and
    the hash of the input values it read)."""
    st = r.stages.setdefault(stage.name, {})
    st["fp"] = fp
    if not r.ok:
        st["status"] = "error"
        return
    st["status"] = "ok"
    if inputs is not None:
        st["in"] = inputs
    got = [f for f in stage.provides if f in r.fields]
    st["fields"] = got
    st["json"] = [f for f in got if r.fields[f] is not None and not isinstance(r.fields[f], str)]
    st.setdefault("seconds", 0.0)
