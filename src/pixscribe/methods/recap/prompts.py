"""Several prompts of one image: how ``recap.prompts`` is read and which column each fills.

``--prompts short="Describe it in one line.",long="Describe it in detail."`` (a string of
``NAME=PROMPT`` items; an item starts at a comma followed by ``NAME=``, so a prompt may hold
commas but not ``,word=``), a YAML mapping ``{short: ..., long: ...}``, a YAML list (of prompts,
named ``1``, ``2``... by position, or of one-key mappings ``- short: ...``), or ``@FILE``: a
YAML file holding one of these. Names are letters, digits and ``_``; each prompt fills
``re_caption_NAME`` (a language is just a prompt: ``en=...,de=...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9_]+")
_ITEM_START = re.compile(r",\s*(?=[A-Za-z0-9_]+\s*=)")
BASE = "re_caption"


def column(name: str) -> str:
    """The column of a prompt: ``re_caption_NAME``; the single default prompt (name "") is ``re_caption``."""
    return f"{BASE}_{name}" if name else BASE


def parse_prompts(value: Any, where: str = "recap.prompts") -> dict[str, str]:
    """``recap.prompts`` as ``{name: prompt}``, in the order given (see the module doc)."""
    if isinstance(value, str) and value.startswith("@"):
        return parse_prompts(_read(value[1:], where), f"{where} ({value[1:]})")
    if isinstance(value, str):
        items = [_split_item(part, where) for part in _ITEM_START.split(value.strip()) if part.strip()]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [_list_item(i, v, where) for i, v in enumerate(value, 1)]
    else:
        raise ConfigError(f"{where}: give NAME=PROMPT,..., a mapping, a list or @FILE, not {type(value).__name__}")
    out: dict[str, str] = {}
    for name, prompt in items:
        name = str(name).strip()
        if not NAME.fullmatch(name):
            raise ConfigError(f"{where}: prompt name {name!r}: use letters, digits and _ (it names the column "
                              f"{BASE}_NAME)")
        if name in out:
            raise ConfigError(f"{where}: the prompt name {name!r} is given twice")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{where}: the prompt {name!r} is empty or not text")
        out[name] = prompt.strip()
    if not out:
        raise ConfigError(f"{where}: no prompts given")
    return out


def _split_item(part: str, where: str) -> tuple[str, str]:
    name, eq, prompt = part.partition("=")
    if not eq:
        raise ConfigError(f"{where}: {part.strip()[:60]!r} is not NAME=PROMPT")
    prompt = prompt.strip()
    if len(prompt) >= 2 and prompt[0] == prompt[-1] and prompt[0] in "\"'":
        prompt = prompt[1:-1]
    return name, prompt


def _list_item(i: int, v: Any, where: str) -> tuple[str, Any]:
    if isinstance(v, dict) and len(v) == 1:
        return next(iter(v.items()))
    if isinstance(v, str):
        return str(i), v
    raise ConfigError(f"{where}: list item {i} is neither a prompt nor a one-key mapping NAME: PROMPT")


def _read(path: str, where: str) -> Any:
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{where}: prompts file {p}: no such file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: prompts file {p} is not YAML: {str(exc).splitlines()[0]}") from None


__all__ = ["BASE", "column", "parse_prompts"]
