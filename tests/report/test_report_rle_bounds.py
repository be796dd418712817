"""The report draws masks from input columns: their RLE ``size`` is the input's word, so a
thumbnail is read straight from the runs, never decoded at the size the mask claims.

Before: an 8-character mask claiming 300000x300000 made ``pixscribe report`` ask numpy for
84 GiB and die with a traceback; one of 32768x32768 in 9 characters cost a 1 GiB array."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
from fixtures_report import _base, write_output
from PIL import Image

from pixscribe.experts import rle
from pixscribe.testing import write_sample_photos

DATA_LIMIT = 700 << 20  # the report of two rows needs ~250 MB; a 1 GiB mask array does not fit


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


@pytest.mark.parametrize("side, counts", [
    (300_000, [0, 300_000 ** 2]),  # every pixel in: "0PPQfVjc2", 84 GiB if decoded
    (32_768, [5, 32_768 ** 2 - 10, 5]),  # 1 GiB if decoded
])
def test_a_mask_claiming_a_huge_size_costs_a_thumbnail(tmp_path, side, counts):
    photos = tmp_path / "photos"
    write_sample_photos(photos, ("astronaut",))
    mask = {"size": [side, side], "counts": rle.counts_to_string(counts)}
    assert len(mask["counts"]) <= 17
    row = _base(photos / "astronaut.jpg", "region", 512, 512, region_id="r", caption="a region",
                region=json.dumps({"region_id": "r", "mask": mask, "caption": "a region"}))
    write_output(tmp_path / "out", [row])
    p = subprocess.run([sys.executable, "-m", "pixscribe", "report", str(tmp_path / "out"), "-o", str(tmp_path / "rep")],
                       capture_output=True, text=True, timeout=300, preexec_fn=_bounded)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    (png,) = (tmp_path / "rep" / "masks").glob("*.png")
    with Image.open(png) as im:
        assert max(im.size) <= 384 and im.mode == "P"
        assert (np.asarray(im) != 0).mean() > 0.99  # the mask's pixels, subsampled
