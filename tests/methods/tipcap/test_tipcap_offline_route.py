"""docs/tipcap.md's offline route, as a user runs it: build the tiny CLIP and GPT-2 from the shell,
train TIPCap on a text corpus, caption photos with --method tipcap; and the synthetic bench's
reference points, which frame its numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_tipcap import WORLD

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_the_documented_offline_route(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    from pixscribe.testing import write_sample_photos

    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(WORLD) + "\n")
    p = _run("-m", "pixscribe.testing.tiny_tipcap", str(tmp_path / "models"), "--corpus", str(corpus))
    assert "tiny CLIP:" in p.stdout and (tmp_path / "models" / "gpt2" / "model.safetensors").is_file()
    _run("-m", "pixscribe", "tipcap", "train", "--text", str(corpus), "-o", str(tmp_path / "tc"),
         "--clip", str(tmp_path / "models" / "clip"), "--lm", str(tmp_path / "models" / "gpt2"),
         "--steps", "5", "--batch-size", "8", "--warmup-steps", "1", "--no-progress")
    write_sample_photos(tmp_path / "photos", ("chelsea", "coffee"))
    _run("-m", "pixscribe", "caption", str(tmp_path / "photos"), "-o", str(tmp_path / "out"), "--method", "tipcap",
         "--tipcap-model", str(tmp_path / "tc"), "--no-progress")
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert len(rows) == 2 and all(r["error"] is None and isinstance(r["tipcap_caption"], str) for r in rows)


def test_tipcap_bench_prints_its_reference_points():
    p = _run(str(ROOT / "bench" / "tipcap_gap.py"), "--reference-only", timeout=300)
    lines = {ln.split("  ")[0]: ln.split()[-6:] for ln in p.stdout.splitlines() if "  " in ln}
    exact = [float(x) for x in lines["exactly right (one of its own references)"]]
    wrong = [float(x) for x in lines["one slot wrong (the first colour)"]]
    other = [float(x) for x in lines["another scene's caption"]]
    assert exact[:3] == [1.0, 1.0, 1.0] and 6.8 <= exact[3] < exact[5] <= 8.2  # CIDEr-D varies with the template
    assert 0.6 < wrong[0] <= wrong[2] < 0.85 and 4.5 < wrong[3] <= wrong[5] < 5.6
    assert other[2] < 0.25 and other[5] < 0.5
    assert "not comparable with COCO" in p.stdout
