"""Where ``report`` and ``export`` write: never inside what they read, only over their own work.

- :func:`check_apart`: the destination may not be the output directory, lie inside it, or
  hold it (compared as real paths, so a symlink or ``..`` changes nothing). Writing inside
  an output would also break ``pyarrow.parquet.read_table(OUT_DIR)``, which reads every
  file below it.
- :func:`check_replaceable`: an existing destination is replaced only when it is what the
  command itself wrote before: a folder carrying its marker file (``_report.json``,
  ``_export.json``), a file whose first line is an exported row (a jsonl export), or an
  empty folder or file. Anything else is refused, whatever ``--overwrite`` says.
- :func:`swap_into_place`: the new destination replaces the old one by renames, so a
  failure leaves either the old or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import InputFileError
from ..io.files import open_regular

__all__ = ["DestError", "check_apart", "check_replaceable", "swap_into_place", "first_json_line"]

_FIRST_LINE_MAX = 4 * 1024 * 1024


class DestError(InputFileError):
    """A destination the command refuses to write (the message names it and why)."""

    kind = "DestError"  # as error rows and messages named it before it joined the family


def _inside(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_apart(src: Path, dest: Path, flag: str) -> None:
    """Refuse a ``dest`` that is ``src``, is inside it, or holds it."""
    s, d = os.path.realpath(src), os.path.realpath(dest)
    if _inside(d, s):
        where = "is" if d == s else "is inside"
        raise DestError(f"{flag} {dest}: {where} the output directory {src} being read; write it elsewhere")
    if _inside(s, d):
        raise DestError(f"{flag} {dest}: holds the output directory {src} being read; replacing it would delete "
                        "that output; write it elsewhere")


def first_json_line(path: Path) -> object:
    """The first line of a regular file parsed as JSON (None for an empty file); raises
    ``ValueError`` when it is not JSON, ``OSError`` when the file cannot be read."""
    with open_regular(path) as f:
        line = f.readline(_FIRST_LINE_MAX)
    if not line.strip():
        return None
    return json.loads(line)


def check_replaceable(dest: Path, *, marker: str, what: str, flag: str, overwrite: bool,
                      row_keys: tuple[str, ...] = ()) -> None:
    """Refuse an existing ``dest`` unless ``overwrite`` and it is ``what`` this command wrote:
    a folder with ``marker`` (or an empty folder); with ``row_keys``, a file whose first line
    is a JSON object with those keys (or an empty file)."""
    if not os.path.lexists(dest):
        return
    if not overwrite:
        raise DestError(f"{flag} {dest}: exists; pass --overwrite to replace it (only {what} is replaced)")
    if dest.is_dir() and not dest.is_symlink():
        if (dest / marker).is_file() or not any(dest.iterdir()):
            return
        raise DestError(f"{flag} {dest}: exists and is not {what} (no {marker} in it); refusing to replace it, "
                        "even with --overwrite; give a new path or remove it yourself")
    if row_keys and dest.is_file() and not dest.is_symlink():
        try:
            head = first_json_line(dest)
        except (OSError, ValueError):
            head = False
        if head is None or (isinstance(head, dict) and all(k in head for k in row_keys)):
            return
    raise DestError(f"{flag} {dest}: exists and is not {what}; refusing to replace it, even with --overwrite; "
                    "give a new path or remove it yourself")


def swap_into_place(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest``; an old ``dest`` is renamed aside first, removed last."""
    old = None
    if os.path.lexists(dest):
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
