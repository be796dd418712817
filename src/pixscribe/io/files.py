"""Opening input files without ever blocking: regular files only, refused by type first.

A named pipe opened for reading waits for a writer, forever, and in a decode thread no
signal reaches that wait (SIGTERM ran its handler in the main thread, then the process
waited on the stuck thread at exit); a character device such as ``/dev/zero`` or a
terminal never ends; a socket or a block device is no image. :func:`open_regular`
``stat``\\ s the path and refuses anything but a regular file before opening it, then opens
with ``O_NONBLOCK`` (a pipe swapped in after the ``stat`` cannot block the open either) and
checks the opened file's type again with ``fstat`` before a byte is read. Reading a regular
file always ends (a slow network filesystem is out of scope).

The refusal is a :class:`NotRegularFile`, an ``OSError`` whose ``strerror`` says what the
path is (``"is a named pipe, not a regular file"``), so every ``except OSError`` that
reports ``exc.strerror`` names the file and the reason without a new branch.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

__all__ = ["NotRegularFile", "open_regular", "read_regular", "special_kind"]

_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class NotRegularFile(OSError):
    """The path is a pipe, socket, device or directory: never opened for reading."""

    def __init__(self, path: str, kind: str):
        super().__init__(None, f"is {kind}, not a regular file", path)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def special_kind(mode: int) -> str | None:
    """What a ``st_mode`` is when it is not a regular file (``"a named pipe"``...), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``open(path, "rb")`` for regular files only (see the module docstring); raises
    :class:`NotRegularFile`, or the ``OSError`` of a missing or unreadable path."""
    p = os.fspath(path)
    kind = special_kind(os.stat(p).st_mode)
    if kind:
        raise NotRegularFile(p, kind)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(p, flags)
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind:
            raise NotRegularFile(p, kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as f:
        return f.read()
