"""Methods are plugins: a package installed with pip adds a method through the
``pixscribe.methods`` entry-point group, and the `pixscribe` command runs it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow.parquet as pq

from fixtures_plugin import pixscribe


def test_an_installed_plugin_method_runs_from_the_cli(plugin_env, photo_dir, tmp_path):
    exe = shutil.which("pixscribe")
    assert exe, "the pixscribe command is installed by pip install -e ."
    out = tmp_path / "out"
    p = subprocess.run([exe, "caption", str(photo_dir), "-o", str(out), "--method", "scripted", "--no-progress"],
                       capture_output=True, text=True, env=plugin_env, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6 and {r["method"] for r in rows} == {"scripted"}
    assert all(r["seen"].split(" mean ")[0] == f"{r['width']}x{r['height']}" for r in rows)
    assert all(r["caption"] == r["final"] and r["final"].startswith("re ") for r in rows)
    run = json.loads((out / "_run.json").read_text())
    assert [s["stage"] for s in run["method"]["stages"]] == ["see", "rewrite"]
    # a method that is not installed is an error naming the ones there are, scripted included
    p = pixscribe(plugin_env, "caption", str(photo_dir), "-o", str(tmp_path / "x"), "--method", "nope")
    assert p.returncode == 2 and "unknown method 'nope'" in p.stderr and "scripted" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "x").exists()
