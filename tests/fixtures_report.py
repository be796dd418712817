"""Output directories for report/export tests: sample rows in the documented shapes of the
methods being built (textualize, panoptic, region), an error row and a hostile row, over
real photos, written with the engine's own part writer."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pixscribe.experts import rle
from pixscribe.io import writers
from pixscribe.testing import write_sample_photos

HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def rect_rle(h: int, w: int, box: tuple[int, int, int, int]) -> dict[str, Any]:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    return rle.encode(m)


def write_output(out: Path, rows: list[dict[str, Any]], run: dict[str, Any] | None = None, fmt: str = "parquet",
                 part: int = 0, roots: list[Path] | None = None) -> Path:
    """``rows`` as ``out/part-0000N.<fmt>`` through :class:`pixscribe.io.writers.PartWriter`, and
    ``_run.json``: ``run`` with the path guard a caption run over ``roots`` records (by default
    the folders holding the rows' local sources, as if the run had been given those folders)."""
    table = writers.rows_to_table(rows)
    w = writers.PartWriter(out / f"part-{part:05d}{writers.EXTENSIONS[fmt]}", fmt, table.schema)
    w.write(table)
    w.commit()
    if roots is None:
        roots = sorted({Path(r["source"]).parent for r in rows if str(r.get("source") or "").startswith("/")})
    had = json.loads((out / "_run.json").read_text()) if (out / "_run.json").exists() else {}  # an earlier part's
    known = (had.get("input_guard") or {}).get("roots", [])
    guard = {"roots": sorted(set(known) | {os.path.realpath(r) for r in roots}), "allow_any_path": False}
    (out / "_run.json").write_text(json.dumps({**had, **(run or {}), "input_guard": guard}))
    return out


def _base(path: Path, method: str, w: int, h: int, **cols: Any) -> dict[str, Any]:
    data = path.read_bytes()
    stages = {method: {"fp": "f00d" + method[:4], "status": "ok", "fields": ["caption"], "seconds": 0.5}}
    prov = {"caption": {"stage": method, "model": "tiny/model", "prompt_sha": "abc123", "seconds": 0.5, "reused": False}}
    row = {"id": path.stem, "source": str(path), "width": w, "height": h, "sha256": hashlib.sha256(data).hexdigest(),
           "method": method, "caption": None, "model": "tiny/model", "prompt_sha": "abc123", "seconds": 0.5,
           "error": None, "provenance": json.dumps(prov), "stages": json.dumps(stages)}
    row.update(cols)
    return row


def sample_rows(photos: Path) -> list[dict[str, Any]]:
    """One row per documented shape (see tests/report/test_report.py for what each must show)."""
    p = {f.stem: f for f in photos.iterdir()}
    j = json.dumps
    textualize = _base(
        p["astronaut"], "textualize", 512, 512,
        description="An astronaut in a white suit holds a flag beside a dog on the moon.",
        objects=j([{"phrase": "astronaut", "verdict": "grounded", "score": 0.87, "box": [150, 40, 380, 500],
                    "detector": "grounding_dino"},
                   {"phrase": "flag", "verdict": "grounded", "score": 0.61, "box": [20, 10, 140, 200], "detector": "owlv2"},
                   {"phrase": "dog", "verdict": "hallucinated", "score": 0.04, "box": None, "detector": "owlv2"}]),
        hallucinations=j(["dog"]),
        regions=j([{"caption": "the white spacesuit", "box": [150, 150, 380, 500],
                    "mask": rect_rle(512, 512, (150, 150, 380, 500)), "nearness": 0.82, "size_pct": 30.7}]),
        caption="An astronaut in a white NASA suit holds an American flag on the moon.", textualize_skipped=None)
    skipped = _base(p["coffee"], "textualize", 600, 400, description="A cup of coffee.", objects="[]",
                    hallucinations="[]", regions="[]", caption="A cup of coffee.", textualize_skipped="no objects detected")
    panoptic = _base(
        p["chelsea"], "panoptic", 451, 300,
        entities=j([{"tag": "cat", "box": [0.2, 0.1, 0.8, 0.95], "box_px": [90, 30, 361, 285], "stage": "entities"},
                    {"tag": "blanket", "box": [0.0, 0.6, 1.0, 1.0], "box_px": [0, 180, 451, 300], "stage": "entities"}]),
        caption="A tabby cat [[0.200, 0.100, 0.800, 0.950]] lies on a blanket [[0.000, 0.600, 1.000, 1.000]].",
        caption_plain="A tabby cat lies on a blanket.")
    region = _base(p["rocket"], "region", 427, 640, task="attribute", attribute="color", caption="white and grey",
                   region=j({"mask": rect_rle(640, 427, (180, 100, 260, 560)), "box": [180, 100, 260, 560], "area": 36800}))
    regions = _base(p["motorcycle"], "region", 640, 480, caption=None, regions=j([
        {"region_id": "m1", "mask": rect_rle(480, 640, (100, 200, 500, 420)), "box": [100, 200, 500, 420],
         "box_norm": [0.15625, 0.41667, 0.78125, 0.875], "area": 88000, "task": "dense", "caption": "a red motorcycle"},
        {"region_id": "m2", "mask": None, "box": [0, 0, 640, 120], "box_norm": [0, 0, 1, 0.25], "area": 76800,
         "task": "dense", "caption": "a brick wall"}]))
    error = {"id": "missing-1", "source": str(photos / "missing.jpg"), "width": None, "height": None, "sha256": None,
             "method": "recap", "caption": None, "model": "tiny/model", "prompt_sha": None, "seconds": None,
             "error": "decode: /photos/missing.jpg: truncated image (JPEG data ends early)", "provenance": None,
             "stages": None}
    hostile = _base(p["page"], "recap", 384, 191, caption=HOSTILE, org_caption='</p><b id="bold">bold</b>',
                    re_caption=HOSTILE)
    hostile["id"] = '"><svg onload="window.__pwned=3">'
    return [textualize, skipped, panoptic, region, regions, error, hostile]


SAMPLE_RUN = {"fingerprint": "1234abcd", "pixscribe_version": "0.1.0", "models": [
    {"role": "vlm", "model": "tiny/model", "backend": "transformers", "revision": None, "dtype": "auto", "device": "cpu"}],
    "method": {"method": "textualize", "caption_field": "caption", "stages": [
        {"stage": "textualize", "fingerprint": "f00dtext", "model": "tiny/model", "prompt": "Describe. " + HOSTILE,
         "prompt_sha": "abc123"}]},
    "config": {"method": "textualize", "inputs": ["photos"]}}


@pytest.fixture()
def sample_out(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    write_sample_photos(photos)
    return write_output(tmp_path / "out", sample_rows(photos), SAMPLE_RUN)
