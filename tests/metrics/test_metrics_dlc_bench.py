"""DLC-Bench equals its reference (NVlabs/describe-anything evaluation/eval_model_outputs.py @ 153ad3d) on a
fixture made here, scored from saved judge answers; and judged through the engine (cache, transcript, replay).

tests/data/dlc_bench/: 6 regions (bench/qa.json, bench/class_names.json: singular, plural, "bus"),
captions.json (one "Error:" caption, one missing: the default prediction "A thing."), and
saved_eval.json, the judge's answers in the reference's evaluation-file format, chosen to walk
every branch of its answer parser. Expected: what the reference printed and saved, run with
``--default-prediction "A thing."`` (docs/metrics.md).
"""

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.metrics.dlc_bench import (
    dlc_bench,
    parse_choice,
    question_prompt,
    read_bench,
    read_saved_answers,
    recognition_question,
    score_region,
)
from pixscribe.metrics.judge import CachedJudge

DATA = Path(__file__).resolve().parents[1] / "data" / "dlc_bench"
REF_CORPUS = {"dlc_pos": 0.3333333333333333, "dlc_neg": -0.2}  # the reference's avg_pos, avg_neg
REF_REGIONS = {"101": (1.0, 1.0, 1.0), "102": (-0.3333333333333333, -1.0, 0.0), "103": (1.0, 1.0, None),
               "104": (0.0, 0.0, 0.0), "105": (0.0, 1.0, -1.0), "106": (-0.5, 0.0, -1.0)}  # score, pos, neg
REF_CHOICES = {"101": [0, 3, 3, 1], "102": [0, 2, 0, 1], "103": [0, 3], "104": [1, 3, 1], "105": [0, 3, 0],
               "106": [1, 1, 0]}  # the reference's pred_index per question, recognition first


def _inputs():
    qa, names = read_bench(DATA / "bench")
    return json.loads((DATA / "captions.json").read_text()), qa, names


def _check(res):
    assert res.corpus["dlc_pos"] == REF_CORPUS["dlc_pos"] and res.corpus["dlc_neg"] == REF_CORPUS["dlc_neg"]
    assert res.corpus["dlc_avg"] == (REF_CORPUS["dlc_pos"] + REF_CORPUS["dlc_neg"]) / 2
    assert {k: (v["score"], v["pos"], v["neg"]) for k, v in res.per_region.items()} == REF_REGIONS
    assert {k: v["choices"] for k, v in res.per_region.items()} == REF_CHOICES


def test_equals_the_reference_from_saved_answers():
    caps, qa, names = _inputs()
    res = dlc_bench(caps, qa, names, saved=read_saved_answers(DATA / "saved_eval.json"), default_prediction="A thing.")
    _check(res)
    assert res.errors == {} and res.missing == []
    # without a default prediction the two regions without a caption are missing, not scored
    assert dlc_bench(caps, qa, names, saved=read_saved_answers(DATA / "saved_eval.json")).missing == ["104", "106"]


class SavedJudge(Backend):
    """Answers each question prompt with the saved answer for it (so the judged path must give the same numbers)."""

    name = "saved"
    model = "saved-judge"

    def __init__(self):
        super().__init__()
        caps, qa, names = _inputs()
        saved = read_saved_answers(DATA / "saved_eval.json")
        self.by_prompt = {}
        for k, answers in saved.items():
            qs = [recognition_question(names[k]), *qa[k]]
            for q, a in zip(qs, answers):
                self.by_prompt[question_prompt(caps.get(k) if k in ("101", "102", "103", "105") else "A thing.", q)] = a
        self.asked = 0

    def _generate(self, requests):
        self.asked += len(requests)
        return [GenerationResult(text=self.by_prompt[r.messages[0]["content"][0]["text"]]) for r in requests]


def test_judged_through_the_engine_then_replayed(tmp_path):
    caps, qa, names = _inputs()
    backend = SavedJudge()
    judge = CachedJudge(backend)
    _check(dlc_bench(caps, qa, names, judge=judge, default_prediction="A thing."))
    assert backend.asked == sum(len(v) + 1 for v in qa.values())  # one request per question, recognition included
    info = judge.write_transcript(tmp_path / "t.jsonl")
    from pixscribe.metrics.judge import make_judge

    replay = make_judge(None, replay=tmp_path / "t.jsonl")
    _check(dlc_bench(caps, qa, names, judge=replay, default_prediction="A thing."))
    assert replay.write_transcript(tmp_path / "t2.jsonl")["sha256"] == info["sha256"]
    # saved answers go first: only the questions without one reach the judge
    partial = {k: v[:1] for k, v in read_saved_answers(DATA / "saved_eval.json").items()}
    backend.asked = 0
    _check(dlc_bench(caps, qa, names, saved=partial, judge=CachedJudge(backend), default_prediction="A thing."))
    assert backend.asked == sum(len(v) for v in qa.values())


# (answer, choices) -> what the reference's parse_pred returned for it (run in the reference's environment)
@pytest.mark.parametrize("answer,choices,want", [
    ("B", ["yes", "no"], 1), ("b. no", ["yes", "no"], 1), ("No", ["Yes", "No"], 1),
    ("The answer: not mentioned at all", ["not mentioned", "mentioned"], 1),  # the later first occurrence wins
    ("x: mentioned, and not mentioned", ["not mentioned", "mentioned"], 0),
    ("red and blue", ["red", "blue", "red and blue"], 2),  # an exact choice
    ("c.", ["one", "two", "three"], 2), ("a\nbecause", ["one", "two"], 0), ("two", ["one", "two or more"], 1),
    ("maybe", ["yes", "no"], None),
])
def test_parse_choice_as_the_reference(answer, choices, want):
    assert parse_choice(answer, choices) == want


@pytest.mark.parametrize("answer", ["", "c", "e."])
def test_parse_choice_where_the_reference_raises(answer):
    # the reference raises IndexError ("", "c") or returns 4 and then raises on choices[4] ("e."): no choice here
    assert parse_choice(answer, ["yes", "no"]) is None


def test_region_errors_are_named():
    rec = recognition_question("apple")
    pos = {"question": "q", "choices": [["a", 1], ["b", 0]], "type": "positive"}
    with pytest.raises(ValueError, match="recognition answer 'maybe' names no choice"):
        score_region([rec, pos], ["maybe", "a"])
    with pytest.raises(ValueError, match="no positive question"):
        score_region([rec], ["Yes"])
    assert score_region([rec, pos], ["No", "a"]).score == 0  # not recognised: capped at 0


def test_cli_with_saved_answers_and_errors(tmp_path):
    from pixscribe.commands import Commands
    from pixscribe.metrics.eval_cli import register

    app = typer.Typer(cls=Commands)
    register(app)
    app.callback()(lambda: None)
    out = tmp_path / "d.json"
    args = ["eval", "--metrics", "dlc_bench", "--pred", str(DATA / "captions.json"), "--dlc-data", str(DATA / "bench"),
            "--dlc-responses", str(DATA / "saved_eval.json"), "-o", str(out)]
    r = CliRunner().invoke(app, args + ["--detail-option", "dlc_bench.default_prediction=A thing."])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["corpus"]["dlc_pos"] == REF_CORPUS["dlc_pos"] and "judge" not in rep["info"]
    r = CliRunner().invoke(app, args)  # no default prediction: 2 missing regions, the rest scored
    assert r.exit_code == 0 and json.loads(out.read_text())["missing"]["ids"] == ["104", "106"]
    r = CliRunner().invoke(app, args[:-4] + ["-o", str(out)])  # neither saved answers nor a judge
    assert r.exit_code == 2 and "dlc_bench needs an LLM judge" in r.output
