"""Files beside the pages: thumbnails (re-read from the sources, resized) and mask images.

A thumbnail is the source decoded by :func:`pixscribe.imaging.decode` (EXIF orientation,
the pixel-bomb guard, JPEG draft mode) straight to ``size`` px on its longest side and
saved as JPEG; the page never holds an image inline or at full size. A mask is a two-colour
palette PNG (transparent / the entity's colour) at most ``size`` px on its longest side.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..experts import rle
from ..imaging import DEFAULT_MAX_IMAGE_PIXELS, decode
from ..record import PixscribeError
from .images import SourceReader

__all__ = ["Thumbnails", "MaskFiles", "Thumb"]


@dataclass
class Thumb:
    href: str | None
    width: int
    height: int
    changed: bool = False
    error: str | None = None


class Thumbnails:
    def __init__(self, root: Path, reader: SourceReader, size: int = 384,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
        self.root = Path(root)
        self.dir = self.root / "thumbs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reader = reader
        self.size = size
        self.max_image_pixels = max_image_pixels
        self._lock = threading.Lock()
        self.made = 0
        self.failed: dict[str, int] = {}

    def make(self, row: dict[str, Any]) -> Thumb:
        """The row's thumbnail, or why there is none (the error is also counted)."""
        src = row.get("source")
        try:
            got = self.reader.load_row(row)
            dec = decode(got.data, max_pixels=None, max_side=self.size, max_image_pixels=self.max_image_pixels,
                         source=str(src))
        except PixscribeError as exc:
            kind = getattr(exc, "kind", None) or "source"
            with self._lock:
                self.failed[kind] = self.failed.get(kind, 0) + 1
            return Thumb(None, 0, 0, error=str(exc))
        name = hashlib.sha1(f"{src}\0{row.get('sha256')}\0{self.size}".encode()).hexdigest()[:20] + ".jpg"
        buf = io.BytesIO()
        dec.image.save(buf, "JPEG", quality=82, optimize=True)
        (self.dir / name).write_bytes(buf.getvalue())
        with self._lock:
            self.made += 1
        return Thumb(f"thumbs/{name}", dec.width, dec.height, changed=got.changed)


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


class MaskFiles:
    """Writes ``masks/<entity>.png``; returns the href, or None for an RLE that does not decode."""

    def __init__(self, root: Path, size: int = 384):
        self.dir = Path(root) / "masks"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.bad = 0

    def __call__(self, mask: dict[str, Any], ent: str, color: str) -> str | None:
        try:
            h, w = (int(v) for v in mask["size"])
            step = max(1, -(-max(h, w) // self.size))  # nearest-neighbour subsampling: cheap, and enough for a thumbnail
            m = rle.decode_sampled(mask, step)  # never the full mask: its size comes from the input
        except (ValueError, TypeError, KeyError):
            self.bad += 1
            return None
        if not m.size:
            return None
        im = Image.fromarray(np.ascontiguousarray(m), "P")
        im.putpalette([0, 0, 0, *_rgb(color)])
        name = f"{ent}.png"
        im.save(self.dir / name, "PNG", transparency=0)
        return f"masks/{name}"
