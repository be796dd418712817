"""Shared test setup. Fixtures live in tests/fixtures_*.py (one file per area) and are
collected here, so engineers can add fixtures without editing this file."""

import importlib
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_here = pathlib.Path(__file__).parent
if str(_here) not in sys.path:
    sys.path.insert(0, str(_here))
for _p in sorted(_here.glob("fixtures_*.py")):
    _mod = importlib.import_module(_p.stem)
    globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("_")})
