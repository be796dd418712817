"""docs/textualize.md's quick offline check, as documented: its shell block (the photos, the YAML
and the caption command) run by bash on the tiny models, with --limit 2. Every stage must run on
every row: with the defaults, the tiny models' replies are cut and the rows fail at `objects`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "textualize.md"


def documented_block() -> str:
    section = DOC.read_text().split("### A quick offline check", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_documented_quick_check_runs_every_stage(tiny_vlms, tiny_experts, tmp_path):
    pytest.importorskip("transformers")
    lines = documented_block().splitlines()
    assert lines[0] == "python -m pixscribe.testing.tiny models/ && python -m pixscribe.testing.tiny_experts experts/"
    # the models the first line builds come from the session's fixtures (the same builders)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "llava").symlink_to(tiny_vlms["llava"], target_is_directory=True)
    (tmp_path / "experts").symlink_to(Path(tiny_experts["sam"]).parent, target_is_directory=True)
    script = "\n".join(lines[1:]).replace("python -c", f"{sys.executable} -c")
    script = script.replace("pixscribe caption", f"{sys.executable} -m pixscribe caption") + " --limit 2 --no-progress\n"
    assert script.count("--limit 2") == 1 and "--extractor nouns" in script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert len(rows) == 2 and all(r["error"] is None for r in rows), [r["error"] for r in rows]
    for r in rows:
        assert json.loads(r["provenance"])["caption"]["stage"] == "rewrite", r["provenance"]
        stages = json.loads(r["stages"])
        assert set(stages) == {"detail", "describe", "objects", "verify", "rewrite"}, stages
        assert {s["status"] for s in stages.values()} == {"ok"}, stages
