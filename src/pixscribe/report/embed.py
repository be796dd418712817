"""The caption written into an image's own metadata (``pixscribe export --to embed``).

Written with exiv2 through ``pyexiv2`` (``pip install 'pixscribe[embed]'``), on a copy of the
bytes in memory: the pixels are not re-encoded and every other tag of the file is kept. The
fields are the three that the Metadata Working Group's guidelines keep in step and that
photo managers (Lightroom's and digiKam's "Caption", PhotoPrism, Windows' and macOS' file
info) show:

- XMP ``dc:description`` (``x-default`` language): the whole text;
- IPTC IIM 2:120 ``Caption-Abstract``, with 1:90 ``CodedCharacterSet`` set to UTF-8 (without
  it readers take the bytes for Latin-1); IIM caps the field at 2,000 bytes, so a longer text
  is cut there, at a character boundary (the XMP field holds all of it);
- EXIF ``ImageDescription``: UTF-8, as the MWG guidelines and exiftool write it.

exiv2 writes these into JPEG, PNG, TIFF and WebP (WebP has no IPTC block: XMP and EXIF only).
Characters XML 1.0 cannot hold (control characters other than tab and line breaks, lone
surrogates) are dropped first, from every field alike.
"""

from __future__ import annotations

import re
from typing import Any

from ..deps import require

__all__ = ["WRITABLE", "embed_caption", "clean_text", "IPTC_CAPTION_MAX"]

WRITABLE = ("jpg", "png", "tiff", "webp")
IPTC_CAPTION_MAX = 2000  # bytes, IIM 4.2 dataset 2:120
_UTF8 = "\x1b%G"  # ISO 2022 escape for UTF-8, IIM 1:90
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold."""
    return _NOT_XML.sub("", text)


def _cut_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def embed_caption(data: bytes, ext: str, text: str) -> bytes:
    """The image bytes with ``text`` in XMP, IPTC (not WebP) and EXIF; ``ext`` one of
    :data:`WRITABLE`. Raises ``RuntimeError`` (or ``ValueError``) from exiv2 for a file it
    cannot parse or write."""
    pyexiv2: Any = require("pyexiv2", extra="embed", what="pixscribe export --to embed")
    pyexiv2.set_log_level(4)  # exiv2's own warnings off: a file it cannot write raises, and is listed
    text = clean_text(text)
    img = pyexiv2.ImageData(data)
    try:
        img.modify_xmp({"Xmp.dc.description": {'lang="x-default"': text}})
        if ext != "webp":
            img.modify_iptc({"Iptc.Envelope.CharacterSet": _UTF8,
                             "Iptc.Application2.Caption": _cut_utf8(text, IPTC_CAPTION_MAX)})
        img.modify_exif({"Exif.Image.ImageDescription": text})
        return img.get_bytes()
    finally:
        img.close()
