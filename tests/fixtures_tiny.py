"""Session fixtures: tiny random-weight models of real architectures, built once per test run.

- ``tiny_vlms``: ``{"llava": Path, "idefics3": Path}``, each loadable with
  ``AutoProcessor`` + ``AutoModelForImageTextToText`` (see :mod:`pixscribe.testing.tiny`).
- ``tiny_llm``: a tiny Qwen2 causal LM with a ChatML template (``AutoTokenizer`` +
  ``AutoModelForCausalLM``), for text-only rewriting stages.

Set ``PIXSCRIBE_TINY_DIR=/some/dir`` to reuse built models across test runs (builders are
idempotent); by default they are built under pytest's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    env = os.environ.get("PIXSCRIBE_TINY_DIR")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_vlms(tiny_models_root) -> dict[str, Path]:
    from pixscribe.testing.tiny import build_tiny_vlms

    return build_tiny_vlms(tiny_models_root)


@pytest.fixture(scope="session")
def tiny_llm(tiny_models_root) -> Path:
    from pixscribe.testing.tiny import build_tiny_text_llm

    return build_tiny_text_llm(tiny_models_root)
