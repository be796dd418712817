"""Shared test setup. Tests live in folders per area (engine, io, backends, experts,
methods/<name>, metrics, report, cli, project); fixtures live in tests/fixtures_*.py (one file
per area, importable by name from any folder: this folder is put on sys.path) and are loaded
as ordinary pytest plugins, so engineers add fixtures without editing this file."""

import os
import pathlib
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_here = pathlib.Path(__file__).parent
# tests/ and each area's folder: some test modules share helpers by name (test_e2e_cli.cli,
# test_region_method.write_scene, test_exactly_once.wait_for) across areas
if str(_here) not in sys.path:
    sys.path.insert(0, str(_here))
for _d in sorted({p.parent for p in _here.rglob("test_*.py")} - {_here}):
    if str(_d) not in sys.path:
        sys.path.append(str(_d))
pytest_plugins = [p.stem for p in sorted(_here.glob("fixtures_*.py"))]
pytest.register_assert_rewrite(*pytest_plugins)  # one may import another before pytest loads it
