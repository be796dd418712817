"""``pixscribe export --mix-original P --original-column COL`` with a column the output does not
have (a typo) stops before writing anything, naming the column and the columns there are
(issue 23, point 13): it used to mix in 0 % originals without a word."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fixtures_plugin import pixscribe


def test_a_misspelled_original_column_stops_the_export(plugin_env, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(d / f"p{i}.png")
    (d / "t.jsonl").write_text("".join(json.dumps({"key": f"k{i}", "path": f"p{i}.png", "caption": f"alt {i}"}) + "\n"
                                       for i in range(6)))
    out = tmp_path / "out"
    r = pixscribe(plugin_env, "caption", str(d / "t.jsonl"), "-o", str(out), "--method", "scripted", "--no-progress")
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "mixed.jsonl"
    r = pixscribe(plugin_env, "export", str(out), "--to", "jsonl", str(dest), "--mix-original", "1",
                  "--original-column", "org_captoin")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "--original-column 'org_captoin'" in r.stderr and "has no such column" in r.stderr
    assert "org_caption" in r.stderr and not dest.exists()
    r = pixscribe(plugin_env, "export", str(out), "--to", "jsonl", str(dest), "--mix-original", "1")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert len(rows) == 6 and all(x["text"] == x["org_caption"] and x["text_source"] == "original" for x in rows)
