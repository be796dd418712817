"""Earlier rows, found by id, whose stage outputs a run may reuse.

A row carries, for every stage, its fingerprint and status (the ``stages`` column). A stage
is reused for a row when an earlier row of the same id ran it with the same fingerprint
and it succeeded, and every stage before it was reused too; otherwise it and every stage
after it are computed. Sources of earlier rows:

- the shard's own batch files, for ``--retry-errors`` (only the failed stage and those after
  it run again);
- ``_state/previous/`` after ``--overwrite`` (the old parts and batch files moved aside);
- the output directories named by ``--reuse``.

A row is found by its id. When no earlier row has the id (a loose file's id hashes its path,
so the same images in another folder have other ids) or its row holds other bytes, a row of
another id with the same image bytes (sha256) is taken for the stages that depend on nothing
but the image, their options and earlier such stages: no input column, not the id (see
:func:`~pixscribe.engine.apply.first_to_compute`). The new row keeps its own id and source;
its reused stages say ``reused_from`` (the other row's id). Not for the shard's own batch
files (``--retry-errors``).

:class:`RowIndex` finds rows in many files without holding them: the ids (and, on the
first lookup by image, the sha256 of the rows without an error) are read once (one column),
kept as 64-bit hashes in sorted numpy arrays, and a lookup reads the file that holds the row
(the last two files read are cached).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..record import PriorRow
from .state import read_part_file


def _fmt_of(path: Path) -> str:
    return {".parquet": "parquet", ".jsonl": "jsonl", ".tar": "tar"}.get(path.suffix, "parquet")


def output_files(out_dir: Path) -> list[Path]:
    """The part files of an output directory, then its batch files (newer rows last)."""
    parts = sorted(p for p in out_dir.glob("part-*") if p.suffix in (".parquet", ".jsonl", ".tar"))
    batches = sorted((out_dir / "_state" / "batches").glob("*/*.parquet"))
    prev = out_dir / "_state" / "previous"
    kept = sorted(prev.glob("part-*")) + sorted(prev.glob("batch-*.parquet")) if prev.is_dir() else []
    return kept + parts + batches


class RowIndex:
    """Rows of pixscribe output files by id (the last row of an id wins)."""

    def __init__(self, files: list[Path], *, cache: int = 2):
        self.files = [Path(f) for f in files]
        self._keys: np.ndarray | None = None
        self._loc: np.ndarray | None = None
        self._sha: tuple[np.ndarray, np.ndarray] | None = None
        self._cache: OrderedDict[int, _FileRows] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()
        self.lookups = 0
        self.found = 0

    def _build(self) -> None:
        self._keys, self._loc = _sorted_last([_read_ids(f) for f in self.files])

    def __len__(self) -> int:
        with self._lock:
            if self._keys is None:
                self._build()
            return len(self._keys)  # type: ignore[arg-type]

    def get(self, id_: str) -> PriorRow | None:
        with self._lock:
            if self._keys is None:
                self._build()
            assert self._keys is not None and self._loc is not None
            row = self._find(self._keys, self._loc, id_, lambda rows: rows.by_id)
        return self._prior(row)

    def get_by_sha(self, sha: str) -> PriorRow | None:
        """A row without an error whose image bytes have this sha256 (the last one)."""
        with self._lock:
            if self._sha is None:
                self._sha = _sorted_last([_read_shas(f) for f in self.files])
            row = self._find(*self._sha, sha, lambda rows: rows.by_sha)
        return self._prior(row)

    def _find(self, keys: np.ndarray, loc: np.ndarray, key: str, pick: Any) -> dict[str, Any] | None:
        self.lookups += 1
        h = hash(key)
        i = int(np.searchsorted(keys, h))
        if i >= len(keys) or keys[i] != h:
            return None
        return pick(self._rows(int(loc[i]))).get(key)

    def _prior(self, row: dict[str, Any] | None) -> PriorRow | None:
        prior = PriorRow.from_row(row) if row is not None else None
        if prior is not None:
            with self._lock:
                self.found += 1
        return prior

    def _rows(self, fi: int) -> "_FileRows":
        if fi in self._cache:
            self._cache.move_to_end(fi)
            return self._cache[fi]
        try:
            rows = _FileRows(read_part_file(self.files[fi], _fmt_of(self.files[fi])).to_pylist())
        except (OSError, ValueError, Exception):  # noqa: BLE001 - a file removed or damaged meanwhile
            rows = _FileRows([])
        self._cache[fi] = rows
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rows


class _FileRows:
    """One file's rows by id, and its rows without an error by sha256 (the last row wins)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.by_id = {r["id"]: r for r in rows}
        self.by_sha = {r["sha256"]: r for r in rows if r.get("sha256") and r.get("error") is None}


def _sorted_last(per_file: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 64-bit hashes of the keys of every file, each with the index of the last file
    that holds it (a stable sort, then the last of each run)."""
    keys = [np.fromiter((hash(k) for k in ks), dtype=np.int64, count=len(ks)) for ks in per_file if ks]
    locs = [np.full(len(ks), fi, dtype=np.int32) for fi, ks in enumerate(per_file) if ks]
    k = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    loc = np.concatenate(locs) if locs else np.zeros(0, np.int32)
    order = np.argsort(k, kind="stable")
    k, loc = k[order], loc[order]
    last = np.ones(len(k), dtype=bool)
    if len(k) > 1:
        last[:-1] = k[1:] != k[:-1]
    return k[last], loc[last]


def _read_column(f: Path, names: list[str]) -> Any:
    if f.suffix == ".parquet":
        return pq.read_table(f, columns=names)
    return read_part_file(f, _fmt_of(f)).select(names)


def _read_ids(f: Path) -> list[str]:
    try:
        return [i for i in _read_column(f, ["id"]).column("id").to_pylist() if i is not None]
    except Exception:  # noqa: BLE001 - an unreadable file offers nothing to reuse
        return []


def _read_shas(f: Path) -> list[str]:
    try:
        t = _read_column(f, ["sha256", "error"])
    except Exception:  # noqa: BLE001
        return []
    return [s for s, e in zip(t.column("sha256").to_pylist(), t.column("error").to_pylist()) if s and e is None]


class Priors:
    """Where a run looks for earlier rows: several indexes, first hit wins."""

    def __init__(self, indexes: list[RowIndex] | None = None):
        self.indexes = [i for i in (indexes or []) if i.files]

    def __bool__(self) -> bool:
        return bool(self.indexes)

    def get(self, id_: str) -> PriorRow | None:
        return next((p for ix in self.indexes if (p := ix.get(id_)) is not None), None)

    def get_by_sha(self, sha: str) -> PriorRow | None:
        return next((p for ix in self.indexes if (p := ix.get_by_sha(sha)) is not None), None)

    @classmethod
    def from_dirs(cls, dirs: list[Path]) -> "Priors":
        return cls([RowIndex(output_files(Path(d))) for d in dirs])
