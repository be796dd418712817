"""Decode every mask format a region may come in to one bool ``(height, width)`` array.

Formats (:func:`decode_mask` tells them apart by shape and magic bytes):

- COCO RLE, ``{"size": [h, w], "counts": "..."}`` (compressed string, as pycocotools
  writes) or with ``counts`` a list of ints (uncompressed, as COCO's ``iscrowd`` masks);
  decoded by :mod:`pixscribe.experts.rle`.
- COCO polygons: ``[[x1, y1, x2, y2, ...], ...]`` (one or more rings, unioned) or one flat
  ring; rasterised by pycocotools (``frPyObjects`` + ``merge``), so the pixels are COCO's,
  after bounds checks and in an isolated child process (:mod:`.polygons`).
- A mask image (PNG or any format PIL reads): a path (relative paths resolve against
  ``base_dir``), raw bytes, ``data:image/png;base64,...``, plain base64 of a PNG, or
  pixscribe's ``"base64:..."`` form of a bytes column. Any non-zero value in any band is in.
- ``base64(gzip(uint8 h*w bytes))``: a row-major uint8 array of the image's size, gzipped
  then base64-encoded (a bare string starting ``H4sI``, or ``{"b64gzip": "..."}``); non-zero
  is in. Its shape is the image's, so a wrong length is a wrong size.
- A 2-D numpy array or nested list of 0/1 rows (from Python callers).

Every failure is a :class:`RegionError` whose message names the format and the reason
(wrong size, empty, unreadable); the caller turns it into a region error.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...experts import rle
from ...io.files import open_regular
from .types import RegionError

Guard = Callable[[str], str | None]  # path -> why it may not be read, or None
_PNG = b"\x89PNG\r\n\x1a\n"
_GZIP = b"\x1f\x8b"
_MAX_MASK_PIXELS = 200_000_000  # refuse mask images whose header claims more (a pixel bomb)
_MAX_MASK_FILE_BYTES = 64 << 20  # a mask file larger than this is not read (a 1-bit PNG of 200 MP is far smaller)


def decode_mask(spec: Any, width: int, height: int, base_dir: str | None = None, guard: Guard | None = None) -> np.ndarray:
    """Any supported mask ``spec`` -> bool array ``(height, width)``; raises RegionError.

    ``guard(path)`` says why a mask file may not be read (outside the input folders), or None."""
    m = _decode_any(spec, width, height, base_dir, guard)
    if m.shape != (height, width):
        raise RegionError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {width}x{height}")
    if not m.any():
        raise RegionError("empty mask: no pixel is set")
    return m


def _decode_any(spec: Any, width: int, height: int, base_dir: str | None, guard: Guard | None = None) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        return _from_array(spec)
    if isinstance(spec, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(spec), width, height, "mask bytes")
    if isinstance(spec, dict):
        return _from_dict(spec, width, height, base_dir, guard)
    if isinstance(spec, str):
        return _from_string(spec.strip(), width, height, base_dir, guard)
    if isinstance(spec, (list, tuple)):
        if _is_grid(spec, width, height):  # 0/1 rows of the image's size, before the polygon test
            return _from_array(np.asarray(spec))
        if is_polygon(spec):
            return decode_polygons(spec, width, height)
        if spec and all(isinstance(r, (list, tuple)) for r in spec):
            return _from_array(np.asarray(spec))
    raise RegionError(f"not a mask: a {type(spec).__name__} is neither COCO RLE, a polygon, a PNG nor base64(gzip) data")


def _from_dict(d: dict[str, Any], width: int, height: int, base_dir: str | None, guard: Guard | None = None) -> np.ndarray:
    if "counts" in d:
        return decode_rle(d, width, height)
    for key in ("b64gzip", "base64_gzip"):
        if key in d:
            return decode_b64gzip(d[key], width, height)
    for key in ("png", "path", "bytes"):
        if d.get(key):
            return _decode_any(d[key], width, height, base_dir, guard)
    raise RegionError(f"a mask dict needs 'size' and 'counts' (COCO RLE), 'b64gzip', 'png' or 'path'; got keys {sorted(d)}")


def _from_string(s: str, width: int, height: int, base_dir: str | None, guard: Guard | None = None) -> np.ndarray:
    if s.startswith("data:"):
        head, _, data = s.partition(",")
        if ";base64" not in head:
            raise RegionError("a data: URL mask must be base64-encoded")
        return _from_bytes(_b64(data, "data: URL"), width, height, "data: URL")
    if s.startswith("base64:"):
        return _from_bytes(_b64(s[7:], "base64: mask"), width, height, "base64: mask")
    if s.startswith("H4sI"):  # base64 of the gzip magic 1f 8b 08
        return decode_b64gzip(s, width, height)
    if s.startswith("iVBORw0KGgo"):  # base64 of the PNG signature
        return _from_bytes(_b64(s, "base64 PNG"), width, height, "base64 PNG")
    path = os.path.expanduser(s)
    if base_dir and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    why = guard(path) if guard is not None else None
    if why:
        raise RegionError(f"mask file {path!r} {why}")
    try:
        with open_regular(path) as f:  # a pipe or device named as a mask is refused by type, never opened
            data = f.read(_MAX_MASK_FILE_BYTES + 1)
    except FileNotFoundError:
        raise RegionError(f"mask file not found: {path!r} (nor is the text COCO RLE, base64 PNG or base64(gzip) data)") from None
    except OSError as exc:
        raise RegionError(f"mask file {path!r}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > _MAX_MASK_FILE_BYTES:
        raise RegionError(f"mask file {path!r} is over {_MAX_MASK_FILE_BYTES >> 20} MiB: not read")
    return _from_bytes(data, width, height, path)


def _from_bytes(data: bytes, width: int, height: int, where: str) -> np.ndarray:
    if data.startswith(_GZIP):
        return _from_gzip(data, width, height)
    return decode_image_mask(data, where, (width, height))


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:  # (h, w, bands): any band non-zero
        return np.asarray(a != 0).any(axis=2)
    if a.ndim != 2:
        raise RegionError(f"a mask array must be 2-D (h, w), got shape {a.shape}")
    return np.asarray(a) != 0


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RegionError(f"bad base64 in {what}: {exc}") from exc


def decode_rle(d: dict[str, Any], width: int, height: int) -> np.ndarray:
    """COCO RLE (string or list counts) -> bool mask; the RLE's size must be the image's."""
    try:
        h, w = (int(v) for v in d["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegionError(f"COCO RLE needs 'size': [height, width]; got {d.get('size')!r}") from exc
    if (h, w) != (height, width):
        raise RegionError(f"mask is {w}x{h} (COCO RLE size [{h}, {w}]) but the image is {width}x{height}")
    try:
        return rle.decode(d) != 0
    except (ValueError, TypeError) as exc:
        raise RegionError(f"bad COCO RLE: {exc}") from exc


def decode_image_mask(data: bytes, where: str = "mask image", size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG (or other PIL-readable) mask bytes -> bool array; any non-zero value in any band is in.

    With ``size`` (the image's width, height), a mask whose header says otherwise is refused
    before its pixels are decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > _MAX_MASK_PIXELS:
                raise RegionError(f"{where}: mask image of {im.width}x{im.height} is over {_MAX_MASK_PIXELS} pixels")
            if size is not None and im.size != tuple(size):
                raise RegionError(f"mask is {im.width}x{im.height} but the image is {size[0]}x{size[1]}")
            im.load()
            if im.mode == "P":  # palette index 0 is out, any other index is in
                return np.asarray(im) != 0
            return _from_array(np.asarray(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RegionError(f"{where}: not a readable mask image ({type(exc).__name__}: {exc})") from exc


def decode_b64gzip(text: Any, width: int, height: int) -> np.ndarray:
    """``base64(gzip(uint8 h*w row-major))`` -> bool mask of the image's size."""
    if not isinstance(text, str):
        raise RegionError(f"base64(gzip) mask must be text, got {type(text).__name__}")
    return _from_gzip(_b64(text, "base64(gzip) mask"), width, height)


def _from_gzip(data: bytes, width: int, height: int) -> np.ndarray:
    want = width * height
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = d.decompress(data, want + 1)  # never inflate more than one byte past the right size
        if not d.eof and len(raw) <= want:
            raise RegionError("truncated gzip data in base64(gzip) mask")
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise RegionError(f"bad gzip data in base64(gzip) mask: {exc}") from exc
    if len(raw) != want:
        got = f"more than {want}" if len(raw) > want else str(len(raw))
        raise RegionError(f"base64(gzip) mask has {got} bytes but the image is {width}x{height} ({want} pixels)")
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width) != 0


def _is_grid(spec: Any, width: int, height: int) -> bool:
    """Rows of 0/1 of exactly the image's size (a nested-list mask, not polygon rings)."""
    return len(spec) == height and all(
        isinstance(r, (list, tuple)) and len(r) == width and all(v in (0, 1) for v in r) for r in spec)  # fmt: skip


def is_polygon(spec: Any) -> bool:
    """A COCO polygon: a flat list of >= 6 numbers, or a list of such lists."""
    def ring(r: Any) -> bool:
        return isinstance(r, (list, tuple)) and len(r) >= 6 and len(r) % 2 == 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)  # fmt: skip

    if ring(spec):
        return True
    return isinstance(spec, (list, tuple)) and bool(spec) and all(ring(r) for r in spec)


def decode_polygons(spec: Any, width: int, height: int) -> np.ndarray:
    """COCO polygons (one ring or a list of rings, unioned) -> bool mask, rasterised by pycocotools.

    The rings are checked and bounded first, and pycocotools runs in an isolated child
    process (see :mod:`.polygons`)."""
    from ...deps import require
    from .polygons import check_rings, rasterise

    require("pycocotools.mask", extra="region", package="pycocotools", what="COCO polygon masks")
    rings = [spec] if spec and isinstance(spec[0], (int, float)) else list(spec)
    return rasterise(check_rings(rings, width, height), width, height)


def encode_b64gzip(mask: np.ndarray) -> str:
    """The inverse of :func:`decode_b64gzip` (for writing masks in that form, and for tests)."""
    raw = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8).tobytes()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


__all__ = [
    "decode_b64gzip",
    "decode_image_mask",
    "decode_mask",
    "decode_polygons",
    "decode_rle",
    "encode_b64gzip",
    "is_polygon",
]  # fmt: skip
