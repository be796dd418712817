"""Input readers: turn the user's inputs into numbered shards of lazy records.

:func:`plan_shards` classifies every input (image file, directory, ``.txt`` list,
glob, brace range, webdataset ``.tar``, ``.parquet``/``.jsonl`` table, a dataset saved
with ``datasets.save_to_disk``, or an http(s) URL) and returns a deterministic list of
:class:`Shard` objects. Nothing heavy happens at planning time: tables are sized from
cheap row counts (parquet metadata, a line count for jsonl) and tars are not opened.
:meth:`Shard.records` then yields :class:`~pixscribe.record.Record` objects lazily.

Record sources are absolute paths (``/data/x.jpg``, ``/data/s/00001.tar::k1.jpg``,
``/data/t.parquet#row=12``) or URLs, so they do not change when a rerun starts in
another directory; shard names are shorter (relative to the cwd when below it).

Shard order: the loose files (image files, directory contents, list entries, glob
matches and direct URLs, gathered in input order and deduplicated by resolved path)
come first, chunked by ``shard_size``; then each table / HF dataset (chunked by
``shard_size`` rows) and each tar (one shard per tar), in input order. Directory walks
and globs are sorted, so the same inputs and ``shard_size`` always give the same shards.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import glob as _glob
import json
import os
import re
import tarfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..record import InputError, Record

if TYPE_CHECKING:  # pragma: no cover
    from .fetch import UrlFetcher

__all__ = ["Shard", "plan_shards", "IMAGE_EXTENSIONS", "IMAGE_COLUMNS", "is_url"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_IMAGE_EXT_SET = frozenset(IMAGE_EXTENSIONS)
# Columns that hold the image, in the order they are tried for each row.
BYTES_COLUMNS = ("image", "jpg", "png")
IMAGE_COLUMNS = ("image", "jpg", "png", "path", "url")
KEY_COLUMNS = ("key", "id")
HF_HINT = "pip install 'pixscribe[hf]'"
_GLOB_CHARS = re.compile(r"[*?\[]")
_BRACE = re.compile(r"\{[^{}]*(?:,|\.\.)[^{}]*\}")
_PARQUET_BATCH_ROWS = 64  # rows converted to python at a time (image bytes can be large)


def is_url(s: str) -> bool:
    return s[:8].lower().startswith(("http://", "https://"))


def _ext(name: str) -> str:
    return os.path.splitext(name)[1][1:].lower()


# --------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------
@dataclass
class Shard:
    index: int  # global shard index, 0..n-1, stable for the same inputs + shard_size
    name: str  # human description, e.g. "shards/00003.tar" or "files[0:1000]"
    count: int | None  # number of records if known cheaply, else None
    _iter: Callable[["Shard"], Iterator[Record]] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def records(self) -> Iterator[Record]:
        """Lazily yield this shard's records, with ``shard`` and ``index`` set."""
        for i, rec in enumerate(self._iter(self)):
            rec.shard = self.index
            rec.index = i
            yield rec


class _LazyFetcher:
    """The fetcher given to :func:`plan_shards`, or a default one built on first use."""

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
    __slots__ = ("path", "what")

    def __init__(self, path: str, what: str | None = None):
        self.path = path
        self.what = what

    def __call__(self) -> bytes:
        where = f" (from {self.what})" if self.what else ""
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file{where}") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, not an image file{where}") from None
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read{where}: {exc.strerror or exc}") from None


class _UrlLoader:
    __slots__ = ("url", "fetcher")

    def __init__(self, url: str, fetcher: _LazyFetcher):
        self.url = url
        self.fetcher = fetcher

    def __call__(self) -> bytes:
        return self.fetcher.fetch(self.url)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------
class _Plan:
    def __init__(self, shard_size: int, fetcher: _LazyFetcher):
        self.shard_size = shard_size
        self.fetcher = fetcher
        # absolute paths (record ids of unreadable files must not depend on the cwd) or URLs
        self.loose: list[str] = []
        self._seen: set[str] = set()
        self.structured: list[tuple[str, Callable[["Shard"], Iterator[Record]], int | None]] = []

    def add_loose(self, item: str) -> None:
        if not is_url(item):
            # abspath, not realpath: no syscall per file (a million-file folder would spend
            # ~20 s in realpath); a file reached through two symlinked paths is read twice
            # but, having the same bytes, gets one id and one row
            item = os.path.abspath(item)
        if item in self._seen:
            return
        self._seen.add(item)
        self.loose.append(item)

    # -- classification -----------------------------------------------------------------
    def add_input(self, spec: str, *, origin: str | None = None) -> None:
        spec = str(spec)
        if not spec.strip():
            raise InputError(f"empty input{_from(origin)}")
        if is_url(spec):
            self.add_loose(spec)
            return
        path = os.path.expanduser(spec)
        if os.path.exists(path):
            self._add_path(path, origin)
            return
        if _BRACE.search(path):
            from braceexpand import braceexpand

            expanded = list(braceexpand(path))
            if len(expanded) > 1 or expanded[0] != path:
                for p in expanded:
                    self.add_input(p, origin=origin or spec)
                return
        if _GLOB_CHARS.search(path):
            matches = sorted(_glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"{spec}: the pattern matched no files{_from(origin)}")
            for m in matches:
                if os.path.isdir(m) and not _is_hf_dataset_dir(m):
                    for p in _walk_images(m):  # a folder matched by a pattern may hold no images: fine
                        self.add_loose(p)
                    continue
                if os.path.isfile(m) and _ext(m) not in _KNOWN_FILE_EXTS and not m.lower().endswith(_COMPRESSED_TAR):
                    continue  # dir/* may match sidecars (e.g. .json); keep only readable inputs
                self._add_path(m, origin or spec)
            return
        raise InputError(f"{spec}: no such file or directory{_from(origin)}; check the path (inputs are read relative to {os.getcwd()})")

    def _add_path(self, path: str, origin: str | None) -> None:
        if os.path.isdir(path):
            if _is_hf_dataset_dir(path):
                self._add_hf(path)
            else:
                found = _walk_images(path)
                if not found:
                    raise InputError(
                        f"{path}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)}; hidden files are "
                        f"skipped){_from(origin)}; for tars or tables inside it pass a pattern like '{os.path.join(path, '*.tar')}'"
                    )
                for p in found:
                    self.add_loose(p)
            return
        ext = _ext(path)
        if ext in _IMAGE_EXT_SET:
            self.add_loose(path)
        elif ext == "txt":
            self._add_list(path)
        elif ext == "tar" or path.lower().endswith(_COMPRESSED_TAR):
            self._add_tar(path)
        elif ext == "parquet":
            self._add_parquet(path)
        elif ext in ("jsonl", "ndjson"):
            self._add_jsonl(path)
        else:
            raise InputError(
                f"{path}: unknown input type {('.' + ext) if ext else '(no extension)'}{_from(origin)}; expected an image "
                f"({', '.join(IMAGE_EXTENSIONS)}), a directory, a .txt list, a webdataset .tar (or .tar.gz), a .parquet or .jsonl "
                "table, a saved Hugging Face dataset directory, or an http(s) URL"
            )

    def _add_list(self, path: str) -> None:
        base = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the list: {exc}") from None
        for line in lines:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            if is_url(item):
                self.add_loose(item)
                continue
            p = os.path.expanduser(item)
            if not os.path.isabs(p):
                p = os.path.join(base, p)
            ext = _ext(p)
            if (
                ext in ("tar", "parquet", "jsonl", "ndjson")
                or p.lower().endswith(_COMPRESSED_TAR)
                or (ext not in _IMAGE_EXT_SET and os.path.isdir(p))
            ):
                self.add_input(p, origin=path)
            else:
                # A missing image here becomes an error row when it is loaded, not a planning error.
                self.add_loose(p)

    def _add_tar(self, path: str) -> None:
        path = os.path.abspath(path)
        self.structured.append((_display(path), lambda shard, p=path: _iter_tar(p), None))

    def _add_parquet(self, path: str) -> None:
        import pyarrow.parquet as pq

        path = os.path.abspath(path)
        try:
            with pq.ParquetFile(path) as pf:
                n = pf.metadata.num_rows
                names = list(pf.schema_arrow.names)
        except Exception as exc:  # noqa: BLE001 - any pyarrow failure means an unreadable table
            raise InputError(f"{path}: cannot read parquet metadata: {exc}; is it a parquet file?") from None
        _check_table_columns(path, names)
        for start in range(0, max(n, 0), self.shard_size):
            stop = min(n, start + self.shard_size)
            self.structured.append(
                (
                    f"{_display(path)}[{start}:{stop}]",
                    lambda shard, a=start, b=stop: _iter_parquet(path, a, b, self.fetcher),
                    stop - start,
                )
            )

    def _add_jsonl(self, path: str) -> None:
        path = os.path.abspath(path)
        # One pass over the file: count non-blank lines, remember where each shard starts.
        offsets: list[int] = []
        n = 0
        pos = 0
        try:
            with open(path, "rb") as f:
                for line in f:
                    if line.strip():
                        if n % self.shard_size == 0:
                            offsets.append(pos)
                        n += 1
                    pos += len(line)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        for i, off in enumerate(offsets):
            start = i * self.shard_size
            stop = min(n, start + self.shard_size)
            self.structured.append(
                (
                    f"{_display(path)}[{start}:{stop}]",
                    lambda shard, o=off, a=start, b=stop: _iter_jsonl(path, o, a, b, self.fetcher),
                    stop - start,
                )
            )

    def _add_hf(self, path: str) -> None:
        datasets = _import_datasets(path)
        path = os.path.abspath(path)
        try:
            obj = datasets.load_from_disk(path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot load the saved Hugging Face dataset: {exc}") from None
        if isinstance(obj, datasets.DatasetDict):
            splits = [(s, obj[s].num_rows) for s in sorted(obj.keys())]
            parts = [obj[s] for s in sorted(obj.keys())]
        else:
            splits = [(None, obj.num_rows)]
            parts = [obj]
        for ds in parts:
            if not any(isinstance(f, datasets.Image) for f in ds.features.values()):
                _check_table_columns(path, list(ds.column_names))
        del obj
        for split, n in splits:
            label = _display(path) + (f"[{split}]" if split else "")
            for start in range(0, n, self.shard_size):
                stop = min(n, start + self.shard_size)
                self.structured.append(
                    (
                        f"{label}[{start}:{stop}]",
                        lambda shard, s=split, a=start, b=stop: _iter_hf(path, s, a, b, self.fetcher),
                        stop - start,
                    )
                )

    # -- result ---------------------------------------------------------------------------
    def shards(self) -> list[Shard]:
        out: list[Shard] = []
        for start in range(0, len(self.loose), self.shard_size):
            chunk = self.loose[start : start + self.shard_size]
            out.append(
                Shard(
                    index=len(out),
                    name=f"files[{start}:{start + len(chunk)}]",
                    count=len(chunk),
                    _iter=lambda shard, c=chunk: _iter_loose(c, self.fetcher),
                )
            )
        for name, it, count in self.structured:
            out.append(Shard(index=len(out), name=name, count=count, _iter=it))
        return out


_KNOWN_FILE_EXTS = _IMAGE_EXT_SET | {"txt", "tar", "parquet", "jsonl", "ndjson", "tgz"}
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def plan_shards(
    inputs: list[str],
    *,
    shard_size: int = 10_000,
    fetcher: "UrlFetcher | None" = None,
) -> list[Shard]:
    """Classify ``inputs`` and split them into numbered, deterministic shards.

    Raises :class:`~pixscribe.record.InputError` for an input that does not exist, a
    pattern that matches nothing, or an unknown file type. URLs (direct inputs, list
    entries, ``url`` columns) are fetched with ``fetcher``; without one, a default
    :class:`~pixscribe.io.fetch.UrlFetcher` (private addresses refused) is made on
    first use.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # type: ignore[list-item]
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not inputs:
        raise InputError("no inputs given; pass image files, folders, lists, globs, tars, tables or URLs")
    plan = _Plan(shard_size, _LazyFetcher(fetcher))
    for spec in inputs:
        plan.add_input(os.fspath(spec))
    return plan.shards()


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


def _display(path: str) -> str:
    """A short, stable description of a path: relative to the cwd when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _walk_images(root: str) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            if _ext(fn) in _IMAGE_EXT_SET:
                found.append(os.path.join(dirpath, fn))
    found.sort()
    return found


def _is_hf_dataset_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "dataset_info.json")) and os.path.isfile(os.path.join(path, "state.json"))
    )


def _import_datasets(path: str):
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{path}: is a saved Hugging Face dataset, but the 'datasets' package is not installed; {HF_HINT}"
        ) from None
    return datasets


def _check_table_columns(path: str, names: list[str]) -> None:
    if not any(c in names for c in IMAGE_COLUMNS):
        raise InputError(
            f"{path}: the table has no image column (expected one of {', '.join(IMAGE_COLUMNS)}; "
            f"found {', '.join(names) or 'no columns'})"
        )


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
def _iter_loose(items: list[str], fetcher: _LazyFetcher) -> Iterator[Record]:
    for item in items:
        load = _UrlLoader(item, fetcher) if is_url(item) else _FileLoader(item)
        yield Record(source=item, load=load)


# --------------------------------------------------------------------------------------
# Tables (parquet, jsonl, HF datasets): one row -> one record
# --------------------------------------------------------------------------------------
def _row_record(
    row: dict[str, Any], source: str, base_dir: str, fetcher: _LazyFetcher, extra: dict[str, Any] | None = None
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
            return Record(source=p, key=key, columns=columns, load=_FileLoader(p, source))
        why = f"the {col} column holds a {type(val).__name__}, not image bytes, a path or a URL"
        return _failed(source, f"{source}: {why}", key=key, columns=columns)
    return _failed(source, f"{source} has no image (expected one of {', '.join(IMAGE_COLUMNS)})", key=key, columns=columns)


def _iter_parquet(path: str, start: int, stop: int, fetcher: _LazyFetcher) -> Iterator[Record]:
    import pyarrow.parquet as pq

    base = os.path.dirname(path)
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001
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
                    yield _row_record(r, f"{disp}#row={rn}", base, fetcher)
                row += n
                if row >= stop:
                    break
        except Exception as exc:  # noqa: BLE001 - a corrupt page: report it and the rows it covers
            yield _failed(f"{disp}#rows={max(row, start)}:{stop}", f"{path}: cannot read rows {max(row, start)}..{stop - 1}: {exc}")
    finally:
        pf.close()


def _iter_jsonl(path: str, offset: int, start: int, stop: int, fetcher: _LazyFetcher) -> Iterator[Record]:
    base = os.path.dirname(path)
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    try:
        f = open(path, "rb")
    except OSError as exc:
        yield _failed(f"{disp}#rows={start}:{stop}", f"{path}: cannot read: {exc.strerror or exc}")
        return
    with f:
        f.seek(offset)
        rn = start
        for line in f:
            if rn >= stop:
                break
            if not line.strip():
                continue
            source = f"{disp}#row={rn}"
            rn += 1
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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
            yield _row_record(obj, source, base, fetcher)


def _maybe_base64(v: str) -> bytes | None:
    if v.startswith("data:") and ";base64," in v[:100]:
        v = v.split(",", 1)[1]
    elif len(v) < 1024 or is_url(v):
        return None  # short strings are paths
    try:
        return base64.b64decode(v, validate=True)
    except ValueError:
        return None


def _iter_hf(path: str, split: str | None, start: int, stop: int, fetcher: _LazyFetcher) -> Iterator[Record]:
    datasets = _import_datasets(path)
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
        yield _row_record(row, source, path, fetcher, extra)


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


def _iter_tar(path: str) -> Iterator[Record]:
    disp = path  # sources use absolute paths: stable when a rerun starts elsewhere
    current_key: str | None = None
    members: dict[str, tuple[str, bytes]] = {}
    n_members = 0
    try:
        tf = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
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
                    members = {}
                reason = str(exc) or type(exc).__name__
                yield _failed(disp, f"{path}: corrupt or truncated tar after {n_members} members: {reason}")
                return
            if key != current_key:
                if members and current_key is not None:
                    yield _group_record(disp, current_key, members)
                current_key, members = key, {}
            if ext in members:
                # same key and extension twice: not a valid webdataset sample; report it, keep the first
                yield _failed(f"{disp}::{info.name}", f"{disp}::{info.name}: duplicate member for key {key!r}", key=key)
                continue
            members[ext] = (info.name, data)
        if members and current_key is not None:
            yield _group_record(disp, current_key, members)
    finally:
        tf.close()
