"""Reading line-based files with a bound on each line, so one huge line never sits in memory.

    with open(path, "rb") as f:
        for line in iter_lines(f, max_bytes=1 << 20):
            if line.data is None:      # longer than max_bytes: skipped in 1 MiB pieces, never held
                report(f"{path}:{line.number}: line of {line.size:,} bytes is over ...")
            else:
                use(line.data)         # without its line ending

Lines end at ``\\n`` only (``\\r\\n`` is stripped too): a file of one caption or one JSON row per
line has no other separators. ``offset`` is where the line starts, ``blank`` says whether it
holds only whitespace (known for long lines too), so a scan that counts rows and the reader
that yields them agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

_PIECE = 1 << 20
# One row of a .jsonl input table: room for an inline base64 image of 48 MB (above the 50 MB
# --url-max-bytes of a fetched one, base64 being 4/3 of it); larger images belong in files
# named by a path column. A longer line is an error row, read past in 1 MiB pieces.
MAX_TABLE_ROW_BYTES = 64 << 20


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    offset: int  # byte offset of its start
    size: int  # bytes, with its line ending
    data: bytes | None  # without the line ending; None when over the bound
    blank: bool


def iter_lines(f: BinaryIO, max_bytes: int, start: int = 0) -> Iterator[Line]:
    """The lines of a binary file read from its current position (``start`` is that offset)."""
    pos, n = start, 0
    while True:
        chunk = f.readline(max_bytes + 2)  # room for the content, "\r" and "\n"
        if not chunk:
            return
        n += 1
        if chunk.endswith(b"\n") or len(chunk) < max_bytes + 2:
            data = chunk.rstrip(b"\n").removesuffix(b"\r")
            if len(data) <= max_bytes:
                yield Line(n, pos, len(chunk), data, not data.strip())
                pos += len(chunk)
                continue
        size, blank = len(chunk), not chunk.strip()
        while not chunk.endswith(b"\n"):
            chunk = f.readline(_PIECE)
            if not chunk:
                break
            size += len(chunk)
            blank = blank and not chunk.strip()
        yield Line(n, pos, size, None, blank)
        pos += size


def too_long(where: str, line: Line, limit: int, hint: str) -> str:
    """The message for a line over ``limit`` bytes."""
    return f"{where}:{line.number}: a line of {line.size:,} bytes is over the limit of {limit:,} bytes ({hint})"


__all__ = ["MAX_TABLE_ROW_BYTES", "Line", "iter_lines", "too_long"]
