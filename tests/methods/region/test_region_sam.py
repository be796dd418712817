"""Points -> SAM -> mask (and boxes -> SAM) on a tiny random-weight SAM of the real architecture."""

import numpy as np
import pytest
from fixtures_region import SCENE_SIZE, scene

from pixscribe.methods.region.parse import regions_from_columns
from pixscribe.methods.region.sam import boxes_to_masks, points_to_masks
from pixscribe.methods.region.types import mask_box

W, H = SCENE_SIZE


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    from pixscribe.testing.tiny_experts import build_tiny_expert

    return build_tiny_expert("sam", tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def tiny_sam(sam_dir):
    from pixscribe.experts.segmentation import SamExpert

    return SamExpert(str(sam_dir), device="cpu", mask_threshold=-1e9)  # random weights: keep every pixel SAM scores


def test_points_become_masks_in_the_regions_frame(tiny_sam):
    image, _ = scene()
    model_image = image.resize((W // 2, H // 2))  # SAM sees the budget-resized image
    items = [
        {"id": "p1", "points": [[70, 70]]},
        {"id": "p2", "points": [[230, 150], [20, 20]], "labels": [1, 0]},
        {"id": "m", "box": [1, 1, 5, 5]},  # not points: passes through untouched
        {"id": "bad", "points": [[999, 5]]},  # outside: a region error before SAM
    ]
    regions = regions_from_columns({"regions": items}, W, H)
    (out,) = points_to_masks(tiny_sam, [model_image], [regions])
    by = {r.key: r for r in out}
    assert [r.key for r in out] == ["p1", "p2", "m", "bad"]
    for k in ("p1", "p2"):
        r = by[k]
        assert r.ok and r.kind == "points" and r.mask is not None
        assert r.mask.shape == (H, W)  # scaled back to the frame the points were given in
        assert r.box == mask_box(r.mask) and isinstance(r.score, float)
        assert r.area == int(r.mask.sum()) > 0
    assert by["m"] is regions[2] and by["bad"].error and "outside" in by["bad"].error


def test_sam_leaving_a_mask_empty_is_a_region_error(sam_dir):
    from pixscribe.experts.segmentation import SamExpert

    strict = SamExpert(str(sam_dir), device="cpu", mask_threshold=1e9)  # nothing passes this threshold
    image, _ = scene()
    regions = regions_from_columns({"regions": [{"points": [[70, 70]]}, {"box": [40, 40, 100, 100]}]}, W, H)
    (out,) = points_to_masks(strict, [image], [regions])
    assert out[0].error == "region: SAM gave an empty mask for this prompt" and out[1].ok


def test_boxes_become_masks_with_box_to_mask(tiny_sam):
    image, _ = scene()
    regions = regions_from_columns({"regions": [{"box": [40, 40, 100, 100]}, {"points": [[5, 5]]}]}, W, H)
    (out,) = boxes_to_masks(tiny_sam, [image.resize((160, 120))], [regions])
    assert out[0].kind == "box" and out[0].mask is not None and out[0].mask.shape == (H, W)
    assert isinstance(out[0].score, float) and out[1] is regions[1]
    assert np.array_equal(out[0].mask, out[0].pixel_mask())
