"""COCO run-length encoding (RLE), written exactly as pycocotools writes it, without pycocotools.

A mask of shape ``(h, w)`` is flattened in column-major (Fortran) order and stored as
alternating run lengths, starting with a run of zeros (possibly of length 0). The
compressed string form (``counts`` as a ``str``) is pycocotools' ``rleToString``: each
count (from the third on, as a difference to the count two places before) is written as
a little-endian sequence of 5-bit groups, with bit 0x20 meaning "more groups follow" and
bit 0x10 of the last group carrying the sign, each group offset by 48 into printable ASCII.

Public helpers:

- :func:`encode` ``(mask) -> {"size": [h, w], "counts": str}``
- :func:`decode` ``(rle) -> np.ndarray[uint8] (h, w)``
- :func:`decode_sampled` ``(rle, step) -> decode(rle)[::step, ::step]``, without the full mask
- :func:`area` ``(rle) -> int``
- :func:`to_bbox` ``(rle) -> [x, y, w, h]`` (COCO xywh, as ``pycocotools.mask.toBbox``)
- :func:`to_xyxy` ``(rle) -> (x0, y0, x1, y1)`` pixel box with exclusive right/bottom edges
- :func:`counts_to_string` / :func:`string_to_counts` for the compressed form
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "encode",
    "decode",
    "decode_sampled",
    "area",
    "to_bbox",
    "to_xyxy",
    "counts_to_string",
    "string_to_counts",
    "mask_to_counts",
]


def mask_to_counts(mask: Any) -> tuple[list[int], int, int]:
    """Uncompressed COCO counts of a binary mask: ``(counts, h, w)``."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"RLE encode expects a 2-D mask (h, w), got shape {m.shape}")
    h, w = m.shape
    flat = (m != 0).ravel(order="F").astype(np.int8)
    n = flat.size
    if n == 0:
        return [], h, w
    # positions where the value changes
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [n]))
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:  # COCO counts always start with a (possibly empty) run of zeros
        runs = [0] + runs
    return [int(r) for r in runs], h, w


def counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools' ``rleToString``."""
    out: list[str] = []
    cnts = [int(c) for c in counts]
    for i, c in enumerate(cnts):
        x = c - cnts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str | bytes, max_counts: int | None = None) -> list[int]:
    """pycocotools' ``rleFrString``; more than ``max_counts`` counts is a ValueError (raised
    as soon as the next one starts, so a long string of a small mask is not read through)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    cnts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        if max_counts is not None and len(cnts) >= max_counts:
            raise ValueError(f"COCO RLE string holds more than {max_counts} counts, more than its size allows")
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated COCO RLE string: a count's last 5-bit group is missing")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {s[p]!r} in COCO RLE string at position {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def encode(mask: Any) -> dict[str, Any]:
    """Binary mask ``(h, w)`` (bool/uint8/any nonzero) -> ``{"size": [h, w], "counts": str}``."""
    counts, h, w = mask_to_counts(mask)
    return {"size": [int(h), int(w)], "counts": counts_to_string(counts)}


MAX_SIDE = 1 << 24  # a side over 16.7M pixels is no image's (and keeps run offsets in int64)


def _counts(rle: dict[str, Any]) -> tuple[list[int], int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
        c = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE dict with 'size' [h, w] and 'counts': {rle!r:.80}") from exc
    if not (0 <= h <= MAX_SIDE and 0 <= w <= MAX_SIDE):
        raise ValueError(f"COCO RLE size [{h}, {w}]: each side must be 0..{MAX_SIDE}")
    most = h * w + 1  # runs alternate, and only the first may be empty
    if isinstance(c, (str, bytes)):
        counts = string_to_counts(c, most)
    elif len(c) > most:
        raise ValueError(f"COCO RLE has {len(c)} counts, more than its size allows ({most})")
    else:
        counts = [int(v) for v in c]
    if any(v < 0 for v in counts) or sum(counts) != h * w:
        raise ValueError(f"COCO RLE counts sum to {sum(counts)} but size {h}x{w} needs {h * w}")
    return counts, h, w


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or list counts) -> uint8 mask ``(h, w)``."""
    counts, h, w = _counts(rle)
    vals = np.zeros(len(counts), dtype=np.uint8)
    vals[1::2] = 1
    flat = np.repeat(vals, counts)
    return flat.reshape((h, w), order="F")


def decode_sampled(rle: dict[str, Any], step: int) -> np.ndarray:
    """``decode(rle)[::step, ::step]``, read straight from the runs: memory and time grow with
    the counts and the sampled size, never with the size the RLE claims (a thumbnail of an
    8-character mask of 300000x300000 costs what a 384x384 one does)."""
    counts, h, w = _counts(rle)
    ys, xs = np.arange(0, h, step, dtype=np.int64), np.arange(0, w, step, dtype=np.int64)
    ends = np.cumsum(np.asarray(counts, dtype=np.int64))
    flat = (xs[None, :] * h + ys[:, None]).ravel()  # column-major offsets of the sampled pixels
    run = np.searchsorted(ends, flat, side="right")  # the run each falls in: odd runs are foreground
    return (run % 2).astype(np.uint8).reshape(len(ys), len(xs))


def area(rle: dict[str, Any]) -> int:
    counts, _, _ = _counts(rle)
    return int(sum(counts[1::2]))


def to_bbox(rle: dict[str, Any]) -> list[float]:
    """COCO ``[x, y, w, h]`` of the foreground, as ``pycocotools.mask.toBbox`` (zeros when empty)."""
    counts, h, w = _counts(rle)
    m = (len(counts) // 2) * 2
    if m == 0 or h == 0:
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys, xe, ye = w, h, 0, 0
    cc = 0
    xp = 0
    any_fg = False
    for j in range(m):
        cc += counts[j]
        t = cc - j % 2
        if j % 2 == 1 and counts[j] == 0:
            continue
        if j % 2 == 0 and counts[j + 1] == 0:
            continue  # an empty foreground run after this one
        any_fg = True
        y = t % h
        x = (t - y) // h
        if j % 2 == 0:
            xp = x
        elif xp < x:
            ys, ye = 0, h - 1
        xs, xe = min(xs, x), max(xe, x)
        ys, ye = min(ys, y), max(ye, y)
    if not any_fg:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs), float(ys), float(xe - xs + 1), float(ye - ys + 1)]


def to_xyxy(rle: dict[str, Any]) -> tuple[float, float, float, float]:
    x, y, bw, bh = to_bbox(rle)
    return (x, y, x + bw, y + bh)
