"""POPE equal to RUCAIBox/POPE (evaluate.py, main.py + utils.py), and pope_fixed where documented.

Answer reading, scores and the popular questions are worked out by hand in the comments.
Where the reference draws with ``random`` (image draw, random negatives, fallbacks), the
expected questions come from a plain transcription of the reference's calls in
``_reference_questions`` (a second, independent writing of the same loop), with the
hand-derivable parts asserted by hand as well.
"""

import json
import random
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.commands import Commands
from pixscribe.metrics.eval_cli import register
from pixscribe.metrics.pope import answer_is_yes, ask_pope, run_pope, score_pope
from pixscribe.metrics.pope_build import build_pope, co_occurrence, question_text, segments_from_coco

# answer -> (read by pope, read by pope_fixed); True = "yes"
ANSWERS = {
    "Yes": (True, True),
    "Yes, there is a dog in the image.": (True, True),
    "Yes, but it is small.": (True, True),           # first sentence "Yes, but it is small": no No/no/not
    "Yes, but there is no cat.": (False, False),     # "no" in the first sentence
    "No. Yes, there is a dog.": (False, False),      # first sentence "No"
    "No, there is not.": (False, False),             # commas removed: "No there is not"
    "not sure": (False, False),
    "": (True, True),                                # nothing says no
    "There is a dog. No cat.": (True, True),         # only the first sentence counts
    # pope_fixed differences (docs/metrics.md)
    "NO": (True, False),                             # case: only "No", "no", "not" count in the reference
    "Not really.": (True, False),
    "No!": (True, False),                            # pieces split on spaces: "No!" is not "No"
    "(no)": (True, False),
    "No\nThere is none.": (True, False),             # first piece "No\nThere"; fixed: a line break ends a sentence
    "Yes! There is no cat.": (False, True),          # reference: one sentence up to the "."; fixed: "Yes!" ends it
    "There isn't a dog in the image.": (True, False),  # fixed reads n't as a negation
    "There is no dog? Yes.": (False, False),
}


@pytest.mark.parametrize("text", list(ANSWERS))
def test_answer_reading(text):
    ref, fixed = ANSWERS[text]
    assert answer_is_yes(text, "pope") is ref
    assert answer_is_yes(text, "pope_fixed") is fixed


def test_scores_known_values_and_zero_divisions():
    labels = [True, True, True, False, False, False]
    s = score_pope(labels, [True, True, False, True, False, False])
    # TP 2, FN 1, FP 1, TN 2: acc 4/6, precision 2/3, recall 2/3, F1 2/3, yes-ratio 3/6
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (2, 1, 1, 2)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)
    assert s["yes_ratio"] == pytest.approx(0.5)
    none_yes = score_pope(labels, [False] * 6)  # the reference stops with ZeroDivisionError: NaN here
    assert none_yes["precision"] != none_yes["precision"] and none_yes["accuracy"] == 0.5
    with pytest.raises(ValueError, match="5 answers for 6"):
        score_pope(labels, [True] * 5)


# four images; with seed 0, random.sample(eligible, 4) draws them in the order D, B, A, C
SEGMENTS = [
    {"image": "A.jpg", "objects": ["dog", "person", "frisbee"]},
    {"image": "B.jpg", "objects": ["person", "car", "dog"]},
    {"image": "C.jpg", "objects": ["cat", "couch", "person"]},
    {"image": "D.jpg", "objects": ["person", "dog", "couch"]},
    {"image": "E.jpg", "objects": ["bird", "kite"]},  # fewer than 3 objects: never drawn
]


def test_image_draw_counts_and_co_occurrence():
    sets = build_pope(SEGMENTS, img_num=0, seed=0)
    assert [im["image"] for im in sets["images"]] == ["D.jpg", "B.jpg", "A.jpg", "C.jpg"]
    assert [im["image"] for im in random.Random(0).sample(SEGMENTS[:4], 4)] == ["D.jpg", "B.jpg", "A.jpg", "C.jpg"]
    # counts in first-seen order over D, B, A, C: person 4, dog 3, couch 2, car 1, frisbee 1, cat 1
    assert sets["ground_truth_objects"] == {"person": 4, "dog": 3, "couch": 2, "car": 1, "frisbee": 1, "cat": 1}
    # person: dog 3 (D, B, A), couch 2 (D, C), then car, frisbee, cat once each, in first-seen order
    assert sets["co_occur"]["person"] == ["dog", "couch", "car", "frisbee", "cat"]
    assert sets["co_occur"]["car"] == ["person", "dog"]
    assert co_occurrence([{"objects": ["a", "b", "a"]}]) == {"a": ["b"], "b": ["a"]}  # a repeat counts twice


def test_popular_questions_by_hand():
    qs = build_pope(SEGMENTS, img_num=0, seed=0)["popular"]
    # popular order: person, dog, couch, car, frisbee, cat; per image, each of the first 3 objects, then the
    # most popular object that is neither in the image nor already asked:
    # D [person, dog, couch]: car, frisbee, cat      B [person, car, dog]: couch, frisbee, cat
    # A [dog, person, frisbee]: couch, car, cat      C [cat, couch, person]: dog, car, frisbee
    expect = [("D.jpg", "person", "car"), ("D.jpg", "dog", "frisbee"), ("D.jpg", "couch", "cat"),
              ("B.jpg", "person", "couch"), ("B.jpg", "car", "frisbee"), ("B.jpg", "dog", "cat"),
              ("A.jpg", "dog", "couch"), ("A.jpg", "person", "car"), ("A.jpg", "frisbee", "cat"),
              ("C.jpg", "cat", "dog"), ("C.jpg", "couch", "car"), ("C.jpg", "person", "frisbee")]
    got = [(qs[i].image, qs[i].object, qs[i + 1].object) for i in range(0, len(qs), 2)]
    assert got == expect
    assert [q.label for q in qs[:4]] == ["yes", "no", "yes", "no"] and [q.question_id for q in qs] == list(range(1, 25))
    assert qs[0].to_json() == {"question_id": 1, "image": "D.jpg", "text": "Is there a person in the image?",
                               "label": "yes"}


def _reference_questions(segments, seed, sample_num=3):
    """The reference's calls, transcribed plainly: one generator for the draw and the three splits."""
    rng = random.Random(seed)
    images = rng.sample([s for s in segments if len(s["objects"]) >= sample_num],
                        len([s for s in segments if len(s["objects"]) >= sample_num]))
    counts = {}
    for im in images:
        for o in im["objects"]:
            counts[o] = counts.get(o, 0) + 1
    pool = list(counts)
    popular = [o for o, _ in sorted(counts.items(), key=lambda x: x[1], reverse=True)]
    co = co_occurrence(images)
    out = {}
    for split in ("random", "popular", "adversarial"):
        qs = []
        for im in images:
            hist = []
            for i in range(sample_num):
                pos = im["objects"][i]
                hist.append(pos)
                ranked = [] if split == "random" else popular if split == "popular" else co[pos]
                neg = next((o for o in ranked if o not in hist and o not in im["objects"]), None)
                if neg is None:
                    neg = rng.choice(pool)
                    while neg in hist or neg in im["objects"]:
                        neg = rng.choice(pool)
                hist.append(neg)
                qs += [(im["image"], pos, "yes"), (im["image"], neg, "no")]
        out[split] = qs
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_all_splits_equal_the_reference_calls(seed):
    sets = build_pope(SEGMENTS, img_num=0, seed=seed)
    ref = _reference_questions(SEGMENTS, seed)
    for split in ("random", "popular", "adversarial"):
        assert [(q.image, q.object, q.label) for q in sets[split]] == ref[split], split
    if seed == 0:
        adv = sets["adversarial"]
        # by hand (no fallback): D: person -> car (dog, couch in D), dog -> frisbee (person, couch in D, car asked),
        # couch -> cat; B: person -> couch; A: dog -> couch, person -> car; A's frisbee has only dog and person
        # (both in A) so it falls back to random.choice, and cat is the one object left
        assert [adv[i].object for i in (1, 3, 5, 7)] == ["car", "frisbee", "cat", "couch"]
        assert [adv[i].object for i in (13, 15, 17)] == ["couch", "car", "cat"]


def test_question_wording_quirk_and_fixed():
    # the reference's template.replace("a", "an") also changes "image"
    assert question_text("apple") == "Is there an apple in the imange?"
    assert question_text("apple", variant="pope_fixed") == "Is there an apple in the image?"
    assert question_text("dog") == question_text("dog", variant="pope_fixed") == "Is there a dog in the image?"
    assert question_text("umbrella", "Is there a {} here?") == "Is there an umbrella here?"


def test_not_enough_images_or_negatives():
    with pytest.raises(ValueError, match="only 4 images have at least 3 objects, fewer than the 500 asked for"):
        build_pope(SEGMENTS)
    with pytest.raises(ValueError, match="no negative object left"):
        build_pope([{"image": "x", "objects": ["a", "b", "c"]}], img_num=0)  # the reference would loop forever


def _coco(tmp_path):
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 34, "name": "frisbee"},
            {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}, {"id": 63, "name": "couch"}]
    ids = {c["name"]: c["id"] for c in cats}
    images, anns = [], []
    for n, seg in enumerate(SEGMENTS, 1):
        images.append({"id": n, "file_name": seg["image"]})
        for o in seg["objects"] + seg["objects"][:1]:  # a repeated annotation: listed once
            if o in ids:
                anns.append({"id": len(anns) + 1, "image_id": n, "category_id": ids[o]})
    p = tmp_path / "instances.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return p


def _app():
    app = typer.Typer(cls=Commands)
    register(app)

    @app.callback()
    def _cb():
        pass

    return app


def test_pope_build_cli_from_coco_instances(tmp_path):
    inst = _coco(tmp_path)
    assert segments_from_coco(json.loads(inst.read_text()))[0] == {"image": "A.jpg", "image_id": 1,
                                                                   "objects": ["dog", "person", "frisbee"]}
    out = tmp_path / "pope"
    r = CliRunner().invoke(_app(), ["pope", "build", str(inst), "-o", str(out), "--img-num", "0", "--seed", "0"])
    assert r.exit_code == 0, r.output
    lines = (out / "coco_pope_popular.json").read_text().splitlines()
    assert len(lines) == 24
    assert lines[1] == '{"question_id": 2, "image": "D.jpg", "text": "Is there a car in the image?", "label": "no"}'
    built = build_pope(SEGMENTS, img_num=0, seed=0)
    for sp in ("random", "popular", "adversarial"):
        rows = [json.loads(x) for x in (out / f"coco_pope_{sp}.json").read_text().splitlines()]
        assert rows == [q.to_json() for q in built[sp]]
    assert json.loads((out / "coco_ground_truth_objects.json").read_text())["person"] == 4
    assert json.loads((out / "coco_co_occur.json").read_text())["person"][0] == "dog"
    bad = CliRunner().invoke(_app(), ["pope", "build", str(inst), "-o", str(out)])
    assert bad.exit_code == 2 and "fewer than the 500 asked for (pass a smaller --img-num" in bad.output
    assert "img_num" not in bad.output  # the flag's name, not the Python argument's


# labels yes/no alternating; answers with their readings (pope | pope_fixed) -> TP/FP/TN/FN
EVAL = [("yes", "Yes, there is a dog."),       # TP | TP
        ("no", "No. Yes, there is a cat."),    # TN | TN
        ("yes", "Yes, but it is small."),      # TP | TP
        ("no", "not sure"),                    # TN | TN
        ("yes", ""),                           # TP | TP
        ("no", "NO"),                          # FP | TN
        ("yes", "No! I see one."),             # TP | FN
        ("no", "There isn't a dog in the image.")]  # FP | TN
# pope: TP 4, FP 2, TN 2, FN 0 -> acc 6/8, precision 4/6, recall 1, F1 0.8, yes-ratio 6/8
# pope_fixed: TP 3, FP 0, TN 4, FN 1 -> acc 7/8, precision 1, recall 3/4, F1 6/7, yes-ratio 3/8
EXPECT = {"pope_accuracy": 0.75, "pope_precision": 4 / 6, "pope_recall": 1.0, "pope_f1": 0.8, "pope_yes_ratio": 0.75,
          "pope_fixed_accuracy": 0.875, "pope_fixed_precision": 1.0, "pope_fixed_recall": 0.75,
          "pope_fixed_f1": 6 / 7, "pope_fixed_yes_ratio": 0.375}


def _labels(tmp_path):
    p = tmp_path / "coco_pope_random.json"
    p.write_text("".join(json.dumps({"question_id": i, "image": f"{i}.jpg", "text": f"Is there a thing {i}?",
                                     "label": lab}) + "\n" for i, (lab, _) in enumerate(EVAL, 1)))
    return p


def _check(report):
    for k, v in EXPECT.items():
        assert report["corpus"][k] == pytest.approx(v, abs=1e-12), k


def test_eval_pope_answer_files(tmp_path):
    labels = _labels(tmp_path)
    pope_fmt = tmp_path / "answers.jsonl"  # POPE's own format, paired line by line
    pope_fmt.write_text("".join(json.dumps({"question": f"is there a thing {i}?", "answer": a}) + "\n"
                                for i, (_, a) in enumerate(EVAL, 1)))
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "pixscribe.metrics.eval_cli", "eval", "--metrics", "pope,pope_fixed",
                        "--pope-labels", str(labels), "--pred", str(pope_fmt), "-o", str(out), "--bootstrap", "50"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    _check(rep)
    assert rep["counts"]["pope"] == {"tp": 4, "fp": 2, "tn": 2, "fn": 0, "n": 8}
    assert rep["per_question"]["pope"]["6"] == {"answer": "NO", "read_as": "yes", "label": "no"}
    # LLaVA-style rows {question_id, text}, in another order: matched by question_id
    llava = tmp_path / "llava.jsonl"
    llava.write_text("".join(json.dumps({"question_id": i, "prompt": "x", "text": a}) + "\n"
                             for i, (_, a) in reversed(list(enumerate(EVAL, 1)))))
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope,pope_fixed", "--pope-labels", str(labels),
                                    "--pred", str(llava), "-o", str(out), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    _check(json.loads(out.read_text()))


def test_eval_pope_pixscribe_output_rows_and_bad_input(tmp_path):
    labels = _labels(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"id": str(i), "caption": a, "error": None} for i, (_, a) in enumerate(EVAL, 1)]
    rows.append({"id": "9", "caption": "Yes", "error": None})  # no such question: ignored
    pq.write_table(pa.Table.from_pylist(rows[:4]), run / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), run / "part-00001.parquet")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope", "--pope-labels", str(labels), "--pred", str(run),
                                    "-o", str(out), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["corpus"]["pope_accuracy"] == 0.75
    # an error row is a missing answer, reported and not scored
    rows[6] = {"id": "7", "caption": None, "error": "backend: boom"}
    pq.write_table(pa.Table.from_pylist(rows[4:]), run / "part-00001.parquet")
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope", "--pope-labels", str(labels), "--pred", str(run),
                                    "-o", str(out), "--bootstrap", "0"])
    rep = json.loads(out.read_text())
    assert rep["missing"] == {"count": 1, "ids": ["7"]} and rep["n_questions"] == 7
    assert "1 labelled questions have no answer" in r.output
    assert rep["corpus"]["pope_accuracy"] == pytest.approx(5 / 7)  # without 7 (a TP): TP 3 + TN 2 of 7
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"question": "q", "answer": "yes"}) + "\n")
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope", "--pope-labels", str(labels), "--pred", str(short)])
    assert r.exit_code == 2 and "1 answers for 8 questions" in r.output
    badlab = tmp_path / "bad.json"
    badlab.write_text(json.dumps({"question_id": 1, "text": "q", "label": "maybe"}) + "\n")
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope", "--pope-labels", str(badlab), "--pred", str(short)])
    assert r.exit_code == 2 and "bad.json: question 1 has no label 'yes' or 'no'" in r.output
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "pope,bleu", "--pope-labels", str(labels), "--pred", str(run)])
    assert r.exit_code == 2 and "drop bleu" in r.output


class ScriptedBackend(Backend):
    """Answers 'Yes, I see it.' for objects it 'sees' in the image it was given, else 'No.'; fails on kites."""

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
            obj = re.match(r"Is there an? (.+) in the ima", text).group(1)
            if obj == "kite":
                out.append(GenerationResult(error="backend: boom"))
            else:
                out.append(GenerationResult(text="Yes, I see it." if obj in self.sees[img] else "No."))
        return out


def test_ask_pope_with_a_backend():
    segs = SEGMENTS[:4] + [{"image": "K.jpg", "objects": ["kite", "person", "dog"]}]
    images = {s["image"]: f"img-{s['image']}" for s in segs}  # any object works as the 'image' for the fake
    sees = {f"img-{s['image']}": set(s["objects"]) | ({"cat"} if s["image"] == "A.jpg" else set()) for s in segs}
    be = ScriptedBackend(sees)
    qs = build_pope(segs, img_num=0, seed=0)["random"]
    raw = ask_pope(be, qs, images, batch_size=4)
    assert len(raw) == len(qs) == len(be.calls) == 30
    assert all(img == images[q.image] and text == q.text for (img, text), q in zip(be.calls, qs))
    assert all((a is None) == (q.object == "kite") for a, q in zip(raw, qs))
    res = run_pope(be, segs, images, img_num=0, seed=0)
    sets = build_pope(segs, img_num=0, seed=0)
    assert set(res) == {"random", "popular", "adversarial"}
    for sp in res:  # every question about a kite failed and is left out
        assert res[sp]["failed"] == sum(q.object == "kite" for q in sets[sp]) >= 1
        assert res[sp]["n"] == 30 - res[sp]["failed"]
    assert res["popular"]["recall"] == 1.0  # every present object is seen
    # the only false "yes" is a cat asked about A.jpg (the backend 'sees' one there)
    fp = [q for q in qs if q.label == "no" and q.image == "A.jpg" and q.object == "cat"]
    assert res["random"]["fp"] == len(fp)
