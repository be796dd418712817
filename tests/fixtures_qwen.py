"""Session fixture: the tiny Qwen-VL models (Qwen3-VL, the default VLM's architecture, and
Qwen2.5-VL), built once per test run. Their real processors need torchvision: without it
the tests that use this fixture are skipped, saying so."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen_vlms(tiny_models_root) -> dict[str, Path]:
    from pixscribe.testing.tiny import build_tiny_qwen_vlms, torchvision_missing

    reason = torchvision_missing()
    if reason:
        pytest.skip(reason)
    return build_tiny_qwen_vlms(tiny_models_root)
