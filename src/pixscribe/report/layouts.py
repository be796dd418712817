"""Folder layouts of ``pixscribe export``: a trainer's image folder, and images carrying their caption.

``folder``: per row ``<stem>.<ext>`` (a copy of the image), ``<stem>.txt`` (the caption) and,
with ``--sidecars``, ``<stem>.json`` (the row). This is what kohya's sd-scripts, SimpleTuner
(``caption_strategy: textfile``), ai-toolkit and OneTrainer read: each pairs an image with the
``.txt`` of the same name less the extension (sd-scripts needs ``--caption_extension .txt``;
its default is ``.caption``). The text file is UTF-8 without a byte-order mark, one caption on
one line, no line break at the end: sd-scripts reads only the first line, SimpleTuner and
OneTrainer take each line as a caption of its own, ai-toolkit the whole file. With
``--lines`` each of several captions is a line (for SimpleTuner, OneTrainer and sd-scripts'
``enable_wildcard``, which pick one line per step). An empty caption file stops sd-scripts,
so a row with no text is left out and listed. Images are the original bytes when they are
JPEG, PNG or WebP (what all four read); GIF, BMP and TIFF are written as PNG (see
:func:`as_png`).

``embed``: per row ``<stem>.<ext>``, a copy of the image with the caption in its XMP, IPTC and
EXIF description (:mod:`pixscribe.report.embed`), and ``<stem>.json`` with ``--sidecars``;
GIF and BMP, which hold no such metadata, are written as PNG.

Stems come from ids (:mod:`pixscribe.report.stems`). Everything is written into the export's
own new folder; the user's files are only ever read.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from ..imaging import decode
from ..record import PixscribeError
from .captions import one_line
from .embed import WRITABLE, embed_caption
from .images import SourceError
from .stems import claim, stem_of

if TYPE_CHECKING:
    from pathlib import Path

    from .export import _Exporter

__all__ = ["TRAINER_TYPES", "EMBED_TYPES", "as_png", "write_folder", "write_embed"]

TRAINER_TYPES = ("jpg", "png", "webp")  # read by sd-scripts, SimpleTuner, ai-toolkit and OneTrainer alike
EMBED_TYPES = WRITABLE


def as_png(data: bytes, source: str | None) -> bytes:
    """The image as pixscribe decoded it for the model (first frame, EXIF orientation
    applied, RGB, full size) saved as PNG: the pixels the caption describes, losslessly."""
    try:
        dec = decode(data, max_pixels=None, source=str(source or ""))
    except PixscribeError as exc:
        raise SourceError(str(exc)) from None
    buf = io.BytesIO()
    dec.image.save(buf, "PNG")
    return buf.getvalue()


def _sidecar(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8", "replace")


def _caption_file(text: Any) -> str:
    """The ``.txt`` content: one caption per line, each on one line, none empty."""
    pieces = text if isinstance(text, list) else [text]
    return "\n".join(t for t in (one_line(p) for p in pieces if isinstance(p, str)) if t)


def _no_text(ex: _Exporter, row: dict[str, Any], why: str) -> None:
    ex.res.no_text += 1
    ex.res.errors.append({"id": row.get("id"), "source": row.get("source"), "error": f"no caption text: {why}"})


def write_folder(ex: _Exporter, tmp: Path) -> None:
    tmp.mkdir()
    ex.convert = tuple(t for t in ("gif", "bmp", "tiff") if t not in TRAINER_TYPES)
    for row, img in ex.with_images():
        caption = _caption_file(row["text"])
        if not caption:
            _no_text(ex, row, "a trainer stops on an empty caption file")
            continue
        stem, txt = claim(tmp, stem_of(row.get("id")), "txt")
        txt.write_bytes(caption.encode("utf-8", "replace"))
        row["text"] = caption.split("\n") if isinstance(row["text"], list) else caption
        _write_files(tmp, stem, img, row, ex.opts.sidecars)
        ex.wrote(row)


def write_embed(ex: _Exporter, tmp: Path) -> None:
    tmp.mkdir()
    ex.convert = tuple(t for t in ("gif", "bmp", "tiff") if t not in EMBED_TYPES)
    for row, img in ex.with_images():
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            _no_text(ex, row, "nothing to write into the image")
            continue
        ext, data = img
        try:
            data = embed_caption(data, ext, text)
        except (RuntimeError, ValueError) as exc:  # exiv2 could not parse or write this file
            ex.image_failed(row, SourceError(f"{row.get('source')}: exiv2 cannot write its metadata ({exc})"))
            continue
        stem, _ = claim(tmp, stem_of(row.get("id")), "json" if ex.opts.sidecars else ext)
        _write_files(tmp, stem, (ext, data), row, ex.opts.sidecars)
        ex.wrote(row)


def _write_files(tmp: Path, stem: str, img: tuple[str, bytes] | None, row: dict[str, Any], sidecar: bool) -> None:
    if img is not None:
        (tmp / f"{stem}.{img[0]}").write_bytes(img[1])
    if sidecar:
        (tmp / f"{stem}.json").write_bytes(_sidecar(row))
