"""DuckDB over an output directory's parts: which rows a report shows, and run aggregates.

DuckDB reads only the columns a query names, so choosing a sample of 1,000 rows out of ten
million reads the ``id`` column (and whatever ``--where`` and ``--sort`` name), not the
captions and expert JSON of every row. A selected row is addressed by DuckDB's virtual
columns ``file_index`` and ``file_row_number``; :meth:`Query.fetch` then reads just the row
groups that hold the selected rows, one part at a time, with pyarrow.

Parts written as jsonl or tar are converted to parquet (one at a time) in a scratch
directory first, so every query sees one kind of file.

DuckDB expands ``*``, ``?`` and ``[...]`` in every path it is given, even in an explicit list:
an output folder named ``run[1]`` would read ``run1``'s parts instead. Paths are handed over
by :func:`literal_path`, each glob character as a one-character class (``[[]``), so each
names exactly its own file.
"""

from __future__ import annotations

import bisect
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..deps import require
from ..engine.state import read_part_file
from ..errors import InputFileError
from .parts import FORMATS, OutputDir, OutputError

__all__ = ["Query", "QueryError"]

_VIRTUAL = ("file_index", "file_row_number")
_FI, _RN = "__pixscribe_file", "__pixscribe_row"  # the view's names for them


class QueryError(InputFileError):
    """A ``--where`` or ``--sort`` that DuckDB cannot run (the message says which and why)."""

    kind = "QueryError"  # as error rows and messages named it before it joined the family


def _duckdb() -> Any:
    return require("duckdb", extra="report", what="pixscribe report (--where, --sort and the run statistics)")


def _parquet_parts(out: OutputDir, scratch: Path) -> list[Path]:
    files = []
    for p in out.parts:
        if p.suffix == ".parquet":
            files.append(p)
            continue
        dest = scratch / f"{p.stem}.parquet"
        pq.write_table(read_part_file(p, FORMATS[p.suffix]), dest)
        files.append(dest)
    return files


_GLOB_CHARS = re.compile(r"([\[*?])")


def literal_path(path: str | Path) -> str:
    """``path`` (made absolute: DuckDB expands a leading ``~``) as a DuckDB file pattern that
    matches only itself: ``[``, ``*`` and ``?`` each written as a one-character class."""
    return _GLOB_CHARS.sub(r"[\1]", os.path.abspath(path))


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_clause(flag: str, text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if ";" in text:
        raise QueryError(f"{flag} {text!r}: one SQL expression, without ';'")
    return text.strip()


class Query:
    """SQL over the parts of ``out`` as one view ``rows`` (columns unioned by name)."""

    def __init__(self, out: OutputDir, scratch: Path):
        duckdb = _duckdb()
        self.out = out
        self.files = _parquet_parts(out, scratch)
        self.con = duckdb.connect()
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")  # it would draw on the user's terminal
        names = {n for f in self.files for n in pq.read_schema(f).names}
        clash = [c for c in _VIRTUAL if c in names]
        if clash:
            raise OutputError(f"{out.path}: a column named {clash[0]!r} hides DuckDB's virtual column of that name, "
                              "which the report needs to find rows; rename that input column")
        listing = ", ".join(_sql_string(literal_path(f)) for f in self.files)
        self.con.execute(f"CREATE VIEW rows AS SELECT file_index AS {_FI}, file_row_number AS {_RN}, * "
                         f"FROM read_parquet([{listing}], union_by_name = true)")
        self.types = {name: typ for name, typ, *_ in self.con.execute("DESCRIBE rows").fetchall()
                      if name not in (_FI, _RN)}

    @property
    def columns(self) -> list[str]:
        return list(self.types)

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        return self.con.execute(sql, params or []).fetchone()[0]

    def all(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def _run(self, flag: str, sql: str, params: list[Any], arrays: bool = False) -> Any:
        duckdb = _duckdb()
        try:
            res = self.con.execute(sql, params)
            return res.fetchnumpy() if arrays else res.fetchall()
        except duckdb.Error as exc:
            msg = str(exc).splitlines()[0]
            raise QueryError(f"{flag}: {msg} (columns: {', '.join(self.columns)})") from None

    def count(self, where: str | None = None) -> int:
        w = _check_clause("--where", where)
        return int(self._run("--where", f"SELECT count(*) FROM rows WHERE ({w or 'true'})", [])[0][0])

    def select(self, where: str | None, sort: str | None, sample: int, seed: int) -> np.ndarray:
        """``(file_index, file_row_number)`` of the rows to show, in display order, as an
        ``(n, 2)`` int64 array (16 bytes a row, even when every row of a huge output is shown).

        With ``sort``, the first ``sample`` rows in that order. Without, a reproducible
        sample: the ``sample`` rows whose ``md5(seed:id)`` is smallest, shown in file order.
        ``sample <= 0`` shows every matching row.
        """
        w = _check_clause("--where", where) or "true"
        s = _check_clause("--sort", sort)
        limit = f"LIMIT {int(sample)}" if sample > 0 else ""
        if s:
            order, flag, params = f"{s}, {_FI}, {_RN}", "--where/--sort", []
        elif sample > 0:
            order, flag, params = "md5(? || ':' || coalesce(id, ''))", "--where", [str(seed)]
        else:
            order, flag, params = f"{_FI}, {_RN}", "--where", []
        got = self._run(flag, f"SELECT {_FI} AS f, {_RN} AS r FROM rows WHERE ({w}) ORDER BY {order} {limit}",
                        params, arrays=True)
        refs = np.stack([np.asarray(got["f"], np.int64), np.asarray(got["r"], np.int64)], axis=1).reshape(-1, 2)
        if not s and sample > 0:
            refs = refs[np.lexsort((refs[:, 1], refs[:, 0]))]
        return refs

    def fetch(self, refs: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position in refs, row dict)`` for every ref, reading one part at a time and only
        the row groups that hold selected rows (rows come grouped by file, not in ref order)."""
        by_file: dict[int, list[tuple[int, int]]] = {}
        for pos, (fi, rn) in enumerate(refs):
            by_file.setdefault(int(fi), []).append((int(rn), pos))
        for fi in sorted(by_file):
            yield from _rows_of_file(self.files[fi], sorted(by_file[fi]))


def _rows_of_file(path: Path, wanted: list[tuple[int, int]]) -> Iterator[tuple[int, dict[str, Any]]]:
    pf = pq.ParquetFile(path)
    try:
        md = pf.metadata
        starts, acc = [], 0
        for g in range(md.num_row_groups):
            starts.append(acc)
            acc += md.row_group(g).num_rows
        groups: dict[int, list[tuple[int, int]]] = {}
        for rn, pos in wanted:
            g = bisect.bisect_right(starts, rn) - 1
            groups.setdefault(g, []).append((rn - starts[g], pos))
        for g in sorted(groups):
            table = pf.read_row_group(g)
            idx = pa.array([i for i, _ in groups[g]], type=pa.int64())
            for (_, pos), row in zip(groups[g], table.take(idx).to_pylist()):
                yield pos, row
    finally:
        pf.close()
