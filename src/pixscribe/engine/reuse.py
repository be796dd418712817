"""Earlier rows, found by id, whose stage outputs a run may reuse.

A row carries, for every stage, its fingerprint and status (the ``stages`` column). A stage
is reused for a row when an earlier row of the same id ran it with the same fingerprint
and it succeeded, and every stage before it was reused too; otherwise it and every stage
after it are computed. Sources of earlier rows:

- the shard's own batch files, for ``--retry-errors`` (only the failed stage and those after
  it run again);
- ``_state/previous/`` after ``--overwrite`` (the old parts and batch files moved aside);
- the output directories named by ``--reuse``.

:class:`RowIndex` finds rows in many files without holding them: the ids are read once
(one column), kept as 64-bit hashes in sorted numpy arrays, and a lookup reads the file
that holds the row (the last two files read are cached).
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
        self._cache: OrderedDict[int, dict[str, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()
        self.lookups = 0
        self.found = 0

    def _build(self) -> None:
        keys: list[np.ndarray] = []
        locs: list[np.ndarray] = []
        for fi, f in enumerate(self.files):
            ids = _read_ids(f)
            if not ids:
                continue
            keys.append(np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)))
            locs.append(np.full(len(ids), fi, dtype=np.int32))
        k = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        loc = np.concatenate(locs) if locs else np.zeros(0, np.int32)
        # keep the last occurrence of every key: a stable sort, then the last of each run
        order = np.argsort(k, kind="stable")
        k, loc = k[order], loc[order]
        last = np.ones(len(k), dtype=bool)
        if len(k) > 1:
            last[:-1] = k[1:] != k[:-1]
        self._keys, self._loc = k[last], loc[last]

    def __len__(self) -> int:
        with self._lock:
            if self._keys is None:
                self._build()
            return len(self._keys)  # type: ignore[arg-type]

    def get(self, id_: str) -> PriorRow | None:
        with self._lock:
            if self._keys is None:
                self._build()
            self.lookups += 1
            assert self._keys is not None and self._loc is not None
            h = hash(id_)
            i = int(np.searchsorted(self._keys, h))
            if i >= len(self._keys) or self._keys[i] != h:
                return None
            row = self._rows(int(self._loc[i])).get(id_)
        if row is None:
            return None
        prior = PriorRow.from_row(row)
        if prior is not None:
            self.found += 1
        return prior

    def _rows(self, fi: int) -> dict[str, dict[str, Any]]:
        if fi in self._cache:
            self._cache.move_to_end(fi)
            return self._cache[fi]
        try:
            table = read_part_file(self.files[fi], _fmt_of(self.files[fi]))
            rows = {r["id"]: r for r in table.to_pylist()}
        except (OSError, ValueError, Exception):  # noqa: BLE001 - a file removed or damaged meanwhile
            rows = {}
        self._cache[fi] = rows
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rows


def _read_ids(f: Path) -> list[str]:
    try:
        if f.suffix == ".parquet":
            return [i for i in pq.read_table(f, columns=["id"]).column("id").to_pylist() if i is not None]
        return [i for i in read_part_file(f, _fmt_of(f)).column("id").to_pylist() if i is not None]
    except Exception:  # noqa: BLE001 - an unreadable file offers nothing to reuse
        return []


class Priors:
    """Where a run looks for earlier rows: several indexes, first hit wins."""

    def __init__(self, indexes: list[RowIndex] | None = None):
        self.indexes = [i for i in (indexes or []) if i.files]

    def __bool__(self) -> bool:
        return bool(self.indexes)

    def get(self, id_: str) -> PriorRow | None:
        for ix in self.indexes:
            p = ix.get(id_)
            if p is not None:
                return p
        return None

    @classmethod
    def from_dirs(cls, dirs: list[Path]) -> "Priors":
        return cls([RowIndex(output_files(Path(d))) for d in dirs])
