"""File names for rows in a folder export: safe on any file system, one per row.

An id is its own stem when it is plain: lower-case ASCII letters, digits, ``_`` and ``-``,
starting with a letter or digit, at most 100 characters (the sha256 ids of loose files,
img2dataset's ``000123`` keys). Any other id (upper case, ``/``, ``..``, dots, spaces,
control characters, another script, a Windows device name such as ``con``, a name ending in
OneTrainer's ``-masklabel``/``-condlabel``) becomes ``<slug>~<hash>``: a lower-case readable
slug of at most 48 characters and 20 hex digits of blake2b(id). No stem has upper case,
so two never differ only by case (macOS and Windows would make them one file), and no stem
has a dot (trainers split the extension at the last dot, webdataset at the first).

Two rows with the same id (ids are unique within a shard, not across shards) get the same
stem: :func:`claim` creates the file exclusively and takes ``<stem>~2``, ``<stem>~3``... for
the next ones, so nothing is ever written twice or over another row's file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["stem_of", "claim"]

_PLAIN = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_SLUG_DROP = re.compile(r"[^a-z0-9_-]+")
_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_TRAINER_SUFFIXES = ("-masklabel", "-condlabel")  # OneTrainer reads these as masks, not images


def stem_of(id_: Any) -> str:
    """The file stem of a row id (see the module docstring)."""
    s = "" if id_ is None else str(id_)
    if _PLAIN.fullmatch(s) and s not in _DEVICES and not s.endswith(_TRAINER_SUFFIXES):
        return s
    slug = _SLUG_DROP.sub("-", s.lower()).strip("-_")[:48].strip("-_") or "id"
    digest = hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
    return f"{slug}~{digest}"


def claim(root: Path, stem: str, ext: str) -> tuple[str, Path]:
    """Create ``root/<stem>.<ext>`` exclusively (empty), or ``<stem>~2.<ext>``... when taken;
    returns the stem used and the path."""
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}~{n}"
        path = root / f"{name}.{ext}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return name, path
        except FileExistsError:
            n += 1
