"""``pixscribe export``: an output directory in a training format.

- ``webdataset``: ``DEST/shard-000000.tar`` ... (``--shard-size`` samples each), per sample
  ``{key}.{jpg|png|...}`` (the original bytes re-read from ``source``; none with
  ``--text-only``), ``{key}.json`` (the row, ``text`` included) and ``{key}.txt`` (``text``);
  keys are ids made safe as the engine's tar writer makes them (:func:`member_key`).
- ``hf``: a local dataset written with ``datasets.save_to_disk`` (an ``image`` column unless
  ``--text-only``; ``width``, ``height`` and ``seconds`` typed, every other column a string,
  structs and lists as JSON text), with a dataset card ``README.md``: method, models,
  prompts, counts.
- ``jsonl``: one JSON object per row (the output's columns as stored, plus ``text``).

An output column named like one the export adds (``text``, LAION's alt text; ``text_source``;
``image`` in hf) is kept under ``input_<name>``, as the engine keeps input columns named like
its own; ``--original-column text`` then reads it there.

``text`` is the caption, or with ``--mix-original P --seed S`` the original caption with
probability P (P is the original's share; Recap-DataComp-1B's mix, :mod:`.mix`): the choice
is a hash of (seed, id), so it is reproducible per id and independent of order and sharding;
rows without an original always take the new caption. ``text_source`` says which was taken.
With ``--mix-per sample`` (the default) the rows also carry both captions (``text_original``,
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
(written into every webdataset and hf export), a jsonl file whose first line is an exported
row, or an empty folder or file (see :mod:`pixscribe.report.dest`).
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
from .dest import check_apart, check_replaceable, swap_into_place
from .images import SourceError, SourceReader
from .mix import MIX_PER, ORIGINAL, RECAPTION, takes_original
from .parts import OutputDir

__all__ = ["ExportOptions", "ExportResult", "ExportError", "export", "takes_original", "image_extension"]

FORMATS = ("webdataset", "hf", "jsonl")
_WINDOW = 64  # rows whose images are read at once


class ExportError(InputFileError):
    kind = "ExportError"  # as error rows and messages named it before it joined the family


@dataclass
class ExportOptions:
    fmt: str = "jsonl"
    mix_original: float | None = None
    seed: int = 0
    mix_per: str = "sample"  # also write both captions, so a loader can draw per sample and epoch (mix.py)
    original_column: str = "org_caption"
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
    took_original: int = 0
    had_original: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        mix = f", text from the original caption for {self.took_original} of {self.had_original} rows that have one" \
            if self.had_original else ""
        skipped = f", {self.error_rows_skipped} error rows left out (--keep-errors keeps them)" \
            if self.error_rows_skipped else ""
        bad = f", {self.image_errors} rows whose image could not be read again (listed in " \
              f"{self.dest / '_export_errors.jsonl'})" if self.image_errors else ""
        return f"export: {self.written} rows as {self.fmt} -> {self.dest}{mix}{skipped}{bad}"


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
    both captions when it is drawn per sample), and the ``image`` feature of an hf export with images."""
    mix = [] if opts.mix_original is None else ["text_source"] + ([ORIGINAL, RECAPTION] if opts.mix_per == "sample"
                                                                 else [])
    return ["text"] + mix + (["image"] if opts.fmt == "hf" and not opts.text_only else [])


class _Exporter:
    def __init__(self, out: OutputDir, opts: ExportOptions, result: ExportResult):
        self.out, self.opts, self.res = out, opts, result
        stored = out.columns()
        # an output column named like one the export adds (LAION's alt ``text``) is kept, renamed
        self.renamed = {c: input_name(c, stored) for c in added_columns(opts) if c in stored}
        self.columns = [self.renamed.get(c, c) for c in stored]
        self.original = self.renamed.get(opts.original_column, opts.original_column)
        self.reader = SourceReader(guard=out.source_guard(opts.allow_any_path), fetch_urls=opts.fetch_urls,
                                   allow_private=opts.allow_private_urls)
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def _text(self, row: dict[str, Any]) -> None:
        for old, new in self.renamed.items():
            row[new] = row.pop(old, None)
        caption = row.get("caption")
        org = row.get(self.original)
        row["text"] = caption
        if self.opts.mix_original is None:
            return
        source = "recaption"
        if self.opts.mix_per == "sample":
            row[ORIGINAL] = org if isinstance(org, str) and org.strip() else None
            row[RECAPTION] = caption
        if isinstance(org, str) and org.strip():
            self.res.had_original += 1
            if takes_original(row.get("id"), self.opts.seed, self.opts.mix_original):
                row["text"], source = org, "original"
                self.res.took_original += 1
        row["text_source"] = source

    def rows(self) -> Iterator[dict[str, Any]]:
        """Rows to export, ``text`` set, errors left out (and counted) unless kept."""
        for batch in self.out.batches():
            for row in batch.to_pylist():
                if row.get("error") is not None and not self.opts.keep_errors:
                    self.res.error_rows_skipped += 1
                    continue
                self._text(row)
                yield row

    def _image(self, row: dict[str, Any]) -> tuple[str, bytes] | SourceError:
        try:
            got = self.reader.load_row(row)
            if got.changed:
                raise SourceError(f"{row.get('source')}: changed since the run (its sha256 differs from the row's)")
            return image_extension(got.data, row.get("source")), got.data
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

    def _flush(self, rows: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], tuple[str, bytes] | None]]:
        if self.opts.text_only:
            yield from ((r, None) for r in rows)
            return
        for row, img in zip(rows, self.pool.map(self._image, rows)):
            if isinstance(img, SourceError):
                self.res.image_errors += 1
                self.res.errors.append({"id": row.get("id"), "source": row.get("source"), "error": str(img)})
                continue
            yield row, img

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.reader.close()


# ---- formats ----------------------------------------------------------------------------
def _jsonl(ex: _Exporter, tmp: Path) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        for row in ex.rows():
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            ex.res.written += 1


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
            members = {"json": json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"),
                       "txt": (row["text"] or "").encode("utf-8")}
            if img is not None:
                members = {img[0]: img[1], **members}
            shards.write(member_key(row["id"]), members)
            ex.res.written += 1
    finally:
        shards.close()


_HF_TYPED = ("width", "height", "seconds")


def as_text(value: Any) -> str | None:
    """A value of a string feature: text as it is, anything else (a region struct, a list, a
    number, a bool) as JSON text, as the engine stores non-string input values."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _hf_features(datasets: Any, columns: list[str], opts: ExportOptions) -> Any:
    typed = {"width": datasets.Value("int32"), "height": datasets.Value("int32"), "seconds": datasets.Value("float64")}
    feats = {c: typed.get(c, datasets.Value("string")) for c in columns}
    feats["text"] = datasets.Value("string")
    for c in added_columns(opts):
        if c not in ("text", "image"):
            feats[c] = datasets.Value("string")
    if not opts.text_only:
        feats["image"] = datasets.Image()
    return datasets.Features(feats)


def _hf(ex: _Exporter, tmp: Path) -> None:
    datasets = require("datasets", extra="hf", what="pixscribe export --to hf")
    columns = ex.columns
    features = _hf_features(datasets, columns, ex.opts)

    def gen() -> Iterator[dict[str, Any]]:
        for row, img in ex.with_images():
            rec = {c: row.get(c) if c in _HF_TYPED else as_text(row.get(c)) for c in features}
            if img is not None:
                rec["image"] = {"bytes": img[1], "path": None}
            ex.res.written += 1
            yield rec

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the export prints one summary line instead
    try:
        with tempfile.TemporaryDirectory(prefix="pixscribe-export-", dir=tmp.parent) as cache:
            # a fresh fingerprint: the generator holds a thread pool (not hashable) and must run every time
            ds = datasets.Dataset.from_generator(gen, features=features, cache_dir=cache, fingerprint=os.urandom(8).hex())
            ds.info.description = _card(ex, columns)
            ds.save_to_disk(str(tmp))
            del ds
    finally:
        if bars:
            datasets.enable_progress_bars()
    (tmp / "README.md").write_text(_card(ex, columns), encoding="utf-8")


def _card(ex: _Exporter, columns: list[str]) -> str:
    """A dataset card: where the rows came from and how they were made."""
    run = ex.out.run_info()
    method = run.get("method") or {}
    lines = ["---", "tags: [pixscribe, image-captioning]", "---", "", "# pixscribe export", "",
             f"Exported by pixscribe {__version__} from `{ex.out.path.resolve()}`.", "",
             f"- method: **{method.get('method', '?')}** (caption from `{method.get('caption_field', 'caption')}`)",
             f"- rows: {ex.res.written}; error rows left out: {ex.res.error_rows_skipped}; "
             f"rows whose image could not be read again: {ex.res.image_errors}",
             f"- images: {'none (--text-only)' if ex.opts.text_only else 'the original bytes, re-read from each source'}"]
    if ex.opts.mix_original is not None:
        lines.append(f"- text: the original caption (`{ex.original}`) with probability "
                     f"{ex.opts.mix_original} (seed {ex.opts.seed}): {ex.res.took_original} of {ex.res.had_original} "
                     "rows with an original took it; the others the new caption")
        if ex.opts.mix_per == "sample":
            lines.append(f"- mix per sample: `{ORIGINAL}` and `{RECAPTION}` hold both captions; draw per epoch with "
                         f"`pixscribe.report.mix.MixedCaption(p={ex.opts.mix_original}, seed={ex.opts.seed})"
                         "(row, epoch)` (`text` is its epoch 0)")
    for m in run.get("models") or []:
        lines.append(f"- model ({m.get('role')}): `{m.get('model')}` backend {m.get('backend')}, "
                     f"revision {m.get('revision') or 'none'}")
    for s in method.get("stages") or []:
        lines.append(f"- stage `{s.get('stage')}`: fingerprint {s.get('fingerprint')}"
                     + (f", model `{s.get('model')}`" if s.get("model") else "")
                     + (f", experts {', '.join(str(e.get('expert')) for e in s.get('experts') or [])}" if s.get("experts") else ""))
        if s.get("prompt"):
            lines += ["", f"  prompt ({s.get('prompt_sha')}):", "", "  > " + str(s["prompt"]).replace("\n", "\n  > ")]
    for old, new in ex.renamed.items():
        lines.append(f"- the output's own `{old}` column is `{new}` here (the export writes `{old}`)")
    added = [c for c in added_columns(ex.opts) if c != "image"]
    lines += ["", "Columns: " + ", ".join(f"`{c}`" for c in columns + added), ""]
    return "\n".join(lines)


MARKER = "_export.json"
_ROW_KEYS = ("id", "source", "text")  # every exported jsonl row has them: how an earlier export is known


def _write_marker(ex: _Exporter, tmp: Path) -> None:
    marker = {"pixscribe_version": __version__, "format": ex.opts.fmt, "out_dir": str(ex.out.path.resolve()),
              "rows": ex.res.written, "renamed_columns": ex.renamed}
    if ex.opts.mix_original is not None:
        marker["mix"] = {"original_share": ex.opts.mix_original, "seed": ex.opts.seed, "per": ex.opts.mix_per}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def export(out_dir: str | Path, dest: str | Path, opts: ExportOptions | None = None) -> ExportResult:
    """Write ``out_dir`` to ``dest`` as ``opts.fmt`` (see the module docstring)."""
    opts = opts or ExportOptions()
    if opts.fmt not in FORMATS:
        raise ExportError(f"--to {opts.fmt!r}: expected one of {', '.join(FORMATS)}")
    if opts.mix_original is not None and not 0.0 <= opts.mix_original <= 1.0:
        raise ExportError(f"--mix-original {opts.mix_original}: a probability, between 0 and 1")
    if opts.mix_per not in MIX_PER:
        raise ExportError(f"--mix-per {opts.mix_per!r}: expected one of {', '.join(MIX_PER)}")
    out = OutputDir(Path(out_dir))
    _check_original_column(out, opts)
    dest = Path(dest)
    check_apart(out.path, dest, "DEST")
    what = "a pixscribe jsonl export" if opts.fmt == "jsonl" else "a pixscribe export"
    check_replaceable(dest, marker=MARKER, what=what, flag="DEST", overwrite=opts.overwrite,
                      row_keys=_ROW_KEYS if opts.fmt == "jsonl" else ())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    res = ExportResult(dest, opts.fmt)
    ex = _Exporter(out, opts, res)
    try:
        {"jsonl": _jsonl, "webdataset": _webdataset, "hf": _hf}[opts.fmt](ex, tmp)
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
