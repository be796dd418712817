"""--method tipcap through the CLI: a tiny TIPCap trained here captions real photos, resumes,
and fuses a per-row prompt column into the caption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from fixtures_tipcap import ANIMALS


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixscribe", *args], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_tipcap_method_writes_rows_resumes_and_reads_prompts(tipcap_trained, tmp_path):
    from pixscribe.testing import write_sample_photos

    photos = tmp_path / "photos"
    write_sample_photos(photos, ("chelsea", "rocket", "coffee", "astronaut"))
    out = tmp_path / "out"
    p = _cli("caption", str(photos), "-o", str(out), "--tipcap-model", str(tipcap_trained), "--limit", "2",
             "--batch-size", "2", "--no-progress")
    assert p.returncode == 0, p.stderr
    p = _cli("caption", str(photos), "-o", str(out), "--tipcap-model", str(tipcap_trained), "--batch-size", "2",
             "--no-progress")
    assert p.returncode == 0, p.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert all(r["method"] == "tipcap" and r["caption"] == r["tipcap_caption"] and r["caption"] for r in rows)
    run = json.loads((out / "_run.json").read_text())
    assert run["method"]["stages"][0]["model"]["tipcap"]  # the trained files' hash, not the folder name
    s = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert s["rows_written"] == 2 and s["rows_skipped"] == 2

    # a prompt column: rows prompted with an animal get a caption steered to it
    table = tmp_path / "t.jsonl"
    files = sorted(str(f) for f in photos.glob("*.*"))
    table.write_text("".join(json.dumps({"path": f, "tags": json.dumps([a, "grass"])}) + "\n"
                             for f, a in zip(files, ANIMALS)))
    out2 = tmp_path / "out2"
    p = _cli("caption", str(table), "-o", str(out2), "--tipcap-model", str(tipcap_trained), "--prompt-column",
             "tags", "--no-progress")
    assert p.returncode == 0, p.stderr
    prompted = {Path(r["source"]).name: r["tipcap_caption"] for r in pq.read_table(out2).to_pylist()}
    plain = {Path(r["source"]).name: r["tipcap_caption"] for r in rows}
    assert prompted != plain
    assert sum(a in prompted[Path(f).name] for f, a in zip(files, ANIMALS)) >= 2


def test_tipcap_method_needs_a_model(tmp_path, photo_dir):
    p = _cli("caption", str(photo_dir), "-o", str(tmp_path / "o"), "--method", "tipcap")
    assert p.returncode == 2 and "--tipcap-model DIR" in p.stderr and not (tmp_path / "o").exists()
    p = _cli("caption", str(photo_dir), "-o", str(tmp_path / "o"), "--tipcap-model", str(tmp_path))
    assert p.returncode == 2 and "not a TIPCap model directory" in p.stderr
