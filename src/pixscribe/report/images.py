"""Re-read a row's image from its ``source``: paths, ``tar::member``, ``table#row=N``, URLs.

Sources are what the engine's readers wrote (see :mod:`pixscribe.io.readers`). Table rows
are read back through the readers themselves (:func:`~pixscribe.io.readers.open_shard` on
a one-row shard), so a parquet, jsonl or saved HF dataset row gives exactly the bytes the
engine saw. URLs are fetched only through :class:`~pixscribe.io.fetch.UrlFetcher`, the
engine's address guard (private, loopback and link-local addresses refused unless allowed),
and only when fetching is allowed at all.

Local sources (files, tars, tables) go through the run's own path guard, rebuilt from
``_run.json`` (:meth:`~pixscribe.io.plan.PathGuard.from_record`): a path outside the run's
input folders is not opened, and a row whose source the run refused (error kind
``refused``) is never opened again, whatever the guard says now. Files are opened by
:func:`~pixscribe.io.files.open_regular`: a pipe, socket or device is refused by type.

The bytes are checked against the row's ``sha256``: a source that changed since the run is
reported (the report marks it, the export refuses it), so a caption is never shown or
shipped beside a different image. No error quotes a byte of a file.
"""

from __future__ import annotations

import os
import tarfile
import threading
from dataclasses import dataclass
from typing import Any

from ..io.files import open_regular, read_regular
from ..io.lines import MAX_TABLE_ROW_BYTES, iter_lines
from ..io.plan import PathGuard, PathRefused, ShardSpec, is_url
from ..io.readers import open_shard
from ..record import PixscribeError, error_kind, sha256_hex

__all__ = ["SourceReader", "SourceError", "Loaded", "split_source"]


class SourceError(PixscribeError):
    """The image of a row cannot be read again (the message names the source and why)."""

    kind = "source"


@dataclass
class Loaded:
    data: bytes
    changed: bool  # the bytes' sha256 differs from the row's


def split_source(source: str) -> tuple[str, str, dict[str, str]]:
    """``(kind, path, extra)`` of a source: ``url``, ``file``, ``tar`` (extra ``member``) or
    ``table`` (extra ``row`` and maybe ``split``)."""
    if is_url(source):
        return "url", source, {}
    if os.path.exists(source):
        return "file", source, {}
    if "::" in source:
        path, member = source.split("::", 1)
        return "tar", path, {"member": member}
    if "#" in source:
        path, frag = source.rsplit("#", 1)
        parts = dict(p.split("=", 1) for p in frag.split("&") if "=" in p)
        if "row" in parts and parts["row"].isdigit():
            return "table", path, parts
    return "file", source, {}


class _JsonlIndex:
    """Byte offsets of a jsonl file's non-blank lines (rows are numbered as the reader numbers
    them), built once per file so any row is one seek away."""

    def __init__(self, path: str):
        with open_regular(path) as f:  # as the engine's planner counts them: a huge line is skipped in pieces
            self.offsets = [ln.offset for ln in iter_lines(f, MAX_TABLE_ROW_BYTES) if not ln.blank]


_NO_GUARD = PathGuard([], unknown="is not read: no input folders were given to the reader")
_LOCAL = ("file", "tar", "table")


class SourceReader:
    """Thread-safe reader of row images. ``guard`` says which local paths may be read (none
    without one); ``fetch_urls=False`` never touches the network; ``allow_private`` lifts
    the address guard as ``--allow-private-urls`` does for the engine."""

    def __init__(self, *, guard: PathGuard | None = None, fetch_urls: bool = True, allow_private: bool = False,
                 url_timeout: float = 30.0, url_max_bytes: int = 50 * 1024 * 1024):
        self.guard = guard or _NO_GUARD
        self.fetch_urls = fetch_urls
        self.allow_private = allow_private
        self.url_timeout = url_timeout
        self.url_max_bytes = url_max_bytes
        self._fetcher: Any = None
        self._lock = threading.Lock()
        self._tars: dict[str, tuple[tarfile.TarFile, threading.Lock, Any]] = {}
        self._jsonl: dict[str, _JsonlIndex] = {}

    def load_row(self, row: dict[str, Any]) -> Loaded:
        """The image of an output row; a source the run refused is not opened."""
        if error_kind(row.get("error")) == PathRefused.kind:
            raise SourceError(f"{row.get('source')}: not read: the run refused this source", kind=PathRefused.kind)
        return self.load(row.get("source"), row.get("sha256"))

    def load(self, source: str | None, sha256: str | None = None) -> Loaded:
        if not source:
            raise SourceError("the row has no source")
        kind, path, extra = split_source(source)
        why = self.guard.check(path) if kind in _LOCAL else None
        if why:
            raise SourceError(f"{path}: {why}", kind=PathRefused.kind)
        try:
            data = getattr(self, f"_{kind}")(path, extra)
        except PixscribeError as exc:  # a fetch or input error: keep its kind ("fetch", "input", ...)
            raise SourceError(str(exc), kind=exc.kind) from None
        except FileNotFoundError:
            raise SourceError(f"{path}: no such file") from None
        except OSError as exc:  # a pipe or device refused by type, a permission...: the reason, never the bytes
            raise SourceError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - one unreadable source never stops a report or an export
            raise SourceError(f"{source}: cannot read ({type(exc).__name__}: {exc})") from None
        return Loaded(data, bool(sha256) and sha256_hex(data) != sha256)

    def close(self) -> None:
        for tf, _, raw in self._tars.values():
            tf.close()
            raw.close()
        self._tars.clear()
        if self._fetcher is not None:
            self._fetcher.close()

    # ---- one reader per kind of source -------------------------------------------------
    def _file(self, path: str, extra: dict[str, str]) -> bytes:
        return read_regular(path)

    def _url(self, url: str, extra: dict[str, str]) -> bytes:
        if not self.fetch_urls:
            raise SourceError(f"{url}: not fetched (URLs are off for this report; drop --no-fetch to read them)")
        with self._lock:
            if self._fetcher is None:
                from ..io.fetch import UrlFetcher

                self._fetcher = UrlFetcher(allow_private=self.allow_private, timeout=self.url_timeout,
                                           max_bytes=self.url_max_bytes, retries=1)
        return self._fetcher.fetch(url)

    def _tar(self, path: str, extra: dict[str, str]) -> bytes:
        with self._lock:
            if path not in self._tars:
                raw = open_regular(path)
                try:
                    self._tars[path] = (tarfile.open(fileobj=raw, mode="r:*"), threading.Lock(), raw)
                except BaseException:
                    raw.close()
                    raise
            tf, lock, _ = self._tars[path]
        with lock:
            f = tf.extractfile(tf.getmember(extra["member"]))
            if f is None:
                raise SourceError(f"{path}::{extra['member']}: not a regular file in the tar")
            return f.read()

    def _table(self, path: str, extra: dict[str, str]) -> bytes:
        row = int(extra["row"])
        spec = self._table_spec(path, row, extra.get("split"))
        for rec in open_shard(spec, guard=self.guard).records():
            if rec.error:
                raise SourceError(rec.error.split(": ", 1)[-1])
            if rec.data is not None:
                return rec.data
            if rec.load is not None:
                if is_url(rec.source):  # a url column: through the guard, as any URL
                    return self._url(rec.source, {})
                return rec.load()
        raise SourceError(f"{path}: has no row {row}")

    def _table_spec(self, path: str, row: int, split: str | None) -> ShardSpec:
        if os.path.isdir(path):
            return ShardSpec(0, "hf", path, path=path, split=split, start=row, stop=row + 1)
        if path.endswith(".jsonl"):
            with self._lock:
                index = self._jsonl.get(path) or self._jsonl.setdefault(path, _JsonlIndex(path))
            if row >= len(index.offsets):
                raise SourceError(f"{path}: has no row {row} ({len(index.offsets)} rows)")
            return ShardSpec(0, "jsonl", path, path=path, offset=index.offsets[row], start=row, stop=row + 1)
        return ShardSpec(0, "parquet", path, path=path, start=row, stop=row + 1)
