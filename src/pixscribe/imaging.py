"""Decoding images from bytes: the pixel-bomb guard, EXIF orientation, mode
normalisation to RGB, the first frame of animations and resizing to a pixel budget.

:func:`decode` is what the engine's decode thread pool calls for every record. It is
thread-safe: it never touches PIL's process-global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``, warning filters) and closes what it opens.

Speed: large JPEGs are decoded with libjpeg's DCT scaling (``Image.draft``), which
produces the image at 1/2, 1/4 or 1/8 of its size directly (never smaller than the
target), and only the remaining factor (< 2x) is done by a bicubic resize. See
``bench/p1_decode.py`` for the figures against a naive ``open().convert().resize()``.

Every failure is a :class:`pixscribe.record.DecodeError` (kind ``decode``) whose
message names the source and the reason: ``empty file``, ``not an image (...)``,
``truncated image (...)``, ``corrupt image (...)`` or ``decompression bomb guard: ...``.
Messages never quote the file's bytes (a path column may name a file that is not an
image, and the error column may end up in a published dataset).

JPEG pass-through: a JPEG that needs nothing done to it (already within the pixel budget,
no EXIF rotation, plain RGB, one frame) keeps its own bytes on the decoded image, minus
metadata segments (EXIF, XMP, IPTC, comments), so the HTTP backend sends them as they are
instead of re-encoding (:func:`passthrough_jpeg`, ``PASSTHROUGH_ATTR``).
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from pixscribe.record import DecodeError

__all__ = [
    "Decoded",
    "decode",
    "from_pil",
    "target_size",
    "resize_to_budget",
    "to_rgb",
    "encode_jpeg",
    "passthrough_jpeg",
    "strip_jpeg_metadata",
    "PASSTHROUGH_ATTR",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
]

DEFAULT_MAX_PIXELS = 1_000_000
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default MAX_IMAGE_PIXELS
WHITE = (255, 255, 255)

_ORIENTATION_TAG = 0x0112
# Formats whose header says "this is an image" even when PIL cannot parse the rest.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass
class Decoded:
    """A decoded image. ``width``/``height`` are after orientation and resizing;
    ``orig_width``/``orig_height`` after orientation, before resizing."""

    image: Image.Image  # mode "RGB"
    width: int
    height: int
    orig_width: int
    orig_height: int
    format: str | None
    frames: int = 1
    exif: dict[str, str] | None = None  # camera and time, when the file has them
    passthrough: bool = False  # the image carries its source JPEG bytes (see passthrough_jpeg)


_EXIF_FIELDS = {271: "make", 272: "model", 306: "datetime"}
_EXIF_SUB = {36867: "datetime_original", 33434: "exposure_time", 33437: "f_number", 37386: "focal_length"}


def exif_summary(source: Image.Exif | Image.Image | bytes) -> dict[str, str]:
    """Camera make/model and capture time (plus a few exposure fields) from an EXIF block,
    an opened image, or the file's bytes; ``{}`` when there is none or it is unreadable."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            with Image.open(io.BytesIO(bytes(source))) as im:
                ex = im.getexif()
        elif isinstance(source, Image.Exif):
            ex = source
        else:
            ex = source.getexif()
        out: dict[str, str] = {}
        for tag, name in _EXIF_FIELDS.items():
            v = ex.get(tag)
            if v not in (None, ""):
                out[name] = str(v).strip("\x00 ").strip()
        try:
            sub = ex.get_ifd(0x8769)
        except Exception:  # noqa: BLE001
            sub = {}
        for tag, name in _EXIF_SUB.items():
            v = sub.get(tag)
            if v not in (None, ""):
                out[name] = str(float(v)) if not isinstance(v, (str, bytes)) else str(v).strip("\x00 ").strip()
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        return {}
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------
def target_size(w: int, h: int, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> tuple[int, int]:
    """The size to resize a ``w``×``h`` image to: aspect kept, only ever smaller,
    at most ``max_pixels`` in total and ``max_side`` on the longest side, and never
    below 1 px per side (so a 1×4000 image stays valid).

    Symmetric: ``target_size(h, w) == target_size(w, h)[::-1]``.
    """
    w, h = int(w), int(h)
    if w < 1 or h < 1:
        raise ValueError(f"target_size: image size must be positive, got {w}x{h}")
    s = 1.0
    if max_pixels and w * h > max_pixels:
        s = math.sqrt(max_pixels / (w * h))
    if max_side and max(w, h) * s > max_side:
        s = max_side / max(w, h)
    if s >= 1.0:
        return w, h
    nw = max(1, min(w, math.floor(w * s + 1e-6)))
    nh = max(1, min(h, math.floor(h * s + 1e-6)))
    if max_side:
        nw, nh = min(nw, max_side), min(nh, max_side)
    if max_pixels and nw * nh > max_pixels:
        # only reachable for extreme aspect ratios where one side is pinned at 1 px
        nh = max(1, min(nh, max_pixels // nw))
        nw = max(1, min(nw, max_pixels // nh))
    return nw, nh


def resize_to_budget(
    img: Image.Image,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> Image.Image:
    """``img`` downscaled to :func:`target_size` (the same object if already small enough).

    Large reductions first shrink by an integer factor with a box filter
    (``reducing_gap``), then resample to the exact size: fast and without aliasing.
    """
    return _resize(img, target_size(img.width, img.height, max_pixels, max_side), resample)


def _resize(
    img: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    if size == img.size and box is None:
        return img
    if img.mode not in ("RGB", "RGBA", "L", "LA", "CMYK", "RGBX", "I", "F"):
        img = to_rgb(img)  # palette indices, 1-bit and 16-bit data cannot be resampled as is
    return img.resize(size, resample, box=box, reducing_gap=3.0)


# ---------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------
def _over_white(rgba: Image.Image) -> Image.Image:
    rgba = rgba if rgba.mode == "RGBA" else rgba.convert("RGBA")
    bg = Image.new("RGB", rgba.size, WHITE)
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


def _int_to_rgb(img: Image.Image) -> Image.Image:
    """High bit-depth single-channel images (I;16*, I, F) to 8-bit, by scaling, not clipping."""
    mode = img.mode
    a = np.asarray(img)
    if a.ndim != 2:  # pragma: no cover - these modes are single channel
        a = a[..., 0]
    if mode.startswith("I;16"):
        out = (a.astype(np.float64) / 257.0).round()
    else:
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0  # normalised float data
        elif mode == "I" and lo >= 0 and hi <= 255:
            out = a  # 8-bit values stored as 32-bit
        elif mode == "I" and lo >= 0 and hi <= 65535:
            out = a / 257.0  # 16-bit data (e.g. a 16-bit PNG opened as "I")
        elif hi > lo:
            out = (a - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch
        else:
            out = np.zeros_like(a)
        out = np.nan_to_num(out, nan=0.0).round()
    g = np.clip(out, 0, 255).astype(np.uint8)
    return Image.fromarray(g, "L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha (LA, RGBA, PA, palette/grey/RGB with a transparency
    key) is composited over white; CMYK, YCbCr, HSV, LAB, 1-bit and L are converted;
    16-bit and 32-bit data are scaled to 8 bits."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(img.convert("RGBA"))
    if mode in ("P", "L", "RGB", "1") and img.info.get("transparency") is not None:
        return _over_white(img.convert("RGBA"))  # a colour key (PNG tRNS, GIF transparency)
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _int_to_rgb(img)
    return img.convert("RGB")  # 1-bit pixels become 0/255 directly


# ---------------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------------
def _sniff(data: bytes) -> str:
    """A short description of non-image bytes, for the error message. It says what kind of
    data it is, never what the data says (an error row may be published)."""
    head = data[:512]
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        low = stripped[:64].lower()
        if b"<svg" in head.lower():
            return "SVG vector data, not a raster image"
        if low.startswith(b"<!doctype html") or low.startswith(b"<html"):
            return "an HTML page (a URL that returned a web page?)"
        return "XML/HTML text"
    if stripped[:1] in (b"{", b"["):
        return "JSON text"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return f"plain text, {len(data)} bytes"  # never quoted: it may be a secret
    except UnicodeDecodeError:
        pass
    return f"unknown format, {len(data)} bytes"


class _Unidentified(UnidentifiedImageError):
    problems: dict[str, str]


def _open_unchecked(fp: IO[bytes]) -> ImageFile.ImageFile:
    """Identify and open an image like ``Image.open``, but without PIL's global
    decompression-bomb check: :func:`decode` applies its own per-call limit, so the
    result never depends on (or changes) ``Image.MAX_IMAGE_PIXELS``. Only the header
    is read here; pixels are decoded by ``load()``."""
    prefix = fp.read(16)
    problems: dict[str, str] = {}
    tried: set[str] = set()
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                ok = not accept or accept(prefix)
                if isinstance(ok, str) or not ok:
                    continue
                fp.seek(0)
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error, EOFError, ValueError, OSError) as e:
                problems[fmt] = str(e) or type(e).__name__
    err = _Unidentified("cannot identify image format")
    err.problems = problems
    raise err


def _open(fp: IO[bytes]) -> ImageFile.ImageFile:
    try:
        return _open_unchecked(fp)
    except (AttributeError, KeyError):  # pragma: no cover - PIL internals changed
        fp.seek(0)
        return Image.open(fp)


def _frame_count(im: Image.Image) -> int:
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - a broken later frame must not fail the first
        n = 1
    try:
        if im.tell() != 0:
            im.seek(0)
    except Exception:  # noqa: BLE001
        pass
    return max(1, n)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # the same table as ImageOps.exif_transpose
# modes PIL resamples directly (alpha is premultiplied by resize itself)
_RESIZABLE = {"RGB", "RGBA", "L", "LA", "CMYK", "RGBX"}


def _finish(
    im: Image.Image,
    orientation: int,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Loaded image -> RGB, resized to ``size`` (in stored orientation; ``box`` is the
    region of ``im`` that holds the picture, after a JPEG draft), oriented; always a
    new object detached from ``im``."""
    out = im
    if out.mode in _RESIZABLE and out.info.get("transparency") is None:
        out = to_rgb(_resize(out, size, resample, box))  # shrink first: cheaper
    else:
        out = _resize(to_rgb(out), size, resample, box)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        # transposing after the resize moves 1/12 of the pixels of a 12 MP photo;
        # target_size is symmetric so the size is the same as resizing after it
        out = out.transpose(method)
    if out is im:
        out = im.copy()  # detach from the file object that is about to be closed
    out.info.clear()
    return out


def _bomb_message(src: str, w: int, h: int, limit: int) -> str:
    return (
        f"{src}: decompression bomb guard: {w}×{h} = {w * h} pixels exceeds "
        f"--max-image-pixels {limit}; raise --max-image-pixels if this image is trusted"
    )


_PIL_BOMB = re.compile(r"\((\d+) pixels\)")
# quoted literals in PIL's messages ("broken PNG file (chunk b'...')") are bytes of the file
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\"")


def _scrub(msg: str, limit: int = 160) -> str:
    """A library's error message without the file bytes it may quote."""
    return _QUOTED.sub("<bytes>", " ".join(str(msg).split()))[:limit]


def _open_checked(fp: io.BytesIO, data: bytes, src: str) -> Image.Image:
    """Open the image lazily (header only), naming a truncated header or a non-image."""
    try:
        return _open(fp)
    except UnidentifiedImageError as e:
        fmt = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
        if fmt is not None:
            why = _scrub(getattr(e, "problems", {}).get(fmt, str(e)))
            raise DecodeError(
                f"{src}: truncated image ({fmt} header is incomplete or corrupt, "
                f"{len(data)} bytes: {why}); re-download or re-export the file"
            ) from None
        raise DecodeError(f"{src}: not an image ({_sniff(data)})") from None
    except Image.DecompressionBombError as e:  # pragma: no cover - only via Image.open fallback
        m = _PIL_BOMB.search(str(e))
        n = m.group(1) if m else "?"
        raise DecodeError(f"{src}: decompression bomb guard: {n} pixels exceeds the limit") from None


def _draft(
    im: Image.Image, fmt: str | None, target: tuple[int, int]
) -> tuple[Image.Resampling, tuple[float, float, float, float] | None]:
    """For a JPEG larger than ``target``: let libjpeg scale while decoding. Returns the filter
    for the rest of the reduction and the crop box of the scaled image (None: no crop)."""
    w0, h0 = im.size
    tw, th = target
    resample, box = Image.Resampling.BICUBIC, None
    if (tw, th) == (w0, h0) or fmt not in ("JPEG", "MPO"):
        return resample, box
    # libjpeg scales by 1/2, 1/4 or 1/8 while decoding (its DCT scaling is itself a good
    # low-pass), never below (tw, th); target_size is symmetric, so this holds whatever the
    # EXIF orientation.
    drafted = im.draft("RGB", (tw, th))
    if drafted is not None and im.size != (w0, h0):
        box = drafted[1]  # the scaled image may carry a partial last pixel (e.g. 4001/2 -> 2001)
    if im.width < 2 * tw and im.height < 2 * th:
        # what is left is a reduction by less than 2x. A Hamming (windowed sinc) filter costs
        # half of bicubic there; on 12 MP photos both stay within 0.7/255 (mean abs) of a
        # full-resolution Lanczos reference (bicubic 0.44, Hamming 0.65). bench/p1_decode.py
        # prints the speed figures.
        resample = Image.Resampling.HAMMING
    return resample, box


def _load(im: Image.Image, fmt: str | None, src: str, size: int) -> None:
    """Decode the pixels, naming a truncated or corrupt file."""
    try:
        im.load()
    except (OSError, EOFError, SyntaxError, ValueError) as e:
        msg = _scrub(str(e) or type(e).__name__)
        if isinstance(e, EOFError) or "truncat" in msg.lower() or "end of file" in msg.lower():
            raise DecodeError(
                f"{src}: truncated image ({fmt} data ends early: {msg}; {size} bytes); "
                "re-download or re-export the file"
            ) from None
        raise DecodeError(f"{src}: corrupt image ({fmt}: {msg})") from None


def _orientation_and_exif(im: Image.Image) -> tuple[int, dict[str, str] | None]:
    """The EXIF orientation (1 when absent) and the EXIF summary; a broken EXIF block is not a
    broken image."""
    try:
        ex = im.getexif()
        return int(ex.get(_ORIENTATION_TAG, 1) or 1), exif_summary(ex) or None
    except Exception:  # noqa: BLE001
        return 1, None


def decode(
    data: bytes,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    source: str = "",
) -> Decoded:
    """Decode image bytes to an RGB image within the pixel budget.

    - refuses images whose header declares more than ``max_image_pixels`` pixels,
      before any pixel is decoded;
    - applies the EXIF orientation (sizes reported after it);
    - takes the first frame of animations and reports the frame count;
    - normalises every mode to RGB (alpha over white, 16-bit scaled to 8-bit);
    - downscales to at most ``max_pixels`` pixels and ``max_side`` per side, using
      JPEG DCT scaling (draft mode) for large JPEGs.

    Raises :class:`DecodeError` naming ``source`` and the reason.
    """
    src = source or "<bytes>"
    if data is None or len(data) == 0:
        raise DecodeError(f"{src}: empty file (0 bytes); the file or download is empty")
    if isinstance(data, memoryview):
        data = data.tobytes()
    fp = io.BytesIO(data)
    im: Image.Image | None = None
    try:
        im = _open_checked(fp, data, src)
        fmt = im.format
        w0, h0 = im.size
        if max_image_pixels and w0 * h0 > max_image_pixels:
            raise DecodeError(_bomb_message(src, w0, h0, max_image_pixels))
        if w0 < 1 or h0 < 1:
            raise DecodeError(f"{src}: corrupt image (declares size {w0}x{h0})")
        frames = _frame_count(im)
        target = target_size(w0, h0, max_pixels, max_side)
        resample, box = _draft(im, fmt, target)
        _load(im, fmt, src, len(data))
        orientation, exif = _orientation_and_exif(im)
        own = _passthrough_bytes(data, im, fmt, frames, orientation, target)
        out = _finish(im, orientation, target, resample, box)
        if own is not None:
            setattr(out, PASSTHROUGH_ATTR, (out.size, own))
        ow, oh = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
        return Decoded(image=out, width=out.width, height=out.height, orig_width=ow, orig_height=oh, format=fmt,
                       frames=frames, exif=exif, passthrough=own is not None)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        # raised by a plugin while loading (e.g. a later GIF frame larger than the screen)
        raise DecodeError(f"{src}: decompression bomb guard: {_scrub(str(e))}") from None
    except MemoryError:
        raise DecodeError(f"{src}: corrupt image (out of memory while decoding)") from None
    except Exception as e:  # noqa: BLE001 - every failure becomes a DecodeError row
        raise DecodeError(f"{src}: corrupt image ({type(e).__name__}: {_scrub(str(e))})") from None
    finally:
        if im is not None:
            try:
                im.close()
            except Exception:  # noqa: BLE001
                pass
        fp.close()


def from_pil(
    img: Image.Image,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    source: str = "",
) -> Decoded:
    """The same normalisation for an image that is already a PIL object (e.g. from
    a Hugging Face dataset): size guard, EXIF orientation, RGB, budget resize."""
    src = source or "<image>"
    if max_image_pixels and img.width * img.height > max_image_pixels:
        raise DecodeError(_bomb_message(src, img.width, img.height, max_image_pixels))
    try:
        fmt = img.format
        frames = _frame_count(img)
        try:
            orientation = int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
        except Exception:  # noqa: BLE001
            orientation = 1
        w0, h0 = img.size
        out = _finish(img, orientation, target_size(w0, h0, max_pixels, max_side))
        ow, oh = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
        return Decoded(out, out.width, out.height, ow, oh, fmt, frames)
    except Exception as e:  # noqa: BLE001
        raise DecodeError(f"{src}: corrupt image ({type(e).__name__}: {_scrub(str(e))})") from None


# ---------------------------------------------------------------------------------
# JPEG pass-through
# ---------------------------------------------------------------------------------
# The attribute :func:`decode` sets on an image whose source JPEG can be sent as it is:
# ``(size, jpeg_bytes)``. An attribute, not ``image.info``: PIL copies ``info`` into the
# results of crop/copy/convert/transpose, which would then carry another image's bytes;
# an attribute stays on this one object. Code that edits an image in place (ImageDraw,
# paste) must work on a copy, or delete the attribute.
PASSTHROUGH_ATTR = "pixscribe_source_jpeg"

_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field
_METADATA = {0xE1, *range(0xE3, 0xEE), 0xEF, 0xFE}  # APP1 (EXIF/XMP), APP3-13, APP15, COM


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """``data`` without its metadata segments (EXIF, XMP, IPTC, comments), the image data
    untouched (no decode); JFIF, ICC profile and Adobe segments are kept, since they say how
    to read the colours. None if the header cannot be walked."""
    if data[:2] != b"\xff\xd8":
        return None
    out = [data[:2]]
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            out.append(data[i : i + 2])
            i += 2
            continue
        if marker == _EOI:
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return None
        if marker == _SOS:
            out.append(data[i:])  # the scans (and anything after) as they are
            return b"".join(out)
        if marker not in _METADATA and not (marker == 0xE2 and not data[i + 4 : i + 16] == b"ICC_PROFILE\x00"):
            out.append(data[i : i + 2 + length])
        i += 2 + length
    return None


def _passthrough_bytes(
    data: bytes, im: Image.Image, fmt: str | None, frames: int, orientation: int, target: tuple[int, int]
) -> bytes | None:
    """The bytes to send for this image as it is, or None when it needs work: not a plain
    JPEG, resized, rotated by EXIF, not RGB (greyscale, CMYK) or not one frame."""
    if fmt != "JPEG" or frames != 1 or orientation not in (0, 1) or im.mode != "RGB":
        return None
    if im.size != target:
        return None
    return strip_jpeg_metadata(data)


def passthrough_jpeg(img: Image.Image, max_pixels: int | None = None, max_side: int | None = None) -> bytes | None:
    """The source JPEG bytes :func:`decode` kept on ``img``, if the image is still that same
    size and mode and already within this pixel budget; else None (encode it instead)."""
    kept = getattr(img, PASSTHROUGH_ATTR, None)
    if not kept:
        return None
    size, data = kept
    if img.size != size or img.mode != "RGB":
        return None
    if target_size(img.width, img.height, max_pixels, max_side) != tuple(size):
        return None
    return data


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """``img`` as baseline JPEG bytes (converted to RGB first), e.g. for base64 in an
    HTTP request."""
    buf = io.BytesIO()
    to_rgb(img).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()
