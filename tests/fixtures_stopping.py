"""Tiny models that end their replies, for multi-stage methods on the real code path.

Random weights never emit their end-of-sequence token, so every reply of a tiny model is cut
at ``max_new_tokens`` (``finish_reason: length``), and a stage that reads values out of its
reply (panoptic's lists, textualize's objects) rightly fails such a reply as ``truncated:``.
A copy whose generation config forces EOS as the last token (``forced_eos_token_id``, a
standard transformers setting) ends every reply within its limit, as a trained model does:
the same weights, processor and ``generate``; only where the reply ends differs.

- ``stopping_vlms``: ``{"llava": Path}``, a copy of ``tiny_vlms["llava"]``;
- ``stopping_llm``: a copy of ``tiny_llm``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def stopping_copy(src: Path, dest: Path) -> Path:
    """``src`` copied to ``dest`` with ``forced_eos_token_id`` set to its EOS token."""
    if not dest.exists():
        shutil.copytree(src, dest)
    gc_path = dest / "generation_config.json"
    gc = json.loads(gc_path.read_text())
    eos = gc["eos_token_id"]
    gc["forced_eos_token_id"] = eos[0] if isinstance(eos, list) else eos
    gc_path.write_text(json.dumps(gc, indent=2))
    return dest


@pytest.fixture(scope="session")
def stopping_vlms(tiny_vlms, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stopping")
    return {"llava": stopping_copy(tiny_vlms["llava"], root / "llava")}


@pytest.fixture(scope="session")
def stopping_llm(tiny_llm, tmp_path_factory) -> Path:
    return stopping_copy(tiny_llm, tmp_path_factory.mktemp("stopping_llm") / "text_llm")
