"""verify(): the grounded/hallucinated decision on scripted detector results, and the real Verifier."""

import pytest

from pixscribe.experts.base import Detection, Expert
from pixscribe.experts.detection import (Grounding, GroundingDinoExpert, OwlV2Expert, Verifier, box_iou,
                                         decide_groundings, nms, verify)  # fmt: skip

W, H = 200, 100


def det(label, score, box=(20, 10, 80, 60)):
    return Detection.make(box, score, label, W, H)


def test_box_iou_hand_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_grounded_and_hallucinated_split():
    dets = [det("a cat", 0.82), det("a dog", 0.12), det("A Sofa.", 0.45, (100, 20, 190, 90))]
    g = decide_groundings(["a cat", "a dog", "a sofa", "a unicorn"], {"gd": dets}, box_threshold=0.3)
    assert [x.phrase for x in g] == ["a cat", "a dog", "a sofa", "a unicorn"]
    assert [x.grounded for x in g] == [True, False, True, False]
    assert all(isinstance(x, Grounding) for x in g)
    assert g[0].boxes[0].box == (20.0, 10.0, 80.0, 60.0) and g[0].score == 0.82
    assert g[2].boxes[0].label == "A Sofa." and g[2].score == 0.45  # matched ignoring case/punctuation
    assert g[1].boxes == [] and g[1].score == 0.12  # near miss reported
    assert g[3].score == 0.0 and g[3].support == {"gd": 0.0}


def test_threshold_is_respected_inclusively_and_per_detector():
    dets = [det("tree", 0.3), det("car", 0.2999)]
    g = decide_groundings(["tree", "car"], dets, box_threshold=0.3)
    assert [x.grounded for x in g] == [True, False]
    g = decide_groundings(["tree", "car"], dets, box_threshold=0.25)
    assert [x.grounded for x in g] == [True, True]
    # per-detector thresholds: OWLv2-style low scores pass their own bar
    per = {"gd": [det("car", 0.2)], "owl": [det("car", 0.15)]}
    g = decide_groundings(["car"], per, box_threshold={"gd": 0.3, "owl": 0.1})
    assert g[0].grounded and [b.score for b in g[0].boxes] == [0.15]
    with pytest.raises(ValueError, match="no box_threshold"):
        decide_groundings(["car"], per, box_threshold={"gd": 0.3})


def test_boxes_sorted_and_only_passing_kept():
    dets = [det("cup", 0.4, (0, 0, 10, 10)), det("cup", 0.9, (50, 50, 60, 60)), det("cup", 0.1, (1, 1, 5, 5))]
    g = decide_groundings(["cup"], {"a": dets}, 0.3)[0]
    assert [b.score for b in g.boxes] == [0.9, 0.4] and g.score == 0.9


def test_consensus_needs_both_detectors_with_overlap():
    gd = {"gd": [det("cat", 0.8, (20, 10, 80, 60)), det("dog", 0.7, (100, 10, 150, 60)), det("lamp", 0.6)]}
    owl = {"owl": [det("cat", 0.3, (22, 12, 82, 62)), det("dog", 0.4, (0, 0, 40, 40)), det("lamp", 0.05)]}
    per = {**gd, **owl}
    th = {"gd": 0.3, "owl": 0.1}
    g = {x.phrase: x for x in decide_groundings(["cat", "dog", "lamp", "bird"], per, th, consensus=True, iou=0.5)}
    assert g["cat"].grounded and {b.score for b in g["cat"].boxes} == {0.8, 0.3}
    assert not g["dog"].grounded  # both found it, but in different places
    assert not g["lamp"].grounded  # the second detector is below its threshold
    assert not g["bird"].grounded
    assert g["dog"].support == {"gd": 0.7, "owl": 0.4}
    # without consensus, either detector suffices
    g1 = {x.phrase: x for x in decide_groundings(["cat", "dog", "lamp"], per, th, consensus=False)}
    assert g1["dog"].grounded and g1["lamp"].grounded
    # the dog boxes do not overlap at all
    assert box_iou(gd["gd"][1].box_norm, owl["owl"][1].box_norm) == 0.0
    # IoU threshold matters: a partially overlapping pair agrees only at a lower iou
    part = {"gd": [det("cat", 0.8, (0, 0, 100, 100))], "owl": [det("cat", 0.8, (50, 0, 150, 100))]}
    assert not decide_groundings(["cat"], part, 0.3, consensus=True, iou=0.5)[0].grounded
    assert decide_groundings(["cat"], part, 0.3, consensus=True, iou=0.3)[0].grounded


def test_consensus_with_one_detector_is_an_error():
    with pytest.raises(ValueError, match="two detectors"):
        decide_groundings(["cat"], {"gd": []}, consensus=True)


def test_nms_per_label():
    dets = [det("a", 0.9, (0, 0, 10, 10)), det("a", 0.8, (1, 0, 11, 10)), det("b", 0.7, (0, 0, 10, 10))]
    kept = nms(dets, 0.5)
    assert [(d.label, d.score) for d in kept] == [("a", 0.9), ("b", 0.7)]


class ScriptedDetector(Expert):
    """A stand-in detector with canned answers, recording the queries it was asked."""

    def __init__(self, name, answers):
        self.name, self.answers, self.calls = name, answers, []

    def run(self, images, queries=None, box_threshold=0.0, **kw):
        self.calls.append((len(images), queries, box_threshold))
        return [[d for d in self.answers if d.label in qs and d.score > box_threshold] for qs in queries]


def test_verifier_batches_phrases_and_probes_low():
    from PIL import Image

    gd = ScriptedDetector("grounding_dino", [det("cat", 0.9), det("dog", 0.2)])
    owl = ScriptedDetector("owlv2", [det("cat", 0.25, (21, 11, 79, 59))])
    v = Verifier([gd, owl], box_threshold={"grounding_dino": 0.3, "owlv2": 0.1}, consensus=True)
    imgs = [Image.new("RGB", (W, H)), Image.new("RGB", (W, H)), Image.new("RGB", (W, H))]
    out = v.verify_batch(imgs, [["cat", "dog"], [], ["cat"]])
    assert [[g.grounded for g in o] for o in out] == [[True, False], [], [True]]
    assert gd.calls == [(2, [["cat", "dog"], ["cat"]], 0.1)]  # empty phrase lists skipped; probe at min threshold
    assert out[0][1].score == 0.2  # near miss visible
    single = verify(imgs[0], ["cat", "dog"], gd, box_threshold=0.15)
    assert [g.grounded for g in single] == [True, True]


def test_verify_with_real_tiny_detectors(tiny_experts):
    from pixscribe.testing import sample_photo

    img = sample_photo("chelsea")
    gd = GroundingDinoExpert(str(tiny_experts["grounding_dino"]), device="cpu")
    owl = OwlV2Expert(str(tiny_experts["owlv2"]), device="cpu")
    phrases = ["a cat", "a striped sofa"]
    res = verify(img, phrases, [gd, owl], box_threshold=0.0, consensus=False)
    assert [g.phrase for g in res] == phrases
    # with random weights and a zero threshold, every phrase gets boxes from the real post-processing
    for g in res:
        assert g.grounded and g.boxes and set(g.support) == {"grounding_dino", "owlv2"}
        for b in g.boxes:
            assert b.label == g.phrase
            assert 0 <= b.box[0] <= b.box[2] <= img.width and 0 <= b.box[1] <= b.box[3] <= img.height
    # an impossible threshold grounds nothing, and the consensus path runs on real outputs
    none = verify(img, phrases, [gd, owl], box_threshold=1.01, consensus=True)
    assert [g.grounded for g in none] == [False, False]
