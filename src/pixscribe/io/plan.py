"""Planning: the user's inputs -> *units* (each file, URL, tar or table they name, with its
size and modification time) -> numbered *shard specs*.

A shard spec is plain data (JSON-able), so the plan can be written once as the run's
manifest and read back by every later run (see ``engine/manifest.py``): the shards of a
resumed run are the ones it started with, whatever happened to the folder since, and
what changed is found by comparing units.

Order: the loose units (image files, directory contents, list entries, glob matches and
direct URLs, in input order, deduplicated by absolute path) come first, chunked by
``shard_size``; then each table / HF dataset (chunked by ``shard_size`` rows) and each tar
(one shard per tar), in input order. Directory walks and globs are sorted.

*Input roots* are the folders the inputs name (a folder itself; a file's folder; a glob's
fixed prefix). Paths read from lists and tables resolve against their own folder and must
stay inside the roots, as must symlinks inside an input folder, unless ``allow_any_path``.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..record import InputError
from .files import open_regular
from .lines import MAX_TABLE_ROW_BYTES, iter_lines

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
IMAGE_EXT_SET = frozenset(IMAGE_EXTENSIONS)
IMAGE_COLUMNS = ("image", "jpg", "png", "path", "url")
HF_HINT = "pip install 'pixscribe[hf]'"
_GLOB_CHARS = re.compile(r"[*?\[]")
_BRACE = re.compile(r"\{[^{}]*(?:,|\.\.)[^{}]*\}")
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_KNOWN_FILE_EXTS = IMAGE_EXT_SET | {"txt", "tar", "parquet", "jsonl", "ndjson", "tgz"}
LOOSE_KINDS = ("file", "url")
_CONTAINER_EXTS = frozenset({"tar", "parquet", "jsonl", "ndjson"})


def is_url(s: str) -> bool:
    return s[:8].lower().startswith(("http://", "https://"))


def ext_of(name: str) -> str:
    return os.path.splitext(name)[1][1:].lower()


@dataclass
class Unit:
    """One thing the inputs name: a loose ``file`` or ``url``, or a ``tar``, ``parquet``,
    ``jsonl`` or ``hf`` container. ``size``/``mtime_ns`` tell a modified file (None for URLs
    and for list entries that do not exist: those become error rows when read)."""

    kind: str
    path: str
    size: int | None = None
    mtime_ns: int | None = None
    rows: int | None = None  # tables: row count
    offsets: list[int] = field(default_factory=list)  # jsonl: byte offset of every shard_size-th row
    splits: list[tuple[str | None, int]] = field(default_factory=list)  # hf: (split, rows)

    @property
    def stamp(self) -> tuple[int | None, int | None]:
        return (self.size, self.mtime_ns)


@dataclass
class ShardSpec:
    """A shard as plain data. ``files`` shards list their items; container shards name one
    container and a row range."""

    index: int
    kind: str  # files | tar | parquet | jsonl | hf
    name: str
    items: list[str] = field(default_factory=list)
    path: str | None = None
    start: int | None = None
    stop: int | None = None
    offset: int | None = None
    split: str | None = None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardSpec":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})

    def paths(self) -> list[str]:
        """Every unit path this shard reads."""
        return list(self.items) if self.kind == "files" else [self.path or ""]


# ---- classification ------------------------------------------------------------------------
class Expansion:
    """The units and input roots of a list of input specs."""

    def __init__(self, shard_size: int = 10_000):
        self.shard_size = shard_size
        self.units: list[Unit] = []
        self.roots: list[str] = []
        self.listed: list[tuple[str, str]] = []  # (container, the list or pattern that named it)
        self._seen: set[str] = set()

    def _root(self, path: str) -> None:
        r = os.path.realpath(path)
        if r not in self.roots:
            self.roots.append(r)

    def add_unit(self, u: Unit) -> None:
        if u.path in self._seen:
            return
        self._seen.add(u.path)
        self.units.append(u)

    def add_loose(self, item: str, *, stat: bool = True) -> None:
        if is_url(item):
            self.add_unit(Unit("url", item))
            return
        # abspath, not realpath: one syscall less per file, and the source names the path given
        item = os.path.abspath(item)
        if item in self._seen:
            return
        size = mtime = None
        if stat:
            try:
                st = os.stat(item)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass  # a missing list entry: an error row when it is read
        self.add_unit(Unit("file", item, size, mtime))

    def add_input(self, spec: str, *, origin: str | None = None) -> None:
        spec = str(spec)
        if not spec.strip():
            raise InputError(f"empty input{_from(origin)}")
        if is_url(spec):
            self.add_loose(spec)
            return
        path = os.path.expanduser(spec)
        if os.path.exists(path):
            if origin is None:
                self._root(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
            self._add_path(path, origin)
            return
        if _BRACE.search(path):
            from braceexpand import braceexpand

            expanded = list(braceexpand(path))
            if len(expanded) > 1 or expanded[0] != path:
                for p in expanded:
                    self.add_input(p, origin=origin or spec)
                if origin is None:
                    for p in expanded:
                        self._root(os.path.dirname(os.path.abspath(p)))
                return
        if _GLOB_CHARS.search(path):
            self._add_glob(path, spec, origin)
            return
        raise InputError(
            f"{spec}: no such file or directory{_from(origin)}; check the path (inputs are read relative to {os.getcwd()})"
        )

    def _add_glob(self, path: str, spec: str, origin: str | None) -> None:
        matches = sorted(_glob.glob(path, recursive=True))
        if not matches:
            raise InputError(f"{spec}: the pattern matched no files{_from(origin)}")
        if origin is None:
            fixed = path[: _GLOB_CHARS.search(path).start()]  # type: ignore[union-attr]
            self._root(os.path.dirname(os.path.abspath(fixed + "x")))
        for m in matches:
            if os.path.isdir(m) and not is_hf_dataset_dir(m):
                for p in walk_images(m):  # a folder matched by a pattern may hold no images: fine
                    self.add_loose(p)
                continue
            if os.path.isfile(m) and ext_of(m) not in _KNOWN_FILE_EXTS and not m.lower().endswith(_COMPRESSED_TAR):
                continue  # dir/* may match sidecars (e.g. .json); keep only readable inputs
            self._add_path(m, origin or spec)

    def check_listed(self, guard: "PathGuard") -> None:
        """Containers (tars, tables, datasets) named by a list must stay inside the input
        roots too: their rows are read whole, so one outside is refused before the run."""
        for path, origin in self.listed:
            why = guard.check(path)
            if why:
                raise PathRefused(f"{path} (from {origin}): {why}")

    def _add_path(self, path: str, origin: str | None) -> None:
        if origin is not None and (os.path.isdir(path) and is_hf_dataset_dir(path) or ext_of(path) in _CONTAINER_EXTS
                                   or path.lower().endswith(_COMPRESSED_TAR)):
            self.listed.append((os.path.abspath(path), origin))
        if os.path.isdir(path):
            if is_hf_dataset_dir(path):
                self._add_hf(path)
                return
            found = walk_images(path)
            if not found:
                raise InputError(
                    f"{path}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)}; hidden files are "
                    f"skipped){_from(origin)}; for tars or tables inside it pass a pattern like "
                    f"'{os.path.join(path, '*.tar')}'"
                )
            for p in found:
                self.add_loose(p)
            return
        ext = ext_of(path)
        if ext in IMAGE_EXT_SET:
            self.add_loose(path)
        elif ext == "txt":
            self._add_list(path)
        elif ext == "tar" or path.lower().endswith(_COMPRESSED_TAR):
            self.add_unit(Unit("tar", os.path.abspath(path), *_stamp(path)))
        elif ext == "parquet":
            self._add_parquet(path)
        elif ext in ("jsonl", "ndjson"):
            self._add_jsonl(path)
        else:
            raise InputError(
                f"{path}: unknown input type {('.' + ext) if ext else '(no extension)'}{_from(origin)}; expected an "
                f"image ({', '.join(IMAGE_EXTENSIONS)}), a directory, a .txt list, a webdataset .tar (or .tar.gz), a "
                ".parquet or .jsonl table, a saved Hugging Face dataset directory, or an http(s) URL"
            )

    def _add_list(self, path: str) -> None:
        base = os.path.dirname(os.path.abspath(path))
        try:
            with open_regular(path) as f:
                lines = f.read().decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InputError(f"{path}: cannot read the list: {reason or type(exc).__name__}") from None
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
            p = os.path.normpath(p)
            ext = ext_of(p)
            if (ext in ("tar", "parquet", "jsonl", "ndjson") or p.lower().endswith(_COMPRESSED_TAR)
                    or (ext not in IMAGE_EXT_SET and os.path.isdir(p))):
                self.add_input(p, origin=path)
            else:
                self.add_loose(p)  # a missing image is an error row when it is loaded

    def _add_parquet(self, path: str) -> None:
        import pyarrow.parquet as pq

        path = os.path.abspath(path)
        try:
            f = open_regular(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
        try:
            with f, pq.ParquetFile(f) as pf:
                n = pf.metadata.num_rows
                names = list(pf.schema_arrow.names)
        except Exception:  # noqa: BLE001 - any pyarrow failure means an unreadable table
            raise InputError(f"{path}: cannot read parquet metadata; is it a parquet file?") from None
        check_table_columns(path, names)
        self.add_unit(Unit("parquet", path, *_stamp(path), rows=n))

    def _add_jsonl(self, path: str) -> None:
        path = os.path.abspath(path)
        offsets: list[int] = []  # one pass: count non-blank lines, remember where each shard starts
        n = 0
        try:
            with open_regular(path) as f:
                for line in iter_lines(f, MAX_TABLE_ROW_BYTES):  # a huge line is skipped in pieces, never held
                    if not line.blank:
                        if n % self.shard_size == 0:
                            offsets.append(line.offset)
                        n += 1
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        self.add_unit(Unit("jsonl", path, *_stamp(path), rows=n, offsets=offsets))

    def _add_hf(self, path: str) -> None:
        datasets = import_datasets(path)
        path = os.path.abspath(path)
        try:
            obj = datasets.load_from_disk(path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot load the saved Hugging Face dataset: {type(exc).__name__}") from None
        if isinstance(obj, datasets.DatasetDict):
            parts = [(s, obj[s]) for s in sorted(obj.keys())]
        else:
            parts = [(None, obj)]
        for _, ds in parts:
            if not any(isinstance(f, datasets.Image) for f in ds.features.values()):
                check_table_columns(path, list(ds.column_names))
        size, mtime = _dir_stamp(path)
        self.add_unit(Unit("hf", path, size, mtime, rows=sum(d.num_rows for _, d in parts),
                           splits=[(s, d.num_rows) for s, d in parts]))


def expand_inputs(inputs: list[str], shard_size: int = 10_000) -> Expansion:
    """Classify ``inputs`` into units (raises :class:`InputError` for an input that does not
    exist, a pattern that matches nothing, or an unknown file type)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # type: ignore[list-item]
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not inputs:
        raise InputError("no inputs given; pass image files, folders, lists, globs, tars, tables or URLs")
    exp = Expansion(shard_size)
    for spec in inputs:
        exp.add_input(os.fspath(spec))
    return exp


def specs_from_units(units: list[Unit], shard_size: int, start: int = 0) -> list[ShardSpec]:
    """Number the units' shards from ``start``: loose units first, then containers."""
    out: list[ShardSpec] = []
    loose = [u.path for u in units if u.kind in LOOSE_KINDS]
    for i in range(0, len(loose), shard_size):
        chunk = loose[i: i + shard_size]
        out.append(ShardSpec(start + len(out), "files", f"files[{i}:{i + len(chunk)}]", items=chunk, count=len(chunk)))
    for u in units:
        if u.kind in LOOSE_KINDS:
            continue
        disp = display(u.path)
        if u.kind == "tar":
            out.append(ShardSpec(start + len(out), "tar", disp, path=u.path))
        elif u.kind == "parquet":
            for a in range(0, u.rows or 0, shard_size):
                b = min(u.rows or 0, a + shard_size)
                out.append(ShardSpec(start + len(out), "parquet", f"{disp}[{a}:{b}]", path=u.path, start=a, stop=b,
                                     count=b - a))
        elif u.kind == "jsonl":
            for j, off in enumerate(u.offsets):
                a, b = j * shard_size, min(u.rows or 0, (j + 1) * shard_size)
                out.append(ShardSpec(start + len(out), "jsonl", f"{disp}[{a}:{b}]", path=u.path, start=a, stop=b,
                                     offset=off, count=b - a))
        elif u.kind == "hf":
            for split, n in u.splits:
                label = disp + (f"[{split}]" if split else "")
                for a in range(0, n, shard_size):
                    b = min(n, a + shard_size)
                    out.append(ShardSpec(start + len(out), "hf", f"{label}[{a}:{b}]", path=u.path, start=a, stop=b,
                                         split=split, count=b - a))
    return out


# ---- paths ----------------------------------------------------------------------------------
class PathRefused(InputError):
    """A path the guard refused. Its kind, ``refused``, is recorded in the row's ``error``, so
    ``pixscribe report`` and ``export`` know never to open that row's source again."""

    kind = "refused"


class PathGuard:
    """Paths read from lists, tables and symlinks must stay inside the input roots.

    One guard for every command: ``caption`` builds it from its inputs and records it in
    ``_run.json`` (:meth:`record`); ``report`` and ``export`` rebuild it from there
    (:meth:`from_record`) before they re-read a row's source. ``unknown`` is the reason
    given for every path when no roots were recorded (an output from an older pixscribe)."""

    def __init__(self, roots: list[str], allow_any: bool = False, unknown: str | None = None):
        self.roots = [r.rstrip(os.sep) or os.sep for r in roots]
        self.allow_any = allow_any
        self.unknown = unknown

    def check(self, path: str) -> str | None:
        """None if ``path`` may be read, else why not (never quoting the file)."""
        if self.allow_any:
            return None
        if not self.roots:
            return self.unknown
        real = os.path.realpath(path)
        for r in self.roots:
            if real == r or real.startswith(r + os.sep) or r == os.sep:
                return None
        how = "is a symlink to a file" if real != os.path.abspath(path) else "is"
        return f"{how} outside the input folders ({', '.join(self.roots[:3])}); pass --allow-any-path to read it"

    def record(self) -> dict[str, Any]:
        return {"roots": list(self.roots), "allow_any_path": self.allow_any}

    @classmethod
    def from_record(cls, rec: Any, allow_any: bool = False, where: str = "the output") -> "PathGuard":
        """The guard a run recorded (``_run.json``'s ``input_guard``); ``allow_any`` lifts it.
        With no record, every path is refused with a reason that says so."""
        if isinstance(rec, dict) and isinstance(rec.get("roots"), list):
            return cls([str(r) for r in rec["roots"]], allow_any or bool(rec.get("allow_any_path")),
                       unknown="is not read: the run had no input folders")
        return cls([], allow_any, unknown=f"is not read: {where} does not record the run's input folders (written "
                                          "by an older pixscribe); pass --allow-any-path to read its sources")


# ---- helpers --------------------------------------------------------------------------------
def _from(origin: str | None) -> str:
    return f" (from {origin})" if origin else ""


def _stamp(path: str) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None


def _dir_stamp(path: str) -> tuple[int, int]:
    size = mtime = 0
    for dirpath, _, files in os.walk(path):
        for fn in files:
            try:
                st = os.stat(os.path.join(dirpath, fn))
            except OSError:
                continue
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime


def display(path: str) -> str:
    """A short, stable description of a path: relative to the cwd when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def walk_images(root: str) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and ext_of(fn) in IMAGE_EXT_SET:
                found.append(os.path.join(dirpath, fn))
    found.sort()
    return found


def is_hf_dataset_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "dataset_info.json")) and os.path.isfile(os.path.join(path, "state.json"))
    )


def import_datasets(path: str):
    from ..deps import require

    return require("datasets", extra="hf", what=f"{path} (a saved Hugging Face dataset)")


def check_table_columns(path: str, names: list[str]) -> None:
    if not any(c in names for c in IMAGE_COLUMNS):
        raise InputError(
            f"{path}: the table has no image column (expected one of {', '.join(IMAGE_COLUMNS)}; "
            f"found {', '.join(names) or 'no columns'})"
        )
