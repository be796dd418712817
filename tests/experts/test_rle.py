"""COCO RLE: round trips, area, bbox, and hand-computed strings (pycocotools' compressed form)."""

import numpy as np
import pytest

from pixscribe.experts import rle


def test_hand_computed_small_mask():
    # column-major: col0 = 0,0  col1 = 1,1  col2 = 1,0  -> runs 2 zeros, 3 ones, 1 zero
    m = np.array([[0, 1, 1], [0, 1, 0]], dtype=np.uint8)
    r = rle.encode(m)
    assert r == {"size": [2, 3], "counts": "231"}
    assert rle.area(r) == 3
    assert rle.to_bbox(r) == [1.0, 0.0, 2.0, 2.0]
    assert rle.to_xyxy(r) == (1.0, 0.0, 3.0, 2.0)
    assert (rle.decode(r) == m).all()


def test_hand_computed_strings_with_deltas_and_multi_char_counts():
    # from the 4th count on, the delta to the count two places before is written
    assert rle.counts_to_string([2, 3, 1, 4]) == "2311"  # 4 - 3 = 1
    assert rle.counts_to_string([2, 3, 1, 1]) == "231N"  # 1 - 3 = -2 -> 30 + 48 = 'N' (sign bit set)
    assert rle.counts_to_string([40]) == "X1"  # 40 = 8 + 1*32: '8'|0x20 -> 'X', then '1'
    for counts in ([2, 3, 1, 4], [2, 3, 1, 1], [40], [0, 7], [123456, 1, 99999, 2, 3]):
        assert rle.string_to_counts(rle.counts_to_string(counts)) == counts


def test_mask_starting_with_foreground_has_leading_zero_run():
    m = np.ones((3, 2), dtype=bool)
    r = rle.encode(m)
    assert rle.string_to_counts(r["counts"]) == [0, 6]
    assert rle.area(r) == 6 and rle.to_bbox(r) == [0.0, 0.0, 2.0, 3.0]


def test_empty_mask():
    r = rle.encode(np.zeros((4, 5), np.uint8))
    assert rle.area(r) == 0 and rle.to_bbox(r) == [0.0, 0.0, 0.0, 0.0]
    assert rle.decode(r).shape == (4, 5) and rle.decode(r).sum() == 0


@pytest.mark.parametrize("p", [0.02, 0.3, 0.5, 0.97])
def test_random_round_trip_area_and_bbox(p):
    rng = np.random.default_rng(int(p * 100))
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)) < p
        r = rle.encode(m)
        assert isinstance(r["counts"], str) and r["size"] == [h, w]
        assert (rle.decode(r) == m).all()
        assert rle.area(r) == int(m.sum())
        ys, xs = np.nonzero(m)
        expect = [0.0] * 4 if not m.any() else [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert rle.to_bbox(r) == [float(v) for v in expect]
        # list counts (uncompressed COCO RLE) decode the same
        assert (rle.decode({"size": [h, w], "counts": rle.string_to_counts(r["counts"])}) == m).all()


def test_bad_rle_is_a_clear_error():
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [2, 2], "counts": "231"})
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2)))


def test_matches_pycocotools_when_installed():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        m = (rng.random((h, w)) < rng.choice([0.05, 0.5, 0.95])).astype(np.uint8)
        if rng.random() < 0.3:  # blocky masks give long runs and multi-character counts
            m[:] = 0
            m[h // 4 : 3 * h // 4 + 1, w // 3 :] = 1
        ref = mask_api.encode(np.asfortranarray(m))
        ours = rle.encode(m)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert rle.area(ours) == int(mask_api.area(ref))
        assert np.allclose(rle.to_bbox(ours), mask_api.toBbox(ref))
        assert (mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()}) == m).all()


def test_decode_sampled_is_the_decoded_mask_subsampled():
    rng = np.random.default_rng(7)
    for _ in range(30):
        h, w, step = (int(v) for v in (*rng.integers(1, 70, 2), rng.integers(1, 9)))
        m = rng.random((h, w)) < rng.random()
        r = rle.encode(m)
        assert (rle.decode_sampled(r, step) == m[::step, ::step]).all()


def test_sizes_no_image_has_are_refused_before_anything_is_allocated():
    for size in ([-3, -4], [1 << 25, 2]):
        with pytest.raises(ValueError, match="each side must be"):
            rle.decode_sampled({"size": size, "counts": [12]}, 1)
