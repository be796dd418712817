"""``pixscribe export``: an output directory in a training format.

- ``webdataset``: ``DEST/shard-000000.tar`` ... (``--shard-size`` samples each), per sample
  ``{key}.{jpg|png|...}`` (the original bytes re-read from ``source``; none with
  ``--text-only``), ``{key}.json`` (the row, ``text`` included) and ``{key}.txt`` (``text``);
  keys are ids made safe as the engine's tar writer makes them (:func:`member_key`).
- ``hf``: a local dataset written with ``datasets.save_to_disk`` (an ``image`` column unless
  ``--text-only``; ``width``, ``height`` and ``seconds`` typed, every other column a string,
  structs and lists as JSON text), with a dataset card ``README.md``.
- ``hub``: the same rows as parquet shards under ``DEST/data/`` with a dataset card whose YAML
  header ``datasets.load_dataset(DEST)`` and the Hub read (see :mod:`pixscribe.report.hub`).
- ``folder``: a trainer's image folder, ``<stem>.<ext>`` + ``<stem>.txt`` (+ ``.json``), and
  ``embed``: copies of the images with the caption in their XMP/IPTC/EXIF description (see
  :mod:`pixscribe.report.layouts`).
- ``jsonl``: one JSON object per row (the output's columns as stored, plus ``text``).

An output column named like one the export adds (``text``, LAION's alt text; ``text_source``;
``image`` in hf and hub) is kept under ``input_<name>``, as the engine keeps input columns
named like its own; ``--original-column text`` then reads it there.

``text`` is the caption (``--caption-column``), or a seeded per-id mix of columns, with an
optional prefix (see :mod:`pixscribe.report.captions`); ``text_source`` says which was taken.
With ``--mix-original P`` (P is the original's share; Recap-DataComp-1B's mix, :mod:`.mix`) and
``--mix-per sample`` (the default) the rows also carry both captions (``text_original``,
``text_recaption``) so a training loader draws again per sample and epoch
(:class:`~pixscribe.report.mix.MixedCaption`), as the paper mixes; ``text`` is its epoch-0
draw. ``--mix-per row`` writes only the fixed ``text``.

Rows whose captioning failed (``error`` set) are left out unless ``--keep-errors``; a row
whose image cannot be read again (gone, refused URL, changed since the run) is left out of
the image formats and listed in ``DEST/_export_errors.jsonl``. Sources are re-read through
the run's own path guard (see :mod:`pixscribe.report.images`): a source the run refused or
that lies outside its input folders is never opened, and only bytes of a known image type
are written.

DEST is never the output directory, inside it, or a folder holding it. Everything is
written under a temporary name beside DEST and renamed at the end: a failed export leaves
no half DEST. ``--overwrite`` replaces only an earlier export: a folder with ``_export.json``
(written into every folder export), a jsonl file whose first line is an exported row, or an
empty folder or file (see :mod:`pixscribe.report.dest`).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from ..deps import require
from ..engine.prepare import input_name
from ..errors import InputFileError
from ..io.writers import member_key
from .captions import TextChoice, parse_mix
from .card import RowStats, card
from .dest import check_apart, check_replaceable, swap_into_place
from .images import SourceError, SourceReader
from .mix import MIX_PER, ORIGINAL, RECAPTION, takes_original
from .parts import OutputDir

__all__ = ["ExportOptions", "ExportResult", "ExportError", "export", "takes_original", "image_extension"]

FORMATS = ("webdataset", "hf", "hub", "folder", "embed", "jsonl")
_IMAGE_LAYOUTS = ("folder", "embed")  # a copy of every image is the point: no --text-only
_WINDOW = 64  # rows whose images are read at once


class ExportError(InputFileError):
    kind = "ExportError"  # as error rows and messages named it before it joined the family


@dataclass
class ExportOptions:
    fmt: str = "jsonl"
    caption_column: str = "caption"
    mix_original: float | None = None
    mix: str | None = None  # "a=0.3,b=0.7" or "a,b"
    lines: bool = False
    prefix: str = ""
    suffix: str = ""
    seed: int = 0
    mix_per: str = "sample"  # also write both captions, so a loader can draw per sample and epoch (mix.py)
    original_column: str = "org_caption"
    sidecars: bool = False
    test_fraction: float = 0.0
    text_only: bool = False
    keep_errors: bool = False
    shard_size: int = 10_000
    overwrite: bool = False
    fetch_urls: bool = True
    allow_private_urls: bool = False
    allow_any_path: bool = False
    workers: int = 4


@dataclass
class ExportResult:
    dest: Path
    fmt: str
    written: int = 0
    error_rows_skipped: int = 0
    image_errors: int = 0
    no_text: int = 0
    took_original: int = 0
    had_original: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        mix = f", text from the original caption for {self.took_original} of {self.had_original} rows that have one" \
            if self.had_original else ""
        if self.sources and not self.had_original:
            mix = ", text from " + ", ".join(f"{k} {n}" for k, n in sorted(self.sources.items()))
        skipped = f", {self.error_rows_skipped} error rows left out (--keep-errors keeps them)" \
            if self.error_rows_skipped else ""
        listed = self.dest / "_export_errors.jsonl"
        bad = f", {self.image_errors} rows whose image could not be read again (listed in {listed})" \
            if self.image_errors else ""
        empty = f", {self.no_text} rows with no caption text left out (listed in {listed})" if self.no_text else ""
        splits = f" ({', '.join(f'{k} {n}' for k, n in self.splits.items())})" if len(self.splits) > 1 else ""
        return f"export: {self.written} rows as {self.fmt}{splits} -> {self.dest}{mix}{skipped}{bad}{empty}"


def _check_original_column(out: OutputDir, opts: ExportOptions) -> None:
    """``--mix-original`` reads ``--original-column``: one the output does not have (a typo)
    would mix in 0 % originals without a word, so it stops before anything is written."""
    if opts.mix_original is None:
        return
    cols = out.columns()
    if opts.original_column not in cols:
        shown = ", ".join(c for c in cols if c not in ("provenance", "stages"))
        raise ExportError(f"--original-column {opts.original_column!r}: {out.path} has no such column "
                          f"(its columns: {shown})")


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def image_extension(data: bytes, source: str | None) -> str:
    """The webdataset extension of image bytes, from their magic number (every input image
    type has one). Bytes of no known image type are refused, whatever the source is named,
    and the message never quotes them."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise SourceError(f"{source}: not a known image format ({len(data)} bytes of no image type)")


def added_columns(opts: ExportOptions) -> list[str]:
    """The columns this export adds to every row: ``text``, ``text_source`` with a mix (and
    both captions when --mix-original is drawn per sample), and the ``image`` feature of an hf
    or hub export with images."""
    mixed = opts.mix_original is not None or bool(opts.mix)
    both = [ORIGINAL, RECAPTION] if opts.mix_original is not None and opts.mix_per == "sample" else []
    return ["text"] + (["text_source"] if mixed else []) + both + \
        (["image"] if opts.fmt in ("hf", "hub") and not opts.text_only else [])


class _Exporter:
    def __init__(self, out: OutputDir, opts: ExportOptions, result: ExportResult):
        self.out, self.opts, self.res = out, opts, result
        stored = out.columns()
        # an output column named like one the export adds (LAION's alt ``text``) is kept, renamed
        self.renamed = {c: input_name(c, stored) for c in added_columns(opts) if c in stored}
        self.columns = [self.renamed.get(c, c) for c in stored]
        self.original = self.renamed.get(opts.original_column, opts.original_column)
        self.choice = _text_choice(opts, self.renamed, self.columns)
        self.stats = RowStats()
        self.convert: tuple[str, ...] = ()  # image types a layout writes as PNG
        self.reader = SourceReader(guard=out.source_guard(opts.allow_any_path), fetch_urls=opts.fetch_urls,
                                   allow_private=opts.allow_private_urls)
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def rows(self) -> Iterator[dict[str, Any]]:
        """Rows to export, ``text`` set, errors left out (and counted) unless kept."""
        for batch in self.out.batches():
            for row in batch.to_pylist():
                if row.get("error") is not None and not self.opts.keep_errors:
                    self.res.error_rows_skipped += 1
                    self.stats.left_out(row)
                    continue
                for old, new in self.renamed.items():
                    row[new] = row.pop(old, None)
                self.choice.apply(row)
                yield row

    def wrote(self, row: dict[str, Any]) -> None:
        self.res.written += 1
        self.stats.add(row)

    def _image(self, row: dict[str, Any]) -> tuple[str, bytes] | SourceError:
        try:
            got = self.reader.load_row(row)
            if got.changed:
                raise SourceError(f"{row.get('source')}: changed since the run (its sha256 differs from the row's)")
            ext = image_extension(got.data, row.get("source"))
            if ext in self.convert:
                from .layouts import as_png

                return "png", as_png(got.data, row.get("source"))
            return ext, got.data
        except SourceError as exc:
            return exc

    def with_images(self) -> Iterator[tuple[dict[str, Any], tuple[str, bytes] | None]]:
        """(row, (extension, bytes)) per row; a row whose image fails is listed, not yielded."""
        window: list[dict[str, Any]] = []
        for row in self.rows():
            window.append(row)
            if len(window) >= _WINDOW:
                yield from self._flush(window)
                window = []
        yield from self._flush(window)

    def image_failed(self, row: dict[str, Any], exc: SourceError) -> None:
        self.res.image_errors += 1
        self.res.errors.append({"id": row.get("id"), "source": row.get("source"), "error": str(exc)})

    def _flush(self, rows: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], tuple[str, bytes] | None]]:
        if self.opts.text_only:
            yield from ((r, None) for r in rows)
            return
        for row, img in zip(rows, self.pool.map(self._image, rows)):
            if isinstance(img, SourceError):
                self.image_failed(row, img)
                continue
            yield row, img

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.reader.close()


def _text_choice(opts: ExportOptions, renamed: dict[str, str], columns: list[str]) -> TextChoice:
    """The text choice of ``opts``, its columns as this export names them; a column asked for
    by name that the output does not have is an error naming the ones it has."""
    try:
        mix = parse_mix(opts.mix) if opts.mix else None
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    def name(c: str) -> str:
        return renamed.get(c, c)

    choice = TextChoice(column=name(opts.caption_column), original=name(opts.original_column),
                        p=opts.mix_original, mix=[(name(c), w) for c, w in mix] if mix else None,
                        lines=opts.lines, seed=opts.seed, prefix=opts.prefix, suffix=opts.suffix,
                        per_sample=opts.mix_per == "sample")
    flag = "--mix" if mix else "--caption-column"
    asked = [c for c, _ in choice.mix] if choice.mix else [choice.column]  # --original-column: _check_original_column
    missing = [c for c in asked if c not in columns]
    if missing:
        raise ExportError(f"{flag}: no column {', '.join(map(repr, missing))} in the output (it has "
                          f"{', '.join(columns)})")
    return choice


# ---- formats ----------------------------------------------------------------------------
def _jsonl(ex: _Exporter, tmp: Path) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        for row in ex.rows():
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            ex.wrote(row)


class _Shards:
    """Numbered webdataset tars, ``shard_size`` samples each, members ``{key}.{ext}`` in key
    order (written with tarfile, as the engine's tar writer does: importing webdataset would
    import torch for nothing; the tests read the shards back with webdataset itself)."""

    def __init__(self, root: Path, shard_size: int):
        self.root, self.size = root, max(1, shard_size)
        self.n, self.count, self.tar = 0, 0, None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self.tar is None or self.count >= self.size:
            self.close()
            self.tar = tarfile.open(self.root / f"shard-{self.n:06d}.tar", "w", format=tarfile.GNU_FORMAT)
            self.n, self.count = self.n + 1, 0
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def _webdataset(ex: _Exporter, tmp: Path) -> None:
    tmp.mkdir()
    shards = _Shards(tmp, ex.opts.shard_size)
    try:
        for row, img in ex.with_images():
            members = {"json": json.dumps(row, ensure_ascii=False, default=str).encode("utf-8", "replace"),
                       "txt": (row["text"] or "").encode("utf-8", "replace")}
            if img is not None:
                members = {img[0]: img[1], **members}
            shards.write(member_key(row["id"]), members)
            ex.wrote(row)
    finally:
        shards.close()


_HF_TYPED = ("width", "height", "seconds")


def as_text(value: Any) -> str | None:
    """A value of a string feature: text as it is, anything else (a region struct, a list, a
    number, a bool) as JSON text, as the engine stores non-string input values."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def record(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A row as the hf and hub features hold it: ``width``, ``height``, ``seconds`` as they
    are, every other column as text."""
    return {c: row.get(c) if c in _HF_TYPED else as_text(row.get(c)) for c in names}


def feature_names(ex: _Exporter) -> list[str]:
    """The hf/hub columns: the output's (renamed where needed), then those the export adds."""
    return ex.columns + added_columns(ex.opts)


def _hf_features(datasets: Any, names: list[str]) -> Any:
    typed = {"width": datasets.Value("int32"), "height": datasets.Value("int32"),
             "seconds": datasets.Value("float64"), "image": datasets.Image()}
    return datasets.Features({c: typed.get(c, datasets.Value("string")) for c in names})


def _hf(ex: _Exporter, tmp: Path) -> None:
    datasets = require("datasets", extra="hf", what="pixscribe export --to hf")
    names = feature_names(ex)
    features = _hf_features(datasets, names)

    def gen() -> Iterator[dict[str, Any]]:
        for row, img in ex.with_images():
            rec = record(row, [c for c in names if c != "image"])
            if img is not None:
                rec["image"] = {"bytes": img[1], "path": None}
            ex.wrote(row)
            yield rec

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the export prints one summary line instead
    try:
        with tempfile.TemporaryDirectory(prefix="pixscribe-export-", dir=tmp.parent) as cache:
            # a fresh fingerprint: the generator holds a thread pool (not hashable) and must run every time
            ds = datasets.Dataset.from_generator(gen, features=features, cache_dir=cache, fingerprint=os.urandom(8).hex())
            ds.info.description = card(ex, names)
            ds.save_to_disk(str(tmp))
            del ds
    finally:
        if bars:
            datasets.enable_progress_bars()
    (tmp / "README.md").write_text(card(ex, names), encoding="utf-8")


MARKER = "_export.json"
_ROW_KEYS = ("id", "source", "text")  # every exported jsonl row has them: how an earlier export is known


def _write_marker(ex: _Exporter, tmp: Path) -> None:
    marker = {"pixscribe_version": __version__, "format": ex.opts.fmt, "out_dir": str(ex.out.path.resolve()),
              "rows": ex.res.written, "renamed_columns": ex.renamed}
    if ex.opts.mix_original is not None:
        marker["mix"] = {"original_share": ex.opts.mix_original, "seed": ex.opts.seed, "per": ex.opts.mix_per}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def check_options(opts: ExportOptions) -> None:
    """Refuse options that contradict each other or the format, before anything is read."""
    if opts.fmt not in FORMATS:
        raise ExportError(f"--to {opts.fmt!r}: expected one of {', '.join(FORMATS)}")
    for flag, p in (("--mix-original", opts.mix_original), ("--test-fraction", opts.test_fraction)):
        if p is not None and not 0.0 <= p <= 1.0:
            raise ExportError(f"{flag} {p}: a probability, between 0 and 1")
    if opts.mix_per not in MIX_PER:
        raise ExportError(f"--mix-per {opts.mix_per!r}: expected one of {', '.join(MIX_PER)}")
    if opts.mix and opts.mix_original is not None:
        raise ExportError("--mix and --mix-original: give one (--mix org_caption=P,caption=Q mixes the original too)")
    if opts.lines and (opts.fmt != "folder" or not opts.mix):
        raise ExportError("--lines: only with --to folder and --mix (each mixed column on its own line)")
    if opts.text_only and opts.fmt in _IMAGE_LAYOUTS:
        raise ExportError(f"--text-only: --to {opts.fmt} is a folder of images; leave --text-only out")
    if opts.sidecars and opts.fmt not in _IMAGE_LAYOUTS:
        raise ExportError("--sidecars: only with --to folder or --to embed (the other formats hold the row already)")
    if opts.test_fraction and opts.fmt != "hub":
        raise ExportError("--test-fraction: only with --to hub (the one format with splits)")
    if opts.fmt == "embed":
        require("pyexiv2", extra="embed", what="pixscribe export --to embed")
    if opts.fmt == "hf":
        require("datasets", extra="hf", what="pixscribe export --to hf")


def _writer(fmt: str) -> Any:
    from . import hub, layouts

    return {"jsonl": _jsonl, "webdataset": _webdataset, "hf": _hf, "hub": hub.write_hub,
            "folder": layouts.write_folder, "embed": layouts.write_embed}[fmt]


def export(out_dir: str | Path, dest: str | Path, opts: ExportOptions | None = None) -> ExportResult:
    """Write ``out_dir`` to ``dest`` as ``opts.fmt`` (see the module docstring)."""
    opts = opts or ExportOptions()
    check_options(opts)
    out = OutputDir(Path(out_dir))
    _check_original_column(out, opts)
    dest = Path(dest)
    check_apart(out.path, dest, "DEST")
    what = "a pixscribe jsonl export" if opts.fmt == "jsonl" else "a pixscribe export"
    check_replaceable(dest, marker=MARKER, what=what, flag="DEST", overwrite=opts.overwrite,
                      row_keys=_ROW_KEYS if opts.fmt == "jsonl" else ())
    res = ExportResult(dest, opts.fmt)
    ex = _Exporter(out, opts, res)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        _writer(opts.fmt)(ex, tmp)
        res.took_original, res.had_original = ex.choice.took_original, ex.choice.had_original
        res.sources = dict(ex.choice.sources)
        if tmp.is_dir():
            if res.errors:
                with open(tmp / "_export_errors.jsonl", "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in res.errors)
            _write_marker(ex, tmp)
        swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    finally:
        ex.close()
    return res
