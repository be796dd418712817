"""Focal-crop geometry on hand cases, mark placement, and outlines that leave the region untouched."""

import numpy as np
import pytest
from PIL import Image

from pixscribe.methods.region.boxtext import convention_for, format_box, read_box, smart_resize
from pixscribe.methods.region.draw import OUTLINE_RGB, draw_outline, outline_width
from pixscribe.methods.region.geometry import focal_box, label_point
from pixscribe.methods.region.parse import parse_region
from pixscribe.methods.region.prompts import PromptOptions, build_prompts


@pytest.mark.parametrize(
    "box, expect",
    [
        # small region near the top-left corner: grown to 48x48 around its centre (6, 6) -> (-18, -18, 30, 30),
        # expanded by 48 on every side -> (-66, -66, 78, 78), clipped to the image
        ((2, 3, 10, 9), (0, 0, 78, 78)),
        # the same near the bottom-right corner of 640x480
        ((630, 471, 638, 477), (562, 402, 640, 480)),
        # larger than half the image: expanded by its own size it covers everything
        ((100, 50, 500, 400), (0, 0, 640, 480)),
        # 1-px region: grown to 48 (23 left, 24 right), expanded by 48 -> a 144 px square
        ((320, 240, 321, 241), (249, 169, 393, 313)),
        # fractional box is rounded outward first: (10.4, 20.6, 70.2, 80.9) -> (10, 20, 71, 81), 61 px each way
        ((10.4, 20.6, 70.2, 80.9), (0, 0, 132, 142)),
        # wide, flat box: grown only in height (8 -> 48), then 300 wide and 48 high on every side
        ((170, 236, 470, 244), (0, 168, 640, 312)),
    ],
)
def test_focal_box_hand_cases(box, expect):
    assert focal_box(box, 640, 480) == expect


def test_focal_box_options():
    assert focal_box((320, 240, 321, 241), 640, 480, min_size=1, context=0.0) == (320, 240, 321, 241)
    assert focal_box((300, 200, 340, 240), 640, 480, min_size=10, context=0.5) == (280, 180, 360, 260)
    assert focal_box((0, 0, 5, 5), 20, 10) == (0, 0, 20, 10)  # an image smaller than 48 px: the whole of it


def test_focal_prompt_crop_is_the_focal_box():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    r = parse_region({"box": [2, 3, 10, 9]}, 640, 480)
    (p,) = build_prompts("focal", img, [r], PromptOptions(outline=False, crop_min_side=0))
    full, crop = p.images
    assert full is img and crop.size == (78, 78)
    assert np.array_equal(np.asarray(crop), np.asarray(img)[0:78, 0:78])
    (p,) = build_prompts("focal", img, [r], PromptOptions(outline=False))  # upscaled: longer side 384
    assert p.images[1].size == (384, 384)


def _ring_mask(h=80, w=120):
    m = np.zeros((h, w), dtype=bool)
    m[10:70, 10:110] = True
    m[25:55, 40:80] = False  # a hole in the middle: the mark must not go there
    return m


def test_label_point_is_inside_the_region():
    m = _ring_mask()
    r = parse_region({"mask": m}, 120, 80)
    x, y = label_point(r.mask, r.box)
    assert m[int(y), int(x)]
    l_shape = np.zeros((300, 300), dtype=bool)
    l_shape[0:300, 0:60] = True
    l_shape[240:300, 0:300] = True
    r = parse_region({"mask": l_shape}, 300, 300)
    x, y = label_point(r.mask, r.box)
    assert l_shape[int(y), int(x)]
    # as deep as an L of 60 px bars allows: 30 px (less the 96 px working grid's rounding) from every edge
    assert l_shape[int(y) - 25 : int(y) + 25, int(x) - 25 : int(x) + 25].all()


def test_outline_is_outside_the_region_and_around_it():
    arr = np.zeros((80, 120, 3), dtype=np.uint8)
    arr[10:70, 10:110] = (10, 200, 10)
    m = _ring_mask()
    r = parse_region({"mask": m}, 120, 80)
    before = arr.copy()
    draw_outline(arr, r, 3)
    assert np.array_equal(arr[m], before[m])  # every region pixel unchanged
    ring = (arr == OUTLINE_RGB).all(axis=2)
    assert ring[9, 50] and ring[7, 50] and not ring[6, 50]  # 3 px above the top edge
    assert ring[40, 41] and not ring[40, 45]  # inside the hole, along its edge
    assert not ring[0:5].any()
    one_px = parse_region({"box": [60, 40, 61, 41]}, 120, 80)
    a2 = np.zeros((80, 120, 3), dtype=np.uint8)
    draw_outline(a2, one_px, 2)
    ring2 = (a2 == OUTLINE_RGB).all(axis=2)
    assert not ring2[40, 60] and ring2.sum() == 5 * 5 - 1
    assert outline_width(400, 300) == 2 and outline_width(4000, 3000) == 16


def test_qwen25_smart_resize_and_box_conventions():
    assert smart_resize(480, 640) == (476, 644)  # round(480/28)=17, round(640/28)=23
    assert smart_resize(20, 20) == (56, 56)  # min_pixels
    h, w = smart_resize(10000, 10000)
    assert h * w <= 28 * 28 * 16384 and h % 28 == 0 and w % 28 == 0
    box = (64.0, 48.0, 320.0, 240.0)
    assert format_box(box, 640, 480, "norm1000").text == "[100, 100, 500, 500]"
    assert format_box(box, 640, 480, "norm1000_yx").text == "[100, 100, 500, 500]"
    assert format_box((64, 0, 320, 240), 640, 480, "norm1000_yx").values == (0, 100, 500, 500)
    px = format_box(box, 640, 480, "pixels")
    assert px.frame == (644, 476) and px.values == (64, 48, 322, 238)
    sq = format_box(box, 640, 480, "norm1_square")  # padded to 640x640, 80 px above
    assert sq.text == "[0.10, 0.20, 0.50, 0.50]"
    for conv in ("pixels", "norm1000", "norm1000_yx", "norm1_square"):
        bt = format_box(box, 640, 480, conv)
        assert read_box(bt.values, conv, 640, 480) == pytest.approx(box, abs=2.0)


@pytest.mark.parametrize(
    "model, conv",
    [
        ("Qwen/Qwen2.5-VL-7B-Instruct", "pixels"),
        ("Qwen/Qwen3-VL-8B-Instruct", "norm1000"),
        ("Qwen/Qwen2-VL-7B-Instruct", "norm1000"),
        ("OpenGVLab/InternVL3-8B", "norm1000"),
        ("gemini-2.5-flash", "norm1000_yx"),
        ("llava-hf/llava-1.5-7b-hf", "norm1_square"),
        ("mucai/vip-llava-7b", "norm1_square"),
        ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", None),  # no known family: no default, the run asks for it
        ("my-served-vlm", None),
    ],
)
def test_convention_for_model_families(model, conv):
    assert convention_for(model) == conv


def test_convention_from_config_model_type_wins():
    assert convention_for("models/tiny", "qwen2_5_vl") == "pixels"
    assert convention_for("models/tiny", "qwen3_vl") == "norm1000"
    assert convention_for(None, "Qwen2_5_VLForConditionalGeneration") == "pixels"  # an architecture name reads too
