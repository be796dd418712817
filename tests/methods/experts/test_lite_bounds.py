"""Issue #9, the experts' part: every expert bounds its work by the image's size and aspect,
and an allocation failure in an expert is that expert's error on that row, never the run's end.

The hostile files of issue #2 go through ``--profile lite`` and through every expert (the
transformers ones on tiny random-weight models of their real architectures) in a real
subprocess whose peak memory is measured (``ru_maxrss`` of a wrapper's only child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fixtures_engine import make_hostile_files
from pixscribe.experts.base import Expert, ImageOutOfBounds, check_bounds
from pixscribe.methods.experts import ExpertsStage
from pixscribe.record import Record
from pixscribe.testing import sample_photo

# Measured on this 2-core machine (2026-12): 507 MB for --profile lite and 869 MB with every
# expert. Before the guards, the 1x4000 PNG alone made OCR ask for a 9 GiB array.
PEAK_LIMIT_MB = 2000

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(p.returncode)\n"
)


def run_measured(*args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float]:
    """``pixscribe *args`` in a child of a fresh wrapper: (process, peak RSS of the child in MB)."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "pixscribe", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    peak = [ln for ln in p.stderr.splitlines() if ln.startswith("PEAK_KB ")]
    assert peak, p.stderr[-3000:]
    return p, int(peak[-1].split()[1]) / 1024


def _rows(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out).to_pylist()
    names = [r["source"].rsplit("/", 1)[-1] for r in rows]
    assert len(names) == len(set(names)), names  # one row each, none twice
    return dict(zip(names, rows))


def _check_rows(rows: dict[str, dict], files: dict[str, Path], experts: list[str]) -> None:
    assert set(rows) == {p.name for p in files.values()}
    for key in ("truncated", "zero", "text", "bomb"):  # undecodable: one error row each
        assert rows[files[key].name]["error"], key
    for key in ("cmyk", "png16", "palette", "gif", "exif", "thin"):  # decodable: a valid row with every column
        r = rows[files[key].name]
        assert r["error"] is None, (key, r["error"])
        for name in experts:
            json.loads(r[f"expert_{name}"])


def test_hostile_files_through_profile_lite(tmp_path):
    files = make_hostile_files(tmp_path / "hostile")
    out = tmp_path / "out"
    p, peak_mb = run_measured("caption", str(tmp_path / "hostile"), "-o", str(out), "--profile", "lite", "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    print(f"peak RSS, --profile lite on the hostile files: {peak_mb:.0f} MB")
    assert peak_mb < PEAK_LIMIT_MB
    rows = _rows(out)
    _check_rows(rows, files, ["stats", "faces", "ocr", "nsfw"])
    thin = rows["thin.png"]
    assert json.loads(thin["expert_ocr"])["bounds"]["action"] == "skip"
    assert json.loads(thin["expert_faces"])["bounds"]["action"] == "skip"
    assert json.loads(thin["expert_nsfw"])["bounds"]["action"] == "skip"
    assert "image of 1×4000, mostly green." in thin["description"]


@pytest.mark.slow
def test_hostile_files_through_every_expert(tmp_path, tiny_experts):
    """Every registered expert, the transformers ones on tiny models: a thin strip is skipped by
    each, in its own column; the others run; the run exits 0 with bounded memory."""
    from pixscribe.experts import REGISTRY

    files = make_hostile_files(tmp_path / "hostile")
    models = {"dense": "florence2", "sam": "sam", "depth": "depth_anything", "grounding_dino": "grounding_dino",
              "owlv2": "owlv2"}
    cfg = {"expert_models": {k: str(tiny_experts[v]) for k, v in models.items()},
           "expert_options": {"dense": {"max_new_tokens": 8, "num_beams": 1}}, "device": "cpu",
           "queries": ["a face", "a rocket"]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    experts = sorted(REGISTRY)
    out = tmp_path / "out"
    p, peak_mb = run_measured("caption", str(tmp_path / "hostile"), "-o", str(out), "--method", "experts",
                              "--experts", ",".join(experts),
                              "--config", str(tmp_path / "run.yaml"), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    print(f"peak RSS, every expert on the hostile files: {peak_mb:.0f} MB")
    assert peak_mb < PEAK_LIMIT_MB
    rows = _rows(out)
    _check_rows(rows, files, experts)
    thin = rows["thin.png"]
    for name in ("dense", "sam", "depth", "grounding_dino", "owlv2"):
        value = json.loads(thin[f"expert_{name}"])
        assert isinstance(value, dict) and value["error"].startswith(f"{name}: skipped"), (name, value)
    exif = rows["exif_rotated.jpg"]
    assert all("error" not in (json.loads(exif[f"expert_{n}"]) if exif[f"expert_{n}"].startswith("{") else {})
               for n in experts)


def test_check_bounds_says_what_it_skips():
    check_bounds([Image.new("RGB", (640, 40))], "depth")  # 16:1 is fine
    with pytest.raises(ImageOutOfBounds, match=r"skipped: depth .* this one is 1x4000"):
        check_bounds([Image.new("RGB", (64, 64)), Image.new("RGB", (1, 4000))], "depth")


class _Greedy(Expert):
    """Fails to allocate on one image, as a real expert would on an oversized array."""

    name = "greedy"

    def run(self, images, **q):
        if any(im.height > 450 for im in images):
            raise MemoryError("Unable to allocate 9.04 GiB for an array with shape (1104000, 736, 3)")
        return [{"ok": True} for _ in images]


def test_allocation_failure_is_that_experts_error_on_that_row():
    from pixscribe.experts.stats import ImageStatsExpert

    recs = []
    for n in ("chelsea", "astronaut"):  # 300 px and 512 px high
        img = sample_photo(n)
        r = Record(source=n, id=n)
        r.image, r.width, r.height = img, img.width, img.height
        recs.append(r)
    stage = ExpertsStage([ImageStatsExpert(), _Greedy()], describe=True)
    chelsea, astro = stage(recs)
    assert json.loads(chelsea.fields["expert_greedy"]) == {"ok": True}
    assert json.loads(astro.fields["expert_greedy"])["error"].startswith("greedy: Unable to allocate 9.04 GiB")
    assert chelsea.ok and astro.ok and "mostly" in astro.fields["description"]
    assert stage.summary()["greedy_failures"] == 1
