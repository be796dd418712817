"""Input readers: shard specs (see :mod:`pixscribe.io.plan`) -> lazy records.

:func:`open_shard` turns a :class:`~pixscribe.io.plan.ShardSpec` into a :class:`Shard` whose
:meth:`Shard.records` yields :class:`~pixscribe.record.Record` objects lazily: loose files
and URLs, webdataset tars (members grouped by key), parquet / jsonl rows and rows of a
dataset saved with ``datasets.save_to_disk``. :func:`plan_shards` does both steps.

Record sources are absolute paths (``/data/x.jpg``, ``/data/s/00001.tar::k1.jpg``,
``/data/t.parquet#row=12``) or URLs, so they do not change when a rerun starts in
another directory. Paths read from lists, tables and symlinks are checked against the
input roots (:class:`~pixscribe.io.plan.PathGuard`) when they are loaded; error messages
name the file and the reason, never its contents.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import os
import tarfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..record import InputError, Record
from .files import open_regular, read_regular
from .lines import MAX_TABLE_ROW_BYTES, iter_lines
from .plan import (
    IMAGE_COLUMNS,
    IMAGE_EXT_SET,
    IMAGE_EXTENSIONS,
    PathGuard,
    PathRefused,
    ShardSpec,
    expand_inputs,
    import_datasets,
    is_url,
    specs_from_units,
)

if TYPE_CHECKING:  # pragma: no cover
    from .fetch import UrlFetcher

__all__ = ["Shard", "open_shard", "plan_shards", "IMAGE_EXTENSIONS", "IMAGE_COLUMNS", "is_url"]

_IMAGE_EXT_SET = IMAGE_EXT_SET
# Columns that hold the image, in the order they are tried for each row.
BYTES_COLUMNS = ("image", "jpg", "png")
KEY_COLUMNS = ("key", "id")
_PARQUET_BATCH_ROWS = 64  # rows converted to python at a time (image bytes can be large)


# --------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------
@dataclass
class Shard:
    index: int  # global shard index, stable for a run (it comes from the manifest)
    name: str  # human description, e.g. "shards/00003.tar" or "files[0:1000]"
    count: int | None  # number of records if known cheaply, else None
    _iter: Callable[["Shard"], Iterator[Record]] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    spec: ShardSpec | None = field(default=None, repr=False, compare=False)

    def records(self) -> Iterator[Record]:
        """Lazily yield this shard's records, with ``shard`` and ``index`` set."""
        for i, rec in enumerate(self._iter(self)):
            rec.shard = self.index
            rec.index = i
            yield rec


class _LazyFetcher:
    """The fetcher given to :func:`open_shard`, or a default one built on first use."""

    def __init__(self, fetcher: "UrlFetcher | None"):
        self._fetcher = fetcher
        self._lock = threading.Lock()

    def get(self) -> "UrlFetcher":
        if self._fetcher is None:
            with self._lock:
                if self._fetcher is None:
                    from .fetch import UrlFetcher

                    self._fetcher = UrlFetcher()
        return self._fetcher

    def fetch(self, url: str) -> bytes:
        return self.get().fetch(url)


# --------------------------------------------------------------------------------------
# Loaders (zero-arg callables returning bytes)
# --------------------------------------------------------------------------------------
class _FileLoader:
    __slots__ = ("path", "what", "guard")

    def __init__(self, path: str, what: str | None = None, guard: PathGuard | None = None):
        self.path = path
        self.what = what
        self.guard = guard

    def __call__(self) -> bytes:
        where = f" (from {self.what})" if self.what else ""
        why = self.guard.check(self.path) if self.guard is not None else None
        if why:
            raise PathRefused(f"{self.path}: {why}{where}")
        try:
            return read_regular(self.path)
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file{where}") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, not an image file{where}") from None
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read{where}: {exc.strerror or type(exc).__name__}") from None


class _UrlLoader:
    __slots__ = ("url", "fetcher")

    def __init__(self, url: str, fetcher: _LazyFetcher):
        self.url = url
        self.fetcher = fetcher

    def __call__(self) -> bytes:
        return self.fetcher.fetch(self.url)


# --------------------------------------------------------------------------------------
# Opening shards
# --------------------------------------------------------------------------------------
def open_shard(spec: ShardSpec, fetcher: "UrlFetcher | _LazyFetcher | None" = None,
               guard: PathGuard | None = None) -> Shard:
    """A lazy :class:`Shard` reading what ``spec`` names."""
    lf = fetcher if isinstance(fetcher, _LazyFetcher) else _LazyFetcher(fetcher)
    g = guard or PathGuard([], allow_any=True)
    k = spec.kind
    if k == "files":
        it: Callable[[Shard], Iterator[Record]] = lambda shard: _iter_loose(spec.items, lf, g)
    elif k == "tar":
        it = lambda shard: _iter_tar(spec.path or "")
    elif k == "parquet":
        it = lambda shard: _iter_parquet(spec.path or "", spec.start or 0, spec.stop or 0, lf, g)
    elif k == "jsonl":
        it = lambda shard: _iter_jsonl(spec.path or "", spec.offset or 0, spec.start or 0, spec.stop or 0, lf, g)
    elif k == "hf":
        it = lambda shard: _iter_hf(spec.path or "", spec.split, spec.start or 0, spec.stop or 0, lf, g)
    else:
        raise ValueError(f"unknown shard kind {k!r}")
    return Shard(index=spec.index, name=spec.name, count=spec.count, _iter=it, spec=spec)


def plan_shards(
    inputs: list[str],
    *,
    shard_size: int = 10_000,
    fetcher: "UrlFetcher | None" = None,
    allow_any_path: bool = True,
) -> list[Shard]:
    """Classify ``inputs`` and split them into numbered, deterministic shards.

    Raises :class:`~pixscribe.record.InputError` for an input that does not exist, a
    pattern that matches nothing, or an unknown file type. URLs (direct inputs, list
    entries, ``url`` columns) are fetched with ``fetcher``; without one, a default
    :class:`~pixscribe.io.fetch.UrlFetcher` (private addresses refused) is made on
    first use.
    """
    exp = expand_inputs(inputs, shard_size)
    lf = _LazyFetcher(fetcher)
    guard = PathGuard(exp.roots, allow_any=allow_any_path)
    exp.check_listed(guard)
    return [open_shard(s, lf, guard) for s in specs_from_units(exp.units, shard_size)]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _failed(source: str, message: str, **fields: Any) -> Record:
    """A record that carries an input error instead of an image."""
    rec = Record(source=source, **fields)
    rec.fail(InputError(message))
    return rec


def _from(origin: str | None) -> str:
    return f" (from {origin})" if origin else ""


def jsonable(v: Any) -> Any:
    """Turn a value read from a table into plain JSON-serialisable python."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(b).decode("ascii")
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        try:
            return jsonable(v.item())
        except Exception:  # noqa: BLE001
            pass
    if hasattr(v, "tolist"):
        return jsonable(v.tolist())
    return str(v)


# --------------------------------------------------------------------------------------
# Loose files and URLs
# --------------------------------------------------------------------------------------
def _iter_loose(items: list[str], fetcher: _LazyFetcher, guard: PathGuard) -> Iterator[Record]:
    for item in items:
        load = _UrlLoader(item, fetcher) if is_url(item) else _FileLoader(item, guard=guard)
        yield Record(source=item, load=load)


# --------------------------------------------------------------------------------------
# Tables (parquet, jsonl, HF datasets): one row -> one record
# --------------------------------------------------------------------------------------
def _row_record(
    row: dict[str, Any], source: str, base_dir: str, fetcher: _LazyFetcher, guard: PathGuard,
    extra: dict[str, Any] | None = None,
) -> Record:
    columns: dict[str, Any] = {}
    for k, v in row.items():
        if k in BYTES_COLUMNS:
            continue
        columns[k] = jsonable(v)
    if extra:
        columns.update(extra)
    key: str | None = None
    for kc in KEY_COLUMNS:
        if row.get(kc) is not None and row.get(kc) != "":
            key = str(jsonable(row[kc]))
            break

    for col in IMAGE_COLUMNS:
        val = row.get(col)
        if val is None:
            continue
        if isinstance(val, dict):  # HF style {"bytes": ..., "path": ...}
            b = val.get("bytes")
            if b:
                return Record(source=source, key=key, columns=columns, data=bytes(b))
            val = val.get("path")
            if not val:
                continue
        if isinstance(val, (bytes, bytearray, memoryview)):
            if col in ("path", "url"):
                val = bytes(val).decode("utf-8", "replace")
            else:
                if len(val) == 0:
                    continue
                return Record(source=source, key=key, columns=columns, data=bytes(val))
        if isinstance(val, str):
            val = val.strip()
            if not val:
                continue
            if is_url(val):
                return Record(source=val, key=key, columns=columns, load=_UrlLoader(val, fetcher))
            if col == "url":
                return _failed(source, f"{source}: the url column holds {val!r}, which is not an http(s) URL", key=key, columns=columns)
            p = os.path.expanduser(val)
            if not os.path.isabs(p):
                p = os.path.join(base_dir, p)
            p = os.path.normpath(p)
            return Record(source=p, key=key, columns=columns, load=_FileLoader(p, source, guard))
        why = f"the {col} column holds a {type(val).__name__}, not image bytes, a path or a URL"
        return _failed(source, f"{source}: {why}", key=key, columns=columns)
    return _failed(source, f"{source} has no image (expected one of {', '.join(IMAGE_COLUMNS)})", key=key, columns=columns)


def _iter_parquet(path: str, start: int, stop: int, fetcher: _LazyFetcher, guard: PathGuard) -> Iterator[Record]:
    import pyarrow.parquet as pq

    base = os.path.dirname(path)
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    try:
        f = open_regular(path)
    except OSError as exc:
        yield _failed(f"{disp}#rows={start}:{stop}", f"{path}: cannot read: {exc.strerror or type(exc).__name__}")
        return
    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:  # noqa: BLE001
        f.close()
        yield _failed(f"{disp}#rows={start}:{stop}", f"{path}: cannot open parquet: {exc}")
        return
    try:
        md = pf.metadata
        groups: list[int] = []
        first_row = None
        row0 = 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            if row0 + n > start and row0 < stop:
                groups.append(g)
                if first_row is None:
                    first_row = row0
            row0 += n
        if not groups:
            return
        row = first_row or 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups):
                n = batch.num_rows
                if row + n <= start:
                    row += n
                    continue
                lo = max(0, start - row)
                hi = min(n, stop - row)
                if lo > 0 or hi < n:
                    batch = batch.slice(lo, max(0, hi - lo))
                for i, r in enumerate(batch.to_pylist()):
                    rn = row + lo + i
                    yield _row_record(r, f"{disp}#row={rn}", base, fetcher, guard)
                row += n
                if row >= stop:
                    break
        except Exception as exc:  # noqa: BLE001 - a corrupt page: report it and the rows it covers
            yield _failed(f"{disp}#rows={max(row, start)}:{stop}", f"{path}: cannot read rows {max(row, start)}..{stop - 1}: {exc}")
    finally:
        pf.close()
        f.close()


def _iter_jsonl(
    path: str, offset: int, start: int, stop: int, fetcher: _LazyFetcher, guard: PathGuard
) -> Iterator[Record]:
    base = os.path.dirname(path)
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    try:
        f = open_regular(path)
    except OSError as exc:
        yield _failed(f"{disp}#rows={start}:{stop}", f"{path}: cannot read: {exc.strerror or exc}")
        return
    with f:
        f.seek(offset)
        rn = start
        for line in iter_lines(f, MAX_TABLE_ROW_BYTES, offset):
            if rn >= stop:
                break
            if line.blank:
                continue
            source = f"{disp}#row={rn}"
            rn += 1
            if line.data is None:
                yield _failed(source, f"{source}: a row of {line.size:,} bytes (line {line.number}) is over the limit of "
                                      f"{MAX_TABLE_ROW_BYTES:,} bytes a jsonl row may hold; put large images in files "
                                      "named by a path column")  # fmt: skip
                continue
            try:
                obj = json.loads(line.data)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                yield _failed(source, f"{source}: not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield _failed(source, f"{source}: expected a JSON object per line, got {type(obj).__name__}")
                continue
            for col in BYTES_COLUMNS:  # JSON has no bytes: accept data: URIs and long base64 strings
                v = obj.get(col)
                if isinstance(v, str):
                    decoded = _maybe_base64(v)
                    if decoded is not None:
                        obj[col] = decoded
            yield _row_record(obj, source, base, fetcher, guard)


def _maybe_base64(v: str) -> bytes | None:
    if v.startswith("data:") and ";base64," in v[:100]:
        v = v.split(",", 1)[1]
    elif len(v) < 1024 or is_url(v):
        return None  # short strings are paths
    try:
        return base64.b64decode(v, validate=True)
    except ValueError:
        return None


def _iter_hf(
    path: str, split: str | None, start: int, stop: int, fetcher: _LazyFetcher, guard: PathGuard
) -> Iterator[Record]:
    datasets = import_datasets(path)
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    obj = datasets.load_from_disk(path)
    ds = obj[split] if split is not None else obj
    # Image features: read the stored bytes/path instead of decoding to PIL and back.
    for name, feat in ds.features.items():
        if isinstance(feat, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    image_feature = next((n for n, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    sub = ds.select(range(start, stop))
    extra = {"split": split} if split is not None else None
    for i, row in enumerate(sub):
        rn = start + i
        source = f"{disp}#split={split}&row={rn}" if split is not None else f"{disp}#row={rn}"
        if image_feature is not None and image_feature not in IMAGE_COLUMNS:
            row = dict(row)
            row["image"] = row.pop(image_feature)
        yield _row_record(row, source, path, fetcher, guard, extra)


# --------------------------------------------------------------------------------------
# Webdataset tars: one tar -> one shard, members grouped by key
# --------------------------------------------------------------------------------------
def _split_key(name: str) -> tuple[str, str] | None:
    """webdataset's rule: key = path up to the first dot of the basename, ext = the rest."""
    d, base = os.path.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _group_record(tar_disp: str, key: str, members: dict[str, tuple[str, bytes]]) -> Record:
    image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    if image_ext is None:  # e.g. "jpg" under a compound extension like "0.jpg"
        image_ext = next((e for e in members if e.rsplit(".", 1)[-1] in _IMAGE_EXT_SET), None)
    columns: dict[str, Any] = {}
    for ext, (_name, data) in sorted(members.items()):
        if ext == image_ext or ext.rsplit(".", 1)[-1] in _IMAGE_EXT_SET:
            continue
        if ext == "json":
            try:
                obj = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return _failed(f"{tar_disp}::{_name}", f"{tar_disp}::{_name}: sidecar is not valid JSON: {exc}", key=key, columns=columns)
            if isinstance(obj, dict):
                for k, v in obj.items():
                    columns.setdefault(str(k), jsonable(v))
            else:
                columns["json"] = jsonable(obj)
        elif ext == "txt":
            columns["caption"] = data.decode("utf-8", "replace")
        elif ext.endswith(".json"):  # compound names like "meta.json" stay one column, parsed
            try:
                columns[ext] = jsonable(json.loads(data.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                columns[ext] = data.decode("utf-8", "replace")
        else:  # .cls, .2.txt, ...: a text column named by the extension
            columns[ext] = data.decode("utf-8", "replace")
    if image_ext is None:
        found = ", ".join(sorted(members)) or "nothing"
        return _failed(
            f"{tar_disp}::{key}",
            f"{tar_disp}::{key} has no image member (found {found}; expected one of {', '.join(IMAGE_EXTENSIONS)})",
            key=key,
            columns=columns,
        )
    name, data = members[image_ext]
    return Record(source=f"{tar_disp}::{name}", key=key, columns=columns, data=data)


def count_tar_samples(path: str) -> int | None:
    """The rows :func:`_iter_tar` will yield for an uncompressed tar, from its member headers
    alone (each member's bytes are seeked over, never read): one per run of a key, plus one
    per duplicate member. None for a compressed tar (counting would decompress it all) or
    one that cannot be opened (its reader reports why)."""
    try:
        raw = open_regular(path)
    except OSError:
        return None
    try:
        tf = tarfile.open(fileobj=raw, mode="r:")
    except (tarfile.TarError, OSError, EOFError):
        raw.close()
        return None
    rows, current, exts = 0, None, set()
    try:
        while True:
            info = tf.next()
            tf.members.clear()  # keep no index: a shard may hold millions of members
            if info is None:
                break
            parts = _split_key(info.name) if info.isfile() else None
            if parts is None:
                continue
            key, ext = parts
            if key != current:
                rows, current, exts = rows + 1, key, set()
            elif ext in exts:
                rows += 1  # a second member with this key and extension: an error row
            exts.add(ext)
    except (tarfile.TarError, OSError, EOFError):
        rows += 1  # the reader's "corrupt or truncated" row
    finally:
        tf.close()
        raw.close()
    return rows


def _iter_tar(path: str) -> Iterator[Record]:
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    current_key: str | None = None
    members: dict[str, tuple[str, bytes]] = {}
    dups: list[Record] = []
    n_members = 0
    try:
        raw = open_regular(path)
    except OSError as exc:
        yield _failed(disp, f"{path}: cannot read the tar: {exc.strerror or type(exc).__name__}")
        return
    try:
        tf = tarfile.open(mode="r|*", fileobj=raw)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raw.close()
        yield _failed(disp, f"{path}: cannot open the tar: {exc}; is it a (possibly compressed) tar file?")
        return
    try:
        while True:
            try:
                info = tf.next()
                if info is None:
                    break
                if not info.isfile():
                    continue
                parts = _split_key(info.name)
                if parts is None:
                    continue  # hidden files and names without an extension carry no sample
                key, ext = parts
                f = tf.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {info.name} is truncated ({len(data)} of {info.size} bytes)")
                n_members += 1
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                if members and current_key is not None:
                    yield _group_record(disp, current_key, members)
                    yield from dups
                    members = {}
                reason = str(exc) or type(exc).__name__
                yield _failed(disp, f"{path}: corrupt or truncated tar after {n_members} members: {reason}")
                return
            if key != current_key:
                if members and current_key is not None:
                    yield _group_record(disp, current_key, members)
                    yield from dups
                current_key, members, dups = key, {}, []
            if ext in members:
                # same key and extension twice: not a valid webdataset sample. The sample (its
                # first member) keeps the key; the extra member is an error row after it, so
                # the engine gives it its own id (key~2) and nothing is dropped.
                dups.append(_failed(f"{disp}::{info.name}#{len(dups) + 2}",
                                    f"{disp}::{info.name}: a second member with key {key!r} and extension .{ext}; "
                                    "the first one was used", key=key))
                continue
            members[ext] = (info.name, data)
        if members and current_key is not None:
            yield _group_record(disp, current_key, members)
            yield from dups
    finally:
        tf.close()
        raw.close()
