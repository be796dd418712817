"""Every stage fingerprint of every method for existing configurations stays byte-identical
(issue 24: moving code must not make an existing output folder refuse to resume). The golden
file was written by the code before the redesign (tests/golden/fingerprint_configs.py).

Changed on purpose since, each for a change of output (so an older run is refused, naming it,
instead of resuming into mixed rows): the experts configurations with faces (MTCNN's mirror
check, ``mirror_check``) or image statistics (``blur_rule`` 2): experts, experts_full,
experts_full_prompt, experts_some, lite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN))

from fingerprint_configs import configs, fingerprints  # noqa: E402


def test_every_fingerprint_of_every_configuration_is_unchanged(tmp_path):
    want = json.loads((GOLDEN / "fingerprints.json").read_text())
    assert set(want) == set(configs("d")), "a configuration was added without its golden value"
    got = fingerprints(tmp_path)
    assert {k: v for k, v in got.items() if v != want[k]} == {}
