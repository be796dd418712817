"""``pixscribe export``: an output directory in a training format.

- ``webdataset``: ``DEST/shard-000000.tar`` ... (``--shard-size`` samples each), per sample
  ``{key}.{jpg|png|...}`` (the original bytes re-read from ``source``; none with
  ``--text-only``), ``{key}.json`` (the row, ``text`` included) and ``{key}.txt`` (``text``);
  keys are ids made safe as the engine's tar writer makes them (:func:`member_key`).
- ``hf``: a local dataset written with ``datasets.save_to_disk`` (an ``image`` column unless
  ``--text-only``), with a dataset card ``README.md``: method, models, prompts, counts.
- ``jsonl``: one JSON object per row (the output's columns as stored, plus ``text``).

``text`` is the caption, or with ``--mix-original P --seed S`` the original caption with
probability P (Recap-DataComp-1B's mix: CLIP took the original with P = 0.8): the choice is
a hash of (seed, id), so it is reproducible per id and independent of order and sharding;
rows without an original always take the new caption. ``text_source`` says which was taken.

Rows whose captioning failed (``error`` set) are left out unless ``--keep-errors``; a row
whose image cannot be read again (gone, refused URL, changed since the run) is left out of
the image formats and listed in ``DEST/_export_errors.jsonl``. Everything is written under a
temporary name beside DEST and renamed at the end: a failed export leaves no half DEST.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
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
from ..io.writers import member_key
from .images import SourceError, SourceReader
from .parts import OutputDir

__all__ = ["ExportOptions", "ExportResult", "ExportError", "export", "takes_original", "image_extension"]

FORMATS = ("webdataset", "hf", "jsonl")
_WINDOW = 64  # rows whose images are read at once


class ExportError(ValueError):
    pass


@dataclass
class ExportOptions:
    fmt: str = "jsonl"
    mix_original: float | None = None
    seed: int = 0
    original_column: str = "org_caption"
    text_only: bool = False
    keep_errors: bool = False
    shard_size: int = 10_000
    overwrite: bool = False
    fetch_urls: bool = True
    allow_private_urls: bool = False
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


def takes_original(id_: Any, seed: int, p: float) -> bool:
    """Whether row ``id_`` takes its original caption: a uniform number in [0, 1) from
    blake2b(seed, id) below ``p``. The same (seed, id) always gives the same answer."""
    h = hashlib.blake2b(f"{seed}\x00{id_}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < p


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
    """The webdataset extension of image bytes: from their magic number, else the source's."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    from ..io.plan import IMAGE_EXT_SET, ext_of

    ext = ext_of((source or "").split("::")[-1].split("#")[0])
    if ext in IMAGE_EXT_SET:
        return ext
    raise SourceError(f"{source}: not a known image format (first bytes {data[:8]!r})")


class _Exporter:
    def __init__(self, out: OutputDir, opts: ExportOptions, result: ExportResult):
        self.out, self.opts, self.res = out, opts, result
        self.reader = SourceReader(fetch_urls=opts.fetch_urls, allow_private=opts.allow_private_urls)
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def _text(self, row: dict[str, Any]) -> None:
        caption = row.get("caption")
        org = row.get(self.opts.original_column)
        row["text"] = caption
        if self.opts.mix_original is None:
            return
        source = "recaption"
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
            got = self.reader.load(row.get("source"), row.get("sha256"))
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


def _hf_features(datasets: Any, columns: list[str], opts: ExportOptions) -> Any:
    typed = {"width": datasets.Value("int32"), "height": datasets.Value("int32"), "seconds": datasets.Value("float64")}
    feats = {c: typed.get(c, datasets.Value("string")) for c in columns}
    feats["text"] = datasets.Value("string")
    if opts.mix_original is not None:
        feats["text_source"] = datasets.Value("string")
    if not opts.text_only:
        feats["image"] = datasets.Image()
    return datasets.Features(feats)


def _hf(ex: _Exporter, tmp: Path) -> None:
    datasets = require("datasets", extra="hf", what="pixscribe export --to hf")
    columns = ex.out.columns()
    features = _hf_features(datasets, columns, ex.opts)

    def gen() -> Iterator[dict[str, Any]]:
        for row, img in ex.with_images():
            rec = {c: row.get(c) for c in features}
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
        lines.append(f"- text: the original caption (`{ex.opts.original_column}`) with probability "
                     f"{ex.opts.mix_original} (seed {ex.opts.seed}): {ex.res.took_original} of {ex.res.had_original} "
                     "rows with an original took it; the others the new caption")
    for m in run.get("models") or []:
        lines.append(f"- model ({m.get('role')}): `{m.get('model')}` backend {m.get('backend')}, "
                     f"revision {m.get('revision') or 'none'}")
    for s in method.get("stages") or []:
        lines.append(f"- stage `{s.get('stage')}`: fingerprint {s.get('fingerprint')}"
                     + (f", model `{s.get('model')}`" if s.get("model") else "")
                     + (f", experts {', '.join(str(e.get('expert')) for e in s.get('experts') or [])}" if s.get("experts") else ""))
        if s.get("prompt"):
            lines += ["", f"  prompt ({s.get('prompt_sha')}):", "", "  > " + str(s["prompt"]).replace("\n", "\n  > ")]
    lines += ["", "Columns: " + ", ".join(f"`{c}`" for c in columns + ["text"]), ""]
    return "\n".join(lines)


def export(out_dir: str | Path, dest: str | Path, opts: ExportOptions | None = None) -> ExportResult:
    """Write ``out_dir`` to ``dest`` as ``opts.fmt`` (see the module docstring)."""
    opts = opts or ExportOptions()
    if opts.fmt not in FORMATS:
        raise ExportError(f"--to {opts.fmt!r}: expected one of {', '.join(FORMATS)}")
    if opts.mix_original is not None and not 0.0 <= opts.mix_original <= 1.0:
        raise ExportError(f"--mix-original {opts.mix_original}: a probability, between 0 and 1")
    out = OutputDir(Path(out_dir))
    _check_original_column(out, opts)
    dest = Path(dest)
    if dest.exists() and not opts.overwrite:
        raise ExportError(f"{dest}: exists; pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    res = ExportResult(dest, opts.fmt)
    ex = _Exporter(out, opts, res)
    try:
        {"jsonl": _jsonl, "webdataset": _webdataset, "hf": _hf}[opts.fmt](ex, tmp)
        if res.errors and tmp.is_dir():
            with open(tmp / "_export_errors.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in res.errors)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    finally:
        ex.close()
    return res
