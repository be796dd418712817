"""Output writers: rows -> arrow tables -> parquet, jsonl or webdataset tar, atomically.

Every file is written to a temporary name in the same directory, fsynced, then
renamed, so a reader (or a resumed run) never sees half a file.

Schema: the row's known columns have fixed types; any other column (an input's own
column, a method's column) is stored as a string (JSON text for non-string values),
so every part of a dataset has compatible columns whatever the inputs held.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

KNOWN_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "source": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "sha256": pa.string(),
    "method": pa.string(),
    "caption": pa.string(),
    "model": pa.string(),
    "prompt_sha": pa.string(),
    "seconds": pa.float64(),
    "error": pa.string(),
    "provenance": pa.string(),
}

PART_COMPRESSION = "zstd"
EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl", "tar": ".tar"}


def _as_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def rows_to_table(rows: list[dict[str, Any]], column_order: list[str] | None = None) -> pa.Table:
    names: list[str] = list(column_order or [])
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    arrays = []
    fields = []
    for n in names:
        typ = KNOWN_TYPES.get(n, pa.string())
        vals = [r.get(n) for r in rows]
        if typ == pa.string():
            vals = [_as_text(v) for v in vals]
        arrays.append(pa.array(vals, type=typ))
        fields.append(pa.field(n, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def table_to_bytes(table: pa.Table, fmt: str) -> bytes:
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()
    if fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in table.to_pylist()]
        return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
    if fmt == "tar":
        return _rows_to_tar(table.to_pylist())
    raise ValueError(f"unknown output format {fmt!r} (parquet, jsonl, tar)")


def _rows_to_tar(rows: Iterable[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add_rows(tar, rows)
    return buf.getvalue()


def _add_rows(tar: tarfile.TarFile, rows: Iterable[dict[str, Any]]) -> None:
    """webdataset layout: ``{key}.json`` with the whole row and ``{key}.txt`` with the caption."""
    for r in rows:
        key = str(r["id"]).replace("/", "_").replace(".", "_")
        members = {"json": json.dumps(r, ensure_ascii=False, default=str).encode("utf-8")}
        if r.get("caption") is not None:
            members["txt"] = str(r["caption"]).encode("utf-8")
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add missing columns as nulls, order and cast columns to ``schema``."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


class PartWriter:
    """Streams tables into one part file (parquet, jsonl or webdataset tar) at a temporary
    name; :meth:`commit` fsyncs and renames it into place, so memory stays one batch."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema):
        self.path = Path(path)
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
        self._f = open(self.tmp, "wb")
        self._pq = pq.ParquetWriter(self._f, schema, compression=PART_COMPRESSION) if fmt == "parquet" else None
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.GNU_FORMAT) if fmt == "tar" else None
        if fmt not in EXTENSIONS:
            raise ValueError(f"unknown output format {fmt!r} (parquet, jsonl, tar)")

    def write(self, table: pa.Table) -> None:
        table = conform(table, self.schema)
        self.rows += table.num_rows
        if self._pq is not None:
            self._pq.write_table(table)
        elif self._tar is not None:
            _add_rows(self._tar, table.to_pylist())
        else:
            self._f.write(table_to_bytes(table, "jsonl"))

    def commit(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._tar is not None:
            self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return rows_to_table([])
    return pa.concat_tables(tables, promote_options="permissive")
