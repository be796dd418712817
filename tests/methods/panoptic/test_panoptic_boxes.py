"""Box formats of panoptic captioning: parsing, rendering, padding math, round trips."""

import random

import pytest

from pixscribe.methods.panoptic import boxes as B


# ---- the reference format ----------------------------------------------------------

CAPTION = ("A brown dog [[0.100, 0.200, 0.500, 0.800]] lies on a red sofa [[0.000, 0.400, 1.000, 1.000]], "
           "two cups [[0.600, 0.100, 0.650, 0.150], [0.700, 0.100, 0.750, 0.160]] stand on a shelf.")


def test_reference_parse_spans_and_render_round_trip():
    boxes, problems = B.parse_reference(CAPTION)
    assert problems == []
    assert [b.box for b in boxes] == [(0.1, 0.2, 0.5, 0.8), (0.0, 0.4, 1.0, 1.0),
                                      (0.6, 0.1, 0.65, 0.15), (0.7, 0.1, 0.75, 0.16)]
    first = boxes[0]
    assert CAPTION[first.start:first.end] == "[[0.100, 0.200, 0.500, 0.800]]"
    # the two boxes of one [[...], [...]] group share its span
    assert (boxes[2].start, boxes[2].end) == (boxes[3].start, boxes[3].end)
    # text -> box -> text is exact for canonical 3-decimal boxes
    for s in ("[[0.100, 0.200, 0.500, 0.800]]", "[[0.000, 0.000, 1.000, 1.000]]", "[[0.123, 0.457, 0.999, 1.000]]"):
        assert B.render_reference(B.parse_reference_box(s)) == s
    assert B.render_reference((0.12345, -0.0, 1.2, 0.5)) == "[[0.123, 0.000, 1.000, 0.500]]"


def test_reference_malformed_items_are_reported_and_skipped():
    text = ("a [[0.1, 0.2, 0.3]] b [[0.1, 0.2, x, 0.4]] c [[0.5, 0.2, 0.1, 0.4]] d [[0.1, 0.2, 0.3, 1.5]] "
            "e [[0.100, 0.200, 0.300, 0.400]] f [[nan, 0, 1, 1]]")
    boxes, problems = B.parse_reference(text)
    assert [b.box for b in boxes] == [(0.1, 0.2, 0.3, 0.4)]
    assert [p.reason for p in problems] == ["3 numbers, expected 4", "not numbers", "x2 < x1 or y2 < y1",
                                            "coordinates outside [0, 1]", "not finite numbers"]
    assert problems[0].text == "[[0.1, 0.2, 0.3]]" and text[problems[0].start:].startswith("[[0.1, 0.2, 0.3]]")
    assert "3 numbers" in str(problems[0])
    assert B.parse_reference_box("no box here") is None


def test_strip_reference_removes_boxes_and_their_spaces():
    assert B.strip_reference(CAPTION) == "A brown dog lies on a red sofa, two cups stand on a shelf."


# ---- the model format --------------------------------------------------------------


def test_model_parse_render_round_trip():
    text = "dog <box>[[100, 200, 500, 800]]</box>, red sofa <box>[[0, 400, 999, 999]]</box>"
    items, problems = B.parse_model(text)
    assert problems == []
    assert items == [B.ModelItem("dog", (100, 200, 500, 800)), B.ModelItem("red sofa", (0, 400, 999, 999))]
    assert B.render_model(items) == text
    bare = "<box>[[1, 2, 3, 4]]</box>, <box>[[5, 6, 7, 8]]</box>"
    items, problems = B.parse_model(bare)
    assert problems == [] and [i.tag for i in items] == [None, None] and B.render_model(items) == bare
    assert B.render_model([(1, 2, 3, 4)]) == "<box>[[1, 2, 3, 4]]</box>"
    items, _ = B.parse_model("cups <box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>")
    assert items == [B.ModelItem("cups", (1, 2, 3, 4)), B.ModelItem("cups", (5, 6, 7, 8))]


def test_model_malformed_items_are_reported_and_the_rest_still_read():
    text = ("dog <box>[[1, 2, 3]]</box>, cat <box>[[10, 20, 5, 40]]</box>, tree <box>[[1, 2, 3, 1200]]</box>, "
            "bird <box>[[1.5, 2, 3, 4]]</box>, man <box>[[10, 20, 30, 40]]</box>, lamp <box>1, 2, 3, 4</box>, "
            "car <box>[[1, 2, 3, 4]]")
    items, problems = B.parse_model(text)
    assert items == [B.ModelItem("man", (10, 20, 30, 40))]  # the official parser would have stopped at "dog"
    assert [(p.text.split()[0], p.reason) for p in problems] == [
        ("dog", "3 numbers, expected 4"), ("cat", "x2 < x1 or y2 < y1"), ("tree", "coordinates outside [0, 999]"),
        ("bird", "not integers"), ("lamp", "box is not [[x1, y1, x2, y2]]"), ("car", "no closing </box>")]
    assert text[problems[1].start:].startswith("cat <box>")
    _, problems = B.parse_model("dog <box>[[1, 2, 3, 4]]</box>, and some chatter")
    assert [p.reason for p in problems] == ["text outside any <box>...</box> item"]
    assert B.parse_model("") == ([], [])


# ---- padding math ------------------------------------------------------------------


def test_pad_geometry_wide_tall_square_odd():
    assert B.pad_geometry(200, 100) == (200, 0, 50)
    assert B.pad_geometry(100, 300) == (300, 100, 0)
    assert B.pad_geometry(64, 64) == (64, 0, 0)
    assert B.pad_geometry(101, 50) == (101, 0, 25)  # (101 - 50) // 2: the paste offset of expand2square
    with pytest.raises(ValueError):
        B.pad_geometry(0, 10)


def test_wide_image_hand_computed():
    # 200 x 100 is padded to 200 x 200 with the image pasted at y = 50
    assert B.pixels_to_model((0, 0, 200, 100), 200, 100) == (0, 250, 999, 749)  # 249.75 -> 250, 749.25 -> 749
    assert B.pixels_to_model((50, 25, 150, 75), 200, 100) == (250, 375, 749, 624)  # 249.75, 374.6, 749.25, 624.4
    x1, y1, x2, y2 = B.model_to_pixels((0, 250, 999, 749), 200, 100)
    assert (x1, x2) == (0, 200)
    assert y1 == pytest.approx(250 / 999 * 200 - 50) and y2 == pytest.approx(749 / 999 * 200 - 50)
    # a box reaching into the padding is clipped to the image unless asked not to
    assert B.model_to_pixels((0, 0, 999, 999), 200, 100) == (0, 0, 200, 100)
    assert B.model_to_pixels((0, 0, 999, 999), 200, 100, clip=False) == pytest.approx((0, -50, 200, 150))
    assert B.model_to_reference((0, 0, 999, 999), 200, 100) == (0.0, 0.0, 1.0, 1.0)


def test_tall_image_hand_computed():
    # 100 x 300 is padded to 300 x 300 with the image pasted at x = 100
    assert B.pixels_to_model((10, 0, 90, 300), 100, 300) == (366, 0, 633, 999)  # 366.3, 632.7
    assert B.model_to_pixels((333, 0, 666, 999), 100, 300) == pytest.approx((0.0, 0, 100.0, 300))
    assert B.reference_to_model((0.0, 0.0, 1.0, 1.0), 100, 300) == (333, 0, 666, 999)
    assert B.model_to_reference((366, 0, 633, 999), 100, 300) == (0.099, 0.0, 0.901, 1.0)  # 9.91 px and 90.09 px of 100


@pytest.mark.parametrize("size", [(200, 100), (100, 300), (640, 480), (480, 640), (101, 50), (37, 1000), (512, 512)])
def test_round_trips_are_exact_to_the_formats_precision(size):
    w, h = size
    side, ox, oy = B.pad_geometry(w, h)
    rng = random.Random(w * 7919 + h)
    lo_x, hi_x = ox * B.MODEL_SCALE / side, (ox + w) * B.MODEL_SCALE / side
    lo_y, hi_y = oy * B.MODEL_SCALE / side, (oy + h) * B.MODEL_SCALE / side
    for _ in range(300):
        # model integers inside the image area -> pixels -> the same integers
        xs = sorted(rng.randint(int(lo_x) + 1, int(hi_x)) for _ in range(2))
        ys = sorted(rng.randint(int(lo_y) + 1, int(hi_y)) for _ in range(2))
        m = (xs[0], ys[0], xs[1], ys[1])
        assert B.pixels_to_model(B.model_to_pixels(m, w, h), w, h) == m
        # pixels -> model -> pixels moves a coordinate by at most half a quantum
        px = sorted(rng.uniform(0, w) for _ in range(2)), sorted(rng.uniform(0, h) for _ in range(2))
        p = (px[0][0], px[1][0], px[0][1], px[1][1])
        back = B.model_to_pixels(B.pixels_to_model(p, w, h), w, h)
        half = side / B.MODEL_SCALE / 2 + 1e-9
        assert all(abs(a - b) <= half for a, b in zip(p, back))
        # pixels -> reference -> pixels: within half of the 3rd decimal; reference text is stable
        r = B.pixels_to_reference(p, w, h)
        back = B.reference_to_pixels(r, w, h)
        assert all(abs(a - b) <= 0.0005 * s + 1e-9 for a, b, s in zip(p, back, (w, h, w, h)))
        text = B.render_reference(r)
        assert B.render_reference(B.parse_reference_box(text)) == text


def test_iou():  # the one iou (spatial), as panoptic's re-detection merge calls it
    from pixscribe.spatial import iou

    assert iou((0, 0, 2, 2), (0, 0, 2, 2), degenerate=0.0) == 1.0
    assert iou((0, 0, 2, 2), (1, 1, 3, 3), degenerate=0.0) == pytest.approx(1 / 7)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3), degenerate=0.0) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0), degenerate=0.0) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 1.0  # NMS and "overlapping": a point is its own match
