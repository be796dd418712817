"""CHAIR and POPE on hand-made cases with known answers; POPE through a scripted Backend."""

import pytest

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.metrics.chair import chair, mentioned_objects
from pixscribe.metrics.pope import ask_pope, build_pope, parse_yes_no, run_pope, score_pope


def test_mentions_synonyms_plurals_and_two_word_objects():
    assert mentioned_objects("A hot dog next to two dogs") == ["hot dog", "dog"]
    assert mentioned_objects("a teddy bear on a bed") == ["teddy bear", "bed"]
    assert mentioned_objects("Two women and children with cell phones") == ["person", "cell phone"]
    assert mentioned_objects("knives and forks on the dining table") == ["knife", "fork", "dining table"]
    assert mentioned_objects("a puppy on a sofa near a TV") == ["dog", "couch", "tv"]
    assert mentioned_objects("a bear") == ["bear"]
    assert mentioned_objects("a sunny day") == []


def test_chair_known_values():
    caps = {
        "1": "A dog and a cat sit on a sofa.",       # cat hallucinated: 1 of 3
        "2": "A man rides a surfboard.",             # clean
        "3": "Two giraffes near a car and a bus.",   # car, bus hallucinated: 2 of 3
        "4": "A beautiful sunset.",                  # no mentions
    }
    gt = {"1": ["dog", "couch"], "2": ["person", "surfboard"], "3": ["giraffe"], "4": ["person"]}
    r = chair(caps, gt)
    assert r.captions == 4
    assert r.chair_s == pytest.approx(2 / 4)
    assert r.chair_i == pytest.approx(3 / 8)
    assert r.per_image["3"]["hallucinated"] == ["car", "bus"]


def _objects():
    return {"1": ["dog", "person", "frisbee"], "2": ["person", "car"], "3": ["dog", "person"],
            "4": ["cat", "couch"], "5": ["car", "bus", "person"]}


def test_pope_splits():
    objs = _objects()
    for split in ("random", "popular", "adversarial"):
        qs = build_pope(objs, split, k=2, seed=3)
        assert qs == build_pope(objs, split, k=2, seed=3)  # seeded
        for q in qs:
            assert (q.object in objs[q.image_id]) == q.label
        assert sum(q.label for q in qs) == sum(not q.label for q in qs)
    pop = [q for q in build_pope(objs, "popular", k=1) if not q.label]
    # 'person' (5 images) is present everywhere but image 4, so it is image 4's popular negative
    assert [q.object for q in pop if q.image_id == "4"] == ["person"]
    adv = [q for q in build_pope(objs, "adversarial", k=2) if not q.label and q.image_id == "2"]
    # car co-occurs with bus (image 5) and person co-occurs with dog most often -> dog, bus first
    assert sorted(q.object for q in adv) == ["bus", "dog"]


def test_pope_scores_known_values():
    labels = [True, True, True, False, False, False]
    answers = [True, True, False, True, False, None]
    s = score_pope(labels, answers)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["yes_ratio"] == pytest.approx(3 / 6)
    assert s["unparsed"] == 1
    assert parse_yes_no("Yes, there is a dog.") is True
    assert parse_yes_no("No, there isn't.") is False
    assert parse_yes_no("There is no cat") is False
    assert parse_yes_no("I cannot tell") is None


class ScriptedBackend(Backend):
    """Answers 'yes' for objects it 'sees' in the image it was given, else 'No.'."""

    name = "scripted"

    def __init__(self, sees):
        super().__init__()
        self.sees = sees
        self.calls = []

    def _generate(self, requests):
        out = []
        for r in requests:
            img = r.images[0]
            text = r.messages[-1]["content"][-1]["text"]
            self.calls.append((img, text))
            obj = text.split("Is there a ", 1)[1].split(" in the image", 1)[0]
            if obj == "kite":
                out.append(GenerationResult(error="backend: boom"))
            else:
                out.append(GenerationResult(text="Yes, I see it." if obj in self.sees[img] else "No."))
        return out


def test_ask_pope_with_a_backend():
    objs = _objects()
    images = {k: f"img-{k}" for k in objs}  # any object works as the 'image' for the fake
    sees = {f"img-{k}": set(v) | ({"bus"} if k == "1" else set()) for k, v in objs.items()}
    be = ScriptedBackend(sees)
    qs = build_pope(objs, "random", k=2, seed=0)
    ans, raw = ask_pope(be, qs, images, batch_size=4)
    assert len(ans) == len(qs) and len(be.calls) == len(qs)
    assert all(img == images[q.image_id] for (img, _), q in zip(be.calls, qs))
    expected = [q.label or (q.image_id == "1" and q.object == "bus") for q in qs]
    assert [a if a is not None else False for a in ans] == expected
    res = run_pope(be, objs, images, k=2)
    assert set(res) == {"random", "popular", "adversarial"}
    assert res["popular"]["recall"] == 1.0
