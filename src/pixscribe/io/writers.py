"""Output writers: rows -> arrow tables -> parquet, jsonl or webdataset tar, atomically.

Every file is written to a temporary name in the same directory, fsynced, then
renamed, so a reader (or a resumed run) never sees half a file.

Schema: the row's known columns have fixed types; a method may type its own columns
(``Method.column_types``, e.g. a list of structs); any other column (an input's own column,
a method's untyped column) is stored as a string (JSON text for non-string values), so every
part of a dataset has compatible columns whatever the inputs held.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
import urllib.parse
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
    "stages": pa.string(),
}

PART_COMPRESSION = "zstd"
EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl", "tar": ".tar"}


def as_text(v: Any) -> str | None:
    """How a value is stored in a text column (JSON for non-string values): also how reuse
    compares the input values a stage read (engine/apply.py)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def rows_to_table(rows: list[dict[str, Any]], column_order: list[str] | None = None,
                  types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Rows -> a table: known columns typed, ``types`` (a method's typed columns) as given,
    every other column as text (JSON for non-string values)."""
    names: list[str] = list(column_order or [])
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    arrays = []
    fields = []
    for n in names:
        typ = (types or {}).get(n) or KNOWN_TYPES.get(n, pa.string())
        vals = [r.get(n) for r in rows]
        if typ == pa.string():
            vals = [as_text(v) for v in vals]
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


TMP_MARK = ".tmp-"
_HOST = socket.gethostname().replace("-", "_")


def tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that says who wrote it (host, pid), so a later
    run can remove what a killed process left behind."""
    return path.with_name(f".{path.name}{TMP_MARK}{_HOST}-{os.getpid()}-{time.monotonic_ns()}")


def parse_tmp_name(name: str) -> tuple[str, int] | None:
    """(host, pid) of a temporary file made by :func:`tmp_name`, or None."""
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    try:
        host, pid, _ = name.rsplit(TMP_MARK, 1)[1].rsplit("-", 2)
        return host, int(pid)
    except ValueError:
        return None


def atomic_write_bytes(path: Path, data: bytes, fsync_dir: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync_dir:
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


def member_key(id_: Any) -> str:
    """A webdataset key for any id, one to one: characters other than letters, digits, ``_``
    and ``-`` are percent-encoded (``a/b`` -> ``a%2Fb``, ``a.b`` -> ``a%2Eb``), so distinct ids
    never share a member name and the key has no dot (webdataset splits at the first one).
    ``urllib.parse.unquote`` gives the id back."""
    out = urllib.parse.quote(str(id_), safe="-_")
    return out.replace(".", "%2E").replace("~", "%7E")


def _add_rows(tar: tarfile.TarFile, rows: Iterable[dict[str, Any]]) -> None:
    """webdataset layout: ``{key}.json`` with the whole row and ``{key}.txt`` with the caption."""
    for r in rows:
        key = member_key(r["id"])
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


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through (parquet and tar writers only append)."""

    def __init__(self, f: Any):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        b = bytes(b)
        self.sha.update(b)
        self.size += len(b)
        return self._f.write(b)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()


class PartWriter:
    """Streams tables into one part file (parquet, jsonl or webdataset tar) at a temporary
    name; :meth:`commit` fsyncs and renames it into place, so memory stays one batch. The
    file's size and sha256 are known after the commit (``size``, ``sha256``)."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema):
        if fmt not in EXTENSIONS:
            raise ValueError(f"unknown output format {fmt!r} (parquet, jsonl, tar)")
        self.path = Path(path)
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_name(self.path)
        self._raw = open(self.tmp, "wb")
        self._f = _HashingFile(self._raw)
        self._pq = pq.ParquetWriter(self._f, schema, compression=PART_COMPRESSION) if fmt == "parquet" else None
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.GNU_FORMAT) if fmt == "tar" else None
        self.size = 0
        self.sha256 = ""

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
        try:
            if self._pq is not None:
                self._pq.close()
            if self._tar is not None:
                self._tar.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.size, self.sha256 = self._f.size, self._f.sha.hexdigest()
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        try:
            self._raw.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return rows_to_table([])
    return pa.concat_tables(tables, promote_options="permissive")
