"""Hostile COCO polygons: checked and bounded before pycocotools sees them, and pycocotools
itself run in a child process, so a crash in C is one region's error and the run goes on.

The CLI test feeds the polygon that segfaulted ``caption --method region`` (exit -11, no rows,
every rerun the same) through the real command, the real pycocotools and a tiny real VLM."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_region_cli import _caption, _written
from fixtures_region import ColourBackend
from test_region_method import image_rows, run, write_scene

from pixscribe.native import Isolated, NativeCrash
from pixscribe.methods.region import polygons
from pixscribe.methods.region.masks import decode_mask
from pixscribe.methods.region.types import RegionError

mask_api = pytest.importorskip("pycocotools.mask")
W, H = 40, 30
HUGE = [[0, 0, 1e9, 0, 1e9, 1e9]]  # segfaults pycocotools.mask.frPyObjects in the calling process


def _coco(rings, w=W, h=H):
    return mask_api.decode(mask_api.merge(mask_api.frPyObjects(rings, h, w))).astype(bool)


def test_a_polygon_overhanging_the_image_is_rasterised_as_pycocotools_does():
    rings = [[-30.0, -20.0, 70.5, 5.0, 10.0, 55.0], [2, 2, 6, 2, 4, 9.5]]  # up to the image's size outside
    got = decode_mask(rings, W, H)
    assert got.sum() > 200 and (got == _coco(rings)).all()


@pytest.mark.parametrize("spec, reason", [
    (HUGE, r"vertex \(1e\+09, 0\) lies more than the image's own size outside the 40x30 image"),
    ([[1, 1, 5, 1, 5, -31]], r"vertex \(5, -31\)"),
    ([[1, 1, 5, 1, 5, 10 ** 400]], "must be numbers"),
    ([[1, 1, 5, 1, 5, float("nan")]], "non-finite"),
    # 36,000 zigzags across the image: each vertex in bounds, 1.4M pixels of outline
    ([[float(v) for i in range(36_000) for v in (0 if i % 2 else 39, i % 30)]], "outline is over 1,000,000 pixels"),
])
def test_polygons_outside_the_bounds_are_region_errors(spec, reason):
    with pytest.raises(RegionError, match=reason):
        decode_mask(spec, W, H)


def test_a_crash_inside_pycocotools_is_one_region_error_and_the_next_polygon_works():
    """Past the checks (called directly), the real pycocotools segfaults in the child only."""
    ok = [[10.5, 3.2, 30.1, 8.9, 22.0, 27.7]]
    assert (decode_mask(ok, W, H) == _coco(ok)).all()
    before = polygons._isolated().started
    with pytest.raises(RegionError, match=r"pycocotools \(COCO polygon rasteriser\) crashed \(signal SIG(SEGV|BUS|ABRT)\)"):
        polygons.rasterise(HUGE, W, H)
    assert (decode_mask(ok, W, H) == _coco(ok)).all()  # a fresh child
    assert polygons._isolated().started == before + 1


def test_a_hung_child_is_killed_after_its_timeout():
    slow = Isolated("pixscribe.native.coco:polygons_rle", what="pycocotools", timeout=0.2)
    ring = [float(v) for i in range(1_000) for v in (0 if i % 2 else 3999, 4 * i)]  # ~4M px of outline: seconds
    try:
        with pytest.raises(NativeCrash, match=r"pycocotools did not answer within 0.2 s \(killed\)"):
            slow({"rings": [ring], "h": 4000, "w": 4000})
        slow.timeout = 120  # (the answer below must not depend on the machine's load)
        assert slow({"rings": [[1, 1, 5, 1, 5, 5]], "h": 8, "w": 8})  # and the next request gets a new child
        assert slow.started == 2
    finally:
        slow.close()


def test_the_cli_run_goes_on_past_a_1e9_polygon(tiny_vlms, tmp_path):
    """Before: exit -11 with no rows and no message. Now: that region is an error, every other
    one is captioned, and a rerun writes nothing twice."""
    R, B = write_scene(tmp_path)
    rows = [{"id": "s", "path": "scene.png", "region_id": "red", "mask": R["mask"]},
            {"id": "s", "path": "scene.png", "region_id": "huge", "segmentation": HUGE},
            {"id": "s", "path": "scene.png", "region_id": "blue", "mask": B["mask"]}]
    src = tmp_path / "regions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    box = ("--method", "region", "--region-prompt", "box", "-S", "region.box_convention=norm1000")
    p = _caption(src, out, tiny_vlms["llava"], *box)
    assert p.returncode == 0 and _written(out) == 3, p.stderr
    _caption(src, out, tiny_vlms["llava"], *box)
    assert _written(out) == 0
    got = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(got) == ["blue", "huge", "red"]
    assert got["huge"]["error"].startswith("region: polygon vertex (1e+09, 0) lies more than")
    assert all(got[k]["error"] is None and got[k]["caption"] for k in ("red", "blue"))


def test_one_row_of_many_regions_keeps_the_others(tmp_path):
    R, B = write_scene(tmp_path)
    src = image_rows(tmp_path, [R, {"id": "huge", "mask": HUGE}, B])
    s, (row,), _ = run([src], tmp_path / "out", ColourBackend(),
                       stages={"prompt_mode": "box", "box_convention": "norm1000"})
    assert s.error_rows == 0 and [r["caption"] for r in row["regions"]] == ["red", None, "blue"]
    assert "lies more than the image's own size outside" in row["regions"][1]["error"]


def test_a_child_that_cannot_start_says_so():
    broken = Isolated("no_such_module_here:f", what="demo")
    with pytest.raises(NativeCrash, match=r"^demo could not start \(exit code 1\)$"):
        broken({})
