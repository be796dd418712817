"""After ``--until``, a plain rerun of the whole method is refused with a line that says what to
do: ``--overwrite`` adds the remaining stages and reuses the ones done (issue 23, point 13)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fixtures_plugin import pixscribe


def test_a_plain_rerun_after_until_says_overwrite_adds_the_remaining_stages(plugin_env, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 12, 3), 60 * i, np.uint8)).save(d / f"p{i}.png")
    out = tmp_path / "out"
    args = ("caption", str(d), "-o", str(out), "--method", "scripted", "--no-progress")
    assert pixscribe(plugin_env, *args, "--until", "see").returncode == 0
    r = pixscribe(plugin_env, *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "holds the stages see of method 'scripted' (a run with --until see)" in r.stderr
    assert "Rerun with --overwrite to add the stages rewrite" in r.stderr and "reused" in r.stderr
    assert pixscribe(plugin_env, *args, "--until", "see").returncode == 0  # resumes that run as it was
    r = pixscribe(plugin_env, *args, "--overwrite")
    assert r.returncode == 0, r.stderr
    s = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert s["stages"]["see"]["reused"] == 3 and s["stages"]["rewrite"]["computed"] == 3
    r = pixscribe(plugin_env, *args, "-S", "see.max_new_tokens=4")  # another change too: the general message
    assert r.returncode == 2 and "different configuration" in r.stderr and "see.max_new_tokens: 8 -> 4" in r.stderr
