"""Transformers experts on tiny random-weight models of the real architectures (built locally, offline).

Random weights: assertions are on shapes, types, ranges and round trips, through the real
processors and post-processing."""

import json

import numpy as np
import pytest

from pixscribe.config import RunConfig
from pixscribe.experts import build_expert, to_jsonable
from pixscribe.experts import rle
from pixscribe.experts.base import Detection, Mask, RegionDepth, TextLine
from pixscribe.experts.depth import DepthExpert, larger_is_nearer_for, nearness_map, region_nearness
from pixscribe.experts.detection import ExpertUnavailable, GroundingDinoExpert, OwlV2Expert
from pixscribe.experts.florence import FlorenceExpert, clean_label, dequantize, parse_generation
from pixscribe.experts.segmentation import SamExpert
from pixscribe.testing import sample_photo


@pytest.fixture(scope="module")
def photos():
    return [sample_photo("chelsea"), sample_photo("rocket"), sample_photo("coffee")]


def _check_box(d, img):
    x0, y0, x1, y1 = d.box
    assert 0 <= x0 <= x1 <= img.width and 0 <= y0 <= y1 <= img.height
    assert all(0.0 <= v <= 1.0 for v in d.box_norm)
    assert d.box_norm[0] == pytest.approx(x0 / img.width, abs=1e-4)


@pytest.fixture(scope="module")
def gdino(tiny_experts):
    e = GroundingDinoExpert(str(tiny_experts["grounding_dino"]), device="cpu")
    e.setup()
    return e


def test_grounding_dino_per_image_queries(gdino, photos):
    queries = [["a cat", "a dog"], ["a rocket"], ["a cup", "a spoon", "a table"]]
    out = gdino.run(photos, queries=queries, box_threshold=0.05, text_threshold=0.05)
    assert len(out) == 3
    for dets, qs, img in zip(out, queries, photos):
        assert dets, "random detector with a low threshold should keep boxes"
        assert all(isinstance(d, Detection) and d.label in qs for d in dets)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        assert all(0.05 < d.score <= 1.0 for d in dets)
        for d in dets:
            _check_box(d, img)
    # the thresholds are applied: nothing passes above 1, and the empty case is typed
    assert gdino.run(photos[:2], queries=["a cat"], box_threshold=1.0) == [[], []]
    json.dumps(to_jsonable(out))


def test_grounding_dino_takes_a_square_image(gdino):
    """The tiny Grounding DINO's last feature level was 1x1 for a square image (64 px input),
    where its GroupNorm fails ("Expected more than 1 value per channel")."""
    img = sample_photo("astronaut")  # 512 x 512
    (dets,) = gdino.run([img], queries=["a person"], box_threshold=0.0, text_threshold=0.0)
    assert dets and all(d.label == "a person" for d in dets)


def test_grounding_dino_long_query_lists_are_chunked(gdino, photos):
    qs = [f"a {w} {v}" for w in ("red", "blue", "green", "white", "black") for v in ("cat", "dog", "car", "cup", "bus")]
    assert len(gdino._chunks(qs)) > 1  # the tiny model's max_text_len is 64 tokens
    dets = gdino.run(photos[:1], queries=qs, box_threshold=0.0, text_threshold=0.0)[0]
    assert {d.label for d in dets} <= set(qs) and len({d.label for d in dets}) > 1


def test_owlv2_queries_and_padding(tiny_experts, photos):
    owl = OwlV2Expert(str(tiny_experts["owlv2"]), device="cpu")
    queries = [["a cat", "a dog", "a bed"], ["a rocket"], ["a cup"]]
    out = owl.run(photos, queries=queries, box_threshold=0.0)
    for dets, qs, img in zip(out, queries, photos):
        assert dets and all(d.label in qs for d in dets)  # padded " " queries never leak as labels
        for d in dets:
            _check_box(d, img)
    assert owl.run(photos[:1], queries=["a cat"], box_threshold=1.0) == [[]]


def test_sam_best_mask_rle_round_trip(tiny_experts, photos):
    sam = SamExpert(str(tiny_experts["sam"]), device="cpu")
    chelsea, rocket, coffee = photos
    boxes = [
        [(10, 10, 200, 200), Detection.make((100, 50, 400, 280), 0.9, "a cat", chelsea.width, chelsea.height)],
        [],
        [[0, 0, 100, 100]],
    ]
    out = sam.run(photos, boxes=boxes)
    assert [len(o) for o in out] == [2, 0, 1]
    assert out[0][1].label == "a cat"
    for masks, img in zip(out, photos):
        for m in masks:
            assert isinstance(m, Mask) and isinstance(m.rle["counts"], str)
            assert m.rle["size"] == [img.height, img.width]
            arr = rle.decode(m.rle)
            assert arr.shape == (img.height, img.width)
            assert m.area == int(arr.sum()) == rle.area(m.rle)
            assert rle.encode(arr) == m.rle
            assert isinstance(m.score, float)
            if m.area:
                ys, xs = np.nonzero(arr)
                assert m.box == (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    json.dumps(to_jsonable(out))
    with pytest.raises(ValueError, match="box prompts"):
        sam.run(photos[:1])


@pytest.mark.parametrize("name", ["depth_anything", "dpt"])
def test_depth_regions_nearest_is_one(tiny_experts, photos, name):
    d = DepthExpert(str(tiny_experts[name]), device="cpu")
    assert d.larger_is_nearer  # both relative checkpoints predict inverse depth
    maps = d.maps(photos)
    for near, img in zip(maps, photos):
        assert near.shape == (img.height, img.width)
        assert near.min() == pytest.approx(0.0) and near.max() == pytest.approx(1.0)
    out = d.run(photos, boxes=[[(10, 10, 200, 200)], [], [(0, 0, 5, 5), (500, 300, 600, 400)]])
    assert [len(o) for o in out] == [1, 0, 2]
    for regions in out:
        for r in regions:
            assert isinstance(r, RegionDepth) and 0.0 <= r.relative <= 1.0
    assert out[0][0].relative == region_nearness(maps[0], box=(10, 10, 200, 200))
    grid = d.run(photos[:1])[0]
    assert [g.label for g in grid][:3] == ["upper left", "upper", "upper right"] and len(grid) == 9
    # masks (COCO RLE) are accepted too
    m = np.zeros((photos[0].height, photos[0].width), np.uint8)
    m[50:100, 60:200] = 1
    by_mask = d.run(photos[:1], masks=[[rle.encode(m)]])[0][0]
    assert by_mask.relative == pytest.approx(float(np.median(maps[0][m.astype(bool)])), abs=1e-4)
    assert by_mask.box_norm == pytest.approx((60 / photos[0].width, 50 / photos[0].height, 200 / photos[0].width, 100 / photos[0].height), abs=1e-5)
    s = d.summary(photos[:1])[0]
    assert 0 <= s["mean"] <= 1 and "inverse" in s["convention"]


def test_depth_sign_convention():
    disparity = np.array([[1.0, 2.0], [3.0, 5.0]])  # larger = nearer
    n = nearness_map(disparity, larger_is_nearer=True)
    assert n[1, 1] == 1.0 and n[0, 0] == 0.0
    metric = np.array([[1.0, 2.0], [3.0, 5.0]])  # metres: larger = farther
    n = nearness_map(metric, larger_is_nearer=False)
    assert n[0, 0] == 1.0 and n[1, 1] == 0.0
    assert (nearness_map(np.ones((2, 2)), True) == 0.5).all()

    class Cfg:
        def __init__(self, model_type, kind=None):
            self.model_type, self.depth_estimation_type = model_type, kind

    assert larger_is_nearer_for(Cfg("depth_anything", "relative"))
    assert not larger_is_nearer_for(Cfg("depth_anything", "metric"))
    assert larger_is_nearer_for(Cfg("dpt"))
    assert not larger_is_nearer_for(Cfg("zoedepth"))


def test_florence_parser_hand_written():
    s = "<s>a cat<loc_10><loc_20><loc_500><loc_600>a dog on a mat<loc_0><loc_0><loc_999><loc_999><loc_1><loc_2><loc_3><loc_4></s>"
    got = parse_generation(s, "<DENSE_REGION_CAPTION>", (1000, 500))
    # bins of 1000 per axis, dequantised at bin centres: x = int((b + .5) * W / 1000)
    assert got == {"bboxes": [[10, 10, 500, 300], [0, 0, 999, 499], [1, 1, 3, 2]],
                   "labels": ["a cat", "a dog on a mat", "a dog on a mat"]}  # fmt: skip
    ocr = "</s><s>OPEN 24H<loc_10><loc_20><loc_500><loc_20><loc_500><loc_600><loc_10><loc_600>EXIT<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8></s><pad>"
    got = parse_generation(ocr, "<OCR_WITH_REGION>", (640, 480))
    assert got["labels"] == ["OPEN 24H", "EXIT"]
    assert got["quad_boxes"][0] == [6, 9, 320, 9, 320, 288, 6, 288]
    assert dequantize([999, 999], (100, 50)) == [99, 49]
    assert parse_generation("<s>a photo of a cat</s>", "<CAPTION>", (10, 10)) == "a photo of a cat"
    assert clean_label("loc_536>") == "" and clean_label("a cat<loc_3>") == "a cat"


def test_florence_real_processor_agrees_and_runs(tiny_experts, photos):
    fl = FlorenceExpert(str(tiny_experts["florence2"]), device="cpu", num_beams=1, max_new_tokens=16)
    fl.setup()
    for task, s, size in [
        ("<OD>", "<s>car<loc_1><loc_2><loc_300><loc_400>person<loc_500><loc_0><loc_999><loc_999></s>", (640, 427)),
        ("<DENSE_REGION_CAPTION>", "<s>a red car parked<loc_1><loc_2><loc_300><loc_400></s>", (451, 300)),
        ("<OCR_WITH_REGION>", "<s>STOP<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>GO<loc_10><loc_20><loc_30><loc_40><loc_50><loc_60><loc_70><loc_80></s>", (300, 200)),
    ]:
        via_processor = fl.parse(s, task, size)  # the processor's post_process_generation
        assert via_processor == parse_generation(s, task, size)
    typed = fl.to_results(fl.parse("<s>a red car<loc_1><loc_2><loc_300><loc_400></s>", "<OD>", (451, 300)), "<OD>", photos[0])
    assert typed[0].label == "a red car" and typed[0].box == (0.0, 0.0, 135.0, 120.0)
    # end to end through generate (forced to emit tokens): typed results, boxes inside the image
    for task, kind in [("<OD>", Detection), ("<DENSE_REGION_CAPTION>", Detection), ("<OCR_WITH_REGION>", TextLine)]:
        out = fl.run(photos[:2], task=task, min_new_tokens=16)
        assert len(out) == 2
        for items, img in zip(out, photos):
            assert isinstance(items, list)
            for it in items:
                assert isinstance(it, kind)
                _check_box(it, img)
    caps = fl.run(photos[:1], task="<CAPTION>")
    assert isinstance(caps[0], str)
    with pytest.raises(ValueError, match="unsupported Florence-2 task"):
        fl.run(photos[:1], task="<NOPE>")


@pytest.mark.slow  # a 3-beam search of 160 tokens on 2 shared cores: 20-35 s
def test_dense_stage_runs_the_plain_tiny_florence2_at_its_default_length(tiny_experts, photos):
    """Regression: the tiny Florence-2's decoder has 160 learned positions and the expert asked for
    its default 1024 new tokens, so random weights (whose 3-beam search writes no </s> on these
    photos) failed every image of the dense stage with "index out of range in self". The expert now
    stops at the decoder's limit."""
    from pixscribe.record import Record
    from pixscribe.methods.textualize.detail import DetailStage

    fl = FlorenceExpert(str(tiny_experts["florence2"]), device="cpu")  # the defaults: 1024 new tokens, 3 beams
    assert (fl.max_new_tokens, fl.num_beams) == (1024, 3)
    stage = DetailStage(fl, SamExpert(str(tiny_experts["sam"]), device="cpu"),
                        DepthExpert(str(tiny_experts["depth_anything"]), device="cpu"))  # fmt: skip
    stage.setup()
    lengths = []
    generate = fl.net.generate

    def counted(**kw):
        out = generate(**kw)
        lengths.append(out.shape[1])
        return out

    fl.net.generate = counted
    recs = []
    for k, img in enumerate(photos[:1]):
        r = Record(source=f"p{k}", id=f"p{k}")
        r.image, (r.width, r.height) = img, img.size
        recs.append(r)
    for r in stage(recs):
        assert r.error is None and isinstance(r.fields["regions"], list)
    assert fl.token_limit() == 160
    fl.num_beams = 1
    forced = fl.run(photos[:1], min_new_tokens=2000)  # more than the table holds: capped, not an IndexError
    assert isinstance(forced[0], list) and lengths[-1] == 1 + 160  # the decoder start token + 160


def test_from_config_and_registry(tiny_experts):
    cfg = RunConfig(device="cpu", expert_models={"grounding_dino": str(tiny_experts["grounding_dino"]),
                                                 "sam": str(tiny_experts["sam"]), "depth": str(tiny_experts["dpt"]),
                                                 "dense": str(tiny_experts["florence2"])})  # fmt: skip
    gd = build_expert("grounding_dino", cfg)
    assert isinstance(gd, GroundingDinoExpert) and gd.model == str(tiny_experts["grounding_dino"])
    assert build_expert("owlv2", cfg).model == "google/owlv2-base-patch16-ensemble"
    assert build_expert("sam", cfg).model == str(tiny_experts["sam"])
    assert build_expert("depth", cfg).model == str(tiny_experts["dpt"])
    assert isinstance(build_expert("dense", cfg), FlorenceExpert)
    assert not gd.trust_remote_code


def test_unreachable_model_is_a_clear_error(tmp_path):
    with pytest.raises(ExpertUnavailable) as ei:
        GroundingDinoExpert("IDEA-Research/grounding-dino-base", device="cpu").setup()
    msg = str(ei.value)
    assert "IDEA-Research/grounding-dino-base" in msg and "expert_models" in msg and "grounding_dino" in msg
    with pytest.raises(ExpertUnavailable, match="no-such-dir"):
        SamExpert(str(tmp_path / "no-such-dir"), device="cpu").setup()
