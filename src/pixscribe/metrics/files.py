"""Reading the files of ``pixscribe eval`` and ``eval-regions`` with bounds, naming the file.

Every failure is a :class:`MetricsInputError` whose message starts with the flag and the file
(and the line or row), which the commands print as one line and exit 2:

- only regular files are read (a named pipe or a device is refused before it is opened);
- a ``.json`` file may hold at most :data:`MAX_JSON_BYTES` (1 GiB: COCO's largest annotation
  file is under half of that); a ``.jsonl`` line at most :data:`MAX_LINE_BYTES` (16 MiB),
  read without holding a longer one;
- text must be UTF-8 (the error gives the byte); JSON that does not parse, nests too deeply or
  holds a number Python will not convert is "not valid JSON" with the reason;
- a ``.jsonl`` or ``.json`` list must hold objects (rows).

:func:`rows` gives ``(where, row)`` pairs, ``where`` naming the line or row for messages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputFileError
from ..io.files import open_regular, special_kind
from ..io.lines import iter_lines, too_long

MAX_JSON_BYTES = 1 << 30
MAX_LINE_BYTES = 16 << 20


class MetricsInputError(InputFileError):
    kind = "MetricsInputError"  # as error rows and messages named it before it joined the family


def regular_file(p: Path, flag: str) -> os.stat_result:
    """``p``'s stat when it is a regular file; MetricsInputError otherwise (never opened)."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MetricsInputError(f"{flag} {p}: no such file") from None
    except OSError as exc:
        raise MetricsInputError(f"{flag} {p}: cannot read: {exc.strerror or exc}") from None
    kind = special_kind(st.st_mode)
    if kind:
        raise MetricsInputError(f"{flag} {p}: {kind}" + ("" if kind == "a directory" else ", not a regular file"))
    return st


def _open(p: Path, flag: str):
    """The input layer's :func:`~pixscribe.io.files.open_regular` (a pipe swapped in after the
    stat cannot block the open either), its refusals as MetricsInputError."""
    try:
        return open_regular(p)
    except OSError as exc:
        raise MetricsInputError(f"{flag} {p}: cannot read: {exc.strerror or exc}") from None


def loads(data: bytes, where: str) -> Any:
    """JSON from UTF-8 bytes; MetricsInputError starting with ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetricsInputError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricsInputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise MetricsInputError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise MetricsInputError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None


def read_json(p: Path, flag: str) -> Any:
    """A whole ``.json`` file, at most :data:`MAX_JSON_BYTES`."""
    size = regular_file(p, flag).st_size
    if size > MAX_JSON_BYTES:
        raise MetricsInputError(f"{flag} {p}: a .json file of {size:,} bytes is over the limit of {MAX_JSON_BYTES:,} "
                                "bytes; give the rows as .jsonl or .parquet")  # fmt: skip
    with _open(p, flag) as f:
        return loads(f.read(MAX_JSON_BYTES + 1), f"{flag} {p}")


def jsonl_values(p: Path, flag: str) -> list[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line of a JSON-lines file."""
    regular_file(p, flag)
    out = []
    with _open(p, flag) as f:
        for line in iter_lines(f, MAX_LINE_BYTES):
            if line.blank:
                continue
            if line.data is None:
                raise MetricsInputError(f"{flag} " + too_long(str(p), line, MAX_LINE_BYTES, "a row of an eval file"))
            out.append((f"line {line.number}", loads(line.data, f"{flag} {p}:{line.number}")))
    return out


def parquet_rows(p: Path, flag: str) -> list[tuple[str, Any]]:
    import pyarrow.parquet as pq

    regular_file(p, flag)
    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure is an unreadable file
        raise MetricsInputError(f"{flag} {p}: cannot read parquet ({exc})") from None
    return [(f"row {n}", r) for n, r in enumerate(rows)]


def kind(v: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("a list", "a number", ...)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(v), f"a {type(v).__name__}")


def objects(items: list[tuple[str, Any]], p: Path, flag: str) -> list[tuple[str, dict[str, Any]]]:
    for where, r in items:
        if not isinstance(r, dict):
            raise MetricsInputError(f"{flag} {p}: {where} is {kind(r)}, not an object (a row)")
    return items


def rows(p: Path, flag: str) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a ``.jsonl`` or ``.parquet`` file, each an object."""
    if p.suffix == ".jsonl":
        return objects(jsonl_values(p, flag), p, flag)
    if p.suffix == ".parquet":
        return parquet_rows(p, flag)
    raise MetricsInputError(f"{flag} {p}: unknown file type (expected .json, .jsonl, .parquet or a directory)")


def json_list(data: Any, p: Path, flag: str, what: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The items of a parsed ``.json`` list (``what``: its key, as "annotations "), each an object."""
    if not isinstance(data, list):
        inside = f" in {what.strip()!r}" if what else ""
        raise MetricsInputError(f"{flag} {p}: expected a list of rows{inside}, got {kind(data)}")
    return objects([(f"{what}item {n}", r) for n, r in enumerate(data)], p, flag)


__all__ = ["MAX_JSON_BYTES", "MAX_LINE_BYTES", "MetricsInputError", "json_list", "jsonl_values", "kind", "loads",
           "parquet_rows", "read_json", "regular_file", "rows"]
