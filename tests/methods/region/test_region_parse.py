"""Regions from rows: boxes in every convention, points, both input shapes, JSON text or python
values, and every malformed region an error on that region only."""

import json

import numpy as np
import pytest

from pixscribe.experts import rle
from pixscribe.methods.region.parse import parse_box, parse_region, region_ids, regions_from_columns
from pixscribe.methods.region.types import RegionError

W, H = 200, 100


def test_every_box_format_gives_the_same_pixel_box():
    want = (20.0, 10.0, 60.0, 40.0)
    assert parse_box([20, 10, 60, 40], "xyxy", W, H) == want
    assert parse_box([20, 10, 40, 30], "xywh", W, H) == want
    assert parse_box([0.1, 0.1, 0.3, 0.4], "xyxy_norm", W, H) == pytest.approx(want)
    assert parse_box([0.1, 0.1, 0.2, 0.3], "xywh_norm", W, H) == pytest.approx(want)
    assert parse_box("[20, 10, 60, 40]", "xyxy", W, H) == want  # JSON text
    by_key = [parse_region(v, W, H).box for v in
              ({"box": [20, 10, 60, 40]}, {"bbox": [20, 10, 40, 30]}, {"box_norm": [0.1, 0.1, 0.3, 0.4]},
               {"box": [20, 10, 40, 30], "box_format": "xywh"}, [20, 10, 60, 40])]  # fmt: skip
    assert all(b == pytest.approx(want) for b in by_key)
    assert parse_region([20, 10, 40, 30], W, H, box_format="xywh").box == want


def test_box_slightly_over_the_edge_is_clipped():
    assert parse_box([-0.6, 0, 200.4, 100], "xyxy", W, H) == (0.0, 0.0, 200.0, 100.0)


@pytest.mark.parametrize(
    "box, fmt, reason",
    [
        ([210, 10, 260, 40], "xyxy", "outside the 200x100 image"),
        ([-50, 10, 60, 40], "xyxy", "outside the 200x100 image"),
        ([20, 10, 20, 40], "xyxy", "has no area"),
        ([60, 10, 20, 40], "xyxy", "has no area"),
        ([0.1, 0.1, 1.3, 0.4], "xyxy_norm", r"outside \[0, 1\]"),
        ([1, 2, 3], "xyxy", "4 numbers"),
        (["a", 2, 3, 4], "xyxy", "4 numbers"),
        ([1, 2, float("nan"), 4], "xyxy", "non-finite"),
        ([1, 2, 3, 4], "yxyx", "unknown box_format"),
        ("[1, 2", "xyxy", "not valid JSON"),
    ],
)
def test_bad_boxes(box, fmt, reason):
    with pytest.raises(RegionError, match=reason):
        parse_box(box, fmt, W, H)


def test_points_and_labels():
    r = parse_region({"points": [[30, 40], [35, 45], [90, 90]], "labels": [1, 1, 0]}, W, H)
    assert r.ok and r.kind == "points" and r.labels == [1, 1, 0] and r.mask is None
    assert r.box == (30.0, 40.0, 35.0, 45.0)  # the positive points' box
    assert parse_region({"points": [50, 60]}, W, H).points == [(50.0, 60.0)]
    assert parse_region({"points": "[[50, 60]]", "point_labels": "[1]"}, W, H).labels == [1]
    for bad, why in [({"points": [[250, 10]]}, "outside the 200x100"), ({"points": [[1, 2]], "labels": [1, 0]}, "one 0"),
                     ({"points": [[1, 2]], "labels": [0]}, "every point is labelled 0"), ({"points": []}, "non-empty"),
                     ({"points": [[1, 2]], "labels": [2]}, "one 0")]:  # fmt: skip
        r = parse_region(bad, W, H)
        assert r.error and why in r.error, (bad, r.error)


def _mask(x0, y0, x1, y1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_regions_column_json_text_and_python_values_with_bad_ones_isolated():
    good = rle.encode(_mask(10, 10, 30, 30))
    items = [
        {"id": "a", "mask": good, "attribute": "color"},
        {"id": "b", "mask": rle.encode(np.ones((H, W + 1)))},  # wrong size
        {"id": "c", "mask": rle.encode(np.zeros((H, W)))},  # empty
        {"id": "d", "box": [500, 500, 600, 600]},  # outside
        {"id": "e", "mask": "H4sI%%%"},  # bad base64
        {"id": "f", "bbox": [100, 50, 20, 20], "instruction": "what is written on it?"},
        {"id": "g"},  # no geometry
        "not a region at all",
    ]
    for value in (items, json.dumps(items)):
        rs = regions_from_columns({"regions": value, "id": "img"}, W, H)
        assert [r.key for r in rs][:7] == list("abcdefg")
        assert [r.ok for r in rs] == [True, False, False, False, False, True, False, False]
        assert rs[0].attribute == "color" and rs[0].kind == "mask" and rs[0].box == (10.0, 10.0, 30.0, 30.0)
        assert rs[5].instruction == "what is written on it?" and rs[5].box == (100.0, 50.0, 120.0, 70.0)
        errors = [r.error for r in rs]
        assert "mask is 201x100" in errors[1] and "but the image is 200x100" in errors[1]
        assert "empty mask" in errors[2] and "outside the 200x100 image" in errors[3]
        assert "bad base64" in errors[4] and "no region geometry" in errors[6]
        assert all(e.startswith("region: ") for e in errors if e)


def test_regions_column_as_a_numpy_array():
    arr = np.array([{"box": [1, 1, 5, 5]}, {"bbox": [2, 2, 3, 3]}], dtype=object)
    assert [r.box for r in regions_from_columns({"regions": arr}, W, H)] == [(1.0, 1.0, 5.0, 5.0), (2.0, 2.0, 5.0, 5.0)]


def test_regions_column_that_is_not_a_list():
    for value, why in [('{"box": [1, 2, 3, 4]}', "must be a list"), ("[{", "not valid JSON"), (7, "must be a list")]:
        rs = regions_from_columns({"regions": value}, W, H)
        assert len(rs) == 1 and not rs[0].ok and why in rs[0].error


def test_one_row_per_region():
    row = {"id": "row7", "mask": json.dumps(rle.encode(_mask(5, 5, 9, 9))), "attribute": "material", "caption": "x"}
    (r,) = regions_from_columns(row, W, H)
    assert r.ok and r.id is None and r.attribute == "material" and r.area == 16  # the row's id names the image row
    assert region_ids("row7", [r], per_row=True) == ["row7"]
    (r2,) = regions_from_columns({"region_id": "reg-1", "box": [1, 1, 5, 5]}, W, H)
    assert r2.id == "reg-1" and region_ids("row7", [r2], per_row=True) == ["reg-1"]
    (r3,) = regions_from_columns({"region": {"bbox": [1, 1, 4, 4], "id": "z"}}, W, H)
    assert r3.id == "z" and r3.box == (1.0, 1.0, 5.0, 5.0)
    (bad,) = regions_from_columns({"caption": "no region here"}, W, H)
    assert not bad.ok and "no 'regions' column" in bad.error


def test_image_row_ids():
    rs = regions_from_columns({"regions": [{"box": [1, 1, 5, 5]}, {"box": [2, 2, 6, 6], "id": "mine"}]}, W, H)
    assert region_ids("img9", rs) == ["img9:0", "mine"]


def test_scaling_to_the_model_image_keeps_tiny_regions():
    m = np.zeros((H, W), dtype=bool)
    m[51, 101] = True  # 1 px
    r = parse_region({"mask": m}, W, H)
    s = r.scaled(50, 25)  # a quarter of the size: nearest-neighbour would lose the pixel
    assert s.size == (50, 25) and s.mask.shape == (25, 50) and s.mask.sum() == 1
    ys, xs = np.nonzero(s.mask)
    assert (int(xs[0]), int(ys[0])) == (25, 12)
    b = parse_region({"box": [20, 10, 60, 40]}, W, H).scaled(100, 50)
    assert b.box == (10.0, 5.0, 30.0, 20.0) and b.mask is None
    big = parse_region({"mask": _mask(0, 0, 100, 50)}, W, H).scaled(400, 200)
    assert big.box == (0.0, 0.0, 200.0, 100.0) and big.area == 200 * 100


@pytest.mark.parametrize("value, why", [
    ({"regions": "[" * 100_000 + "]" * 100_000}, "not valid JSON (nested too deeply)"),
    ({"region": '{"box": [' + "1" * 5000 + ', 0, 1, 1]}'}, "not valid JSON (Exceeds the limit (4300 digits)"),
    ({"regions": [{"points": [[10 ** 400, 1]]}]}, "a point is [x, y]"),
    ({"regions": [{"box": [10 ** 400, 0, 1, 1]}]}, "a box is 4 numbers"),
])
def test_json_and_numbers_python_cannot_take_are_region_errors(value, why):
    """They escaped as RecursionError / ValueError / OverflowError, failing the row, not the region."""
    (r,) = regions_from_columns(value, W, H)
    assert r.error and why in r.error, r.error
