"""The part files of a pixscribe output directory, read a batch at a time.

Both ``pixscribe report`` and ``pixscribe export`` read an output directory through this
module: the ``part-*`` files (parquet, jsonl or webdataset tar, as ``--format`` wrote them),
never the batch files of unfinished shards, and never every row at once. Parquet parts are
streamed by record batch with column projection; a jsonl or tar part is one shard (10,000
rows by default), so it is read whole, one part at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..engine.state import read_part_file
from ..errors import InputFileError
from ..io.plan import PathGuard

__all__ = ["OutputDir", "OutputError", "part_files", "iter_batches", "parse_json"]

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".tar": "tar"}


class OutputError(InputFileError):
    """The directory is not a readable pixscribe output (the message names it and why)."""

    kind = "OutputError"  # as error rows and messages named it before it joined the family


def part_files(out_dir: Path) -> list[Path]:
    """``part-*.parquet|jsonl|tar`` of ``out_dir``, sorted; raises :class:`OutputError` if none."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir}: not a directory (expected a pixscribe output directory)")
    files = sorted(p for p in out_dir.glob("part-*") if p.suffix in FORMATS and p.is_file())
    if not files:
        raise OutputError(f"{out_dir}: no part-*.parquet, part-*.jsonl or part-*.tar files; "
                          "is this the -o directory of `pixscribe caption`, and has a shard finished?")
    return files


def iter_batches(path: Path, columns: list[str] | None = None, batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """Record batches of one part file; ``columns`` projects (missing ones are left out)."""
    fmt = FORMATS[path.suffix]
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        try:
            have = set(pf.schema_arrow.names)
            cols = None if columns is None else [c for c in columns if c in have]
            yield from pf.iter_batches(batch_size=batch_rows, columns=cols)
        finally:
            pf.close()
        return
    table = read_part_file(path, fmt)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    yield from table.to_batches(max_chunksize=batch_rows)


def parse_json(value: Any) -> Any:
    """A method column's value: JSON text parsed, python values (an Arrow list or struct
    column read with ``to_pylist``) as they are, anything unparsable as None."""
    if value is None or not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


@dataclass
class OutputDir:
    """An output directory: its parts, ``_run.json`` and run summaries."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.parts = part_files(self.path)

    def run_info(self) -> dict[str, Any]:
        """``_run.json`` (the config, the method's stages and fingerprints, the models), or {}."""
        return _read_json(self.path / "_run.json") or {}

    def source_guard(self, allow_any: bool = False) -> PathGuard:
        """The run's path guard (``_run.json``'s ``input_guard``): which local sources report
        and export may re-read. ``allow_any`` is their ``--allow-any-path``."""
        return PathGuard.from_record(self.run_info().get("input_guard"), allow_any, where=str(self.path / "_run.json"))

    def summaries(self) -> list[dict[str, Any]]:
        """Every ``_state/summaries/*.json`` (one per run or shard task), oldest first."""
        out = []
        for f in sorted((self.path / "_state" / "summaries").glob("*.json")):
            d = _read_json(f)
            if isinstance(d, dict):
                out.append(dict(d, _file=f.name))
        return out

    def unfinished_shards(self) -> int:
        """Shards with batch files but no part yet (their rows are not shown)."""
        root = self.path / "_state" / "batches"
        return sum(1 for d in root.glob("*") if d.is_dir() and any(d.glob("*.parquet"))) if root.is_dir() else 0

    def columns(self) -> list[str]:
        """The union of the parts' column names, in first-seen order (parquet footers only)."""
        names: list[str] = []
        for p in self.parts:
            if p.suffix == ".parquet":
                cols = pq.read_schema(p).names
            else:
                cols = read_part_file(p, FORMATS[p.suffix]).column_names
            names += [c for c in cols if c not in names]
        return names

    def batches(self, columns: list[str] | None = None, batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        for p in self.parts:
            yield from iter_batches(p, columns, batch_rows)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
