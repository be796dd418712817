"""Prompt templates: a prompt may name input columns as ``{column}``.

Names are those the columns have in the output row (an input ``caption`` is
``{org_caption}``); ``{{`` and ``}}`` are literal braces; any other brace is itself. Values go
in as quoted data: a JSON string (lists and objects as JSON), so a value is never read as an
instruction and never expanded again (a value ``"{id}"`` stays those four characters). A
missing value (no such column in the row, null or empty) follows ``missing``: ``empty`` puts
``""`` in, ``error`` fails the row (``template: ...``). A placeholder naming no input column
stops the run before it starts: the stage *needs* those names, and the method's check names
what is missing (see :meth:`pixscribe.engine.stage.Method.check`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import PixscribeError

TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
MISSING = ("empty", "error")


class TemplateError(PixscribeError):
    kind = "template"


def placeholders(template: str | None) -> tuple[str, ...]:
    """The column names ``template`` uses, in order of first use."""
    seen: dict[str, None] = {}
    for m in TOKEN.finditer(template or ""):
        if m.group(1):
            seen.setdefault(m.group(1), None)
    return tuple(seen)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False, default=str)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, dict, tuple)) and len(v) == 0)


def fill(template: str, get: Any, missing: str = "empty") -> str:
    """``template`` with each ``{name}`` replaced by ``get(name)`` as quoted data, in one pass."""
    if missing not in MISSING:
        raise ValueError(f"template missing rule: {missing!r} (allowed: {', '.join(MISSING)})")

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok in ("{{", "}}"):
            return tok[0]
        v = get(m.group(1))
        if _is_missing(v):
            if missing == "error":
                raise TemplateError(f"the row's {m.group(1)!r} is empty (template_missing=error)")
            return '""'
        return _value(v)

    return TOKEN.sub(sub, template)


__all__ = ["MISSING", "TemplateError", "fill", "placeholders"]
