"""DLC-Bench (Lian et al. 2025, "Describe Anything", arXiv 2504.16060): region captions judged by an LLM
answering multiple-choice questions about each region, scored as its reference does.

Reference: GitHub NVlabs/describe-anything ``evaluation/eval_model_outputs.py`` @ 153ad3d
(Apache-2.0); data: ``qa.json`` and ``class_names.json`` of the DLC-Bench dataset.

Per region (key): a *recognition* question first ("Is it likely that the object in the
description is a <class> ...", plural when ``inflect`` says the class name is plural, with
``bus`` singular), then the region's positive and negative questions. Each question goes
to the judge in the reference's prompt (packaged verbatim, ``data/dlc_bench_prompts.json``)
with the caption, greedy, 300 tokens; the answer is read by :func:`parse_choice` (the
reference's ``parse_pred``) and scores its choice's value (no match: 0). A recognition
answered "No" caps every other answer at 0. Per region: the mean of the positives and of
the negatives (a region without negatives has no negative score); the corpus: the mean
positive score over regions, the mean negative score over regions that have one, and
their average (the reference's summary line).

Answers come from saved answers (the reference's ``*_eval.json``, its ``response`` lists)
where they exist, else from the judge (metrics/judge.py: cached, written to the transcript).
Where the reference stops (an unreadable recognition answer, a region without positive
questions, an empty answer) pixscribe leaves that region unscored and names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..backends.base import GenerationRequest, Sampling
from ..errors import InputFileError

LABELS = "abcde"
SAMPLING = Sampling(max_new_tokens=300, temperature=0.0, top_p=1.0)


@lru_cache(maxsize=1)
def prompts() -> dict[str, str]:
    return json.loads(resources.files(__package__).joinpath("data/dlc_bench_prompts.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _inflect() -> Any:
    from ..deps import require

    return require("inflect", extra="detailed", what="DLC-Bench's recognition questions").engine()


def recognition_question(class_name: str) -> dict[str, Any]:
    p = _inflect()
    plural = class_name != "bus" and p.singular_noun(class_name) is not False
    text = (prompts()["recognition_plural"].format(class_name=class_name) if plural
            else prompts()["recognition_singular"].format(a_class_name=p.a(class_name)))
    return {"question": text, "choices": [["Yes", "correct"], ["No", "incorrect"]], "type": "recognition"}


def question_prompt(caption: str, q: Mapping[str, Any]) -> str:
    body = f"{q['question']}\n" + "".join(f"{LABELS[i].upper()}. {c}\n" for i, (c, _) in enumerate(q["choices"]))
    return prompts()["eval_prompt"].format(pred_caption=caption, question_text_str=body.strip())


def question_request(caption: str, q: Mapping[str, Any]) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": [{"type": "text", "text": question_prompt(caption, q)}]}],
                             sampling=SAMPLING)


def parse_choice(answer: str, choices: Sequence[str]) -> int | None:
    """The index of the choice an answer names (the reference's ``parse_pred``), or None."""
    pred = answer.strip().lower()
    if not pred:
        return None  # the reference raises IndexError here
    found = []
    for i, choice in enumerate(choices):
        c = choice.strip().lower()
        if c == pred or pred == f"{LABELS[i]}. {c}" or pred == LABELS[i]:
            return i
        if c in pred:
            found.append((i, pred.index(c), len(c)))
    if len(found) == 1:
        return found[0][0]
    if pred[0] in LABELS and len(pred) > 1 and pred[1] == ".":
        return _in_range(LABELS.index(pred[0]), choices)
    if found:
        pos = max(found, key=lambda x: x[1])[1]
        at = [x for x in found if x[1] == pos]
        return max(at, key=lambda x: x[2])[0]
    longer = [(i, len(c.strip().lower())) for i, c in enumerate(choices) if pred in c.strip().lower()]
    if longer:
        return max(longer, key=lambda x: x[1])[0]
    if pred[0] in LABELS and (len(pred) == 1 or pred[1] == "\n"):
        return _in_range(LABELS.index(pred[0]), choices)
    return None


def _in_range(i: int, choices: Sequence[str]) -> int | None:
    return i if i < len(choices) else None  # the reference then raises IndexError


class RegionError(InputFileError):
    kind = "RegionError"  # as error rows and messages named it before it joined the family


@dataclass
class RegionScore:
    score: float
    pos: float
    neg: float | None
    recognized: bool
    answers: list[str] = field(default_factory=list)
    choices: list[int | None] = field(default_factory=list)


def score_region(questions: Sequence[Mapping[str, Any]], answers: Sequence[str]) -> RegionScore:
    """Score one region's questions (recognition first) from the judge's answers, in order."""
    picked = [parse_choice(a.strip(), [c for c, _ in q["choices"]]) for q, a in zip(questions, answers)]
    values = [q["choices"][i][1] if i is not None else 0 for q, i in zip(questions, picked)]
    pos: list[float] = []
    neg: list[float] = []
    recognized: bool | None = None
    for q, v in zip(questions, values):
        if q["type"] == "recognition":
            if v not in ("correct", "incorrect"):
                raise RegionError(f"the recognition answer {answers[0]!r} names no choice")
            recognized = v == "correct"
        elif q["type"] in ("positive", "negative"):
            if recognized is None:
                raise RegionError(f"a {q['type']} question comes before the recognition question")
            (pos if q["type"] == "positive" else neg).append(v if recognized else min(0, v))
        else:
            raise RegionError(f"question type {q['type']!r} is neither positive nor negative")
    if not pos:
        raise RegionError("the region has no positive question")
    return RegionScore((sum(pos) + sum(neg)) / (len(pos) + len(neg)), sum(pos) / len(pos),
                       sum(neg) / len(neg) if neg else None, bool(recognized), [a.strip() for a in answers], picked)


@dataclass
class DlcResult:
    corpus: dict[str, float]  # dlc_pos, dlc_neg, dlc_avg
    per_region: dict[str, dict[str, Any]]
    errors: dict[str, str]  # region -> why it is not scored
    missing: list[str]  # regions without a caption (and no default prediction)


def _answers(keys: Sequence[str], questions: Mapping[str, list[dict[str, Any]]], captions: Mapping[str, str],
             saved: Mapping[str, Sequence[str | None]], judge: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each region's answers: saved ones first, the rest asked of the judge in one batch."""
    out = {k: [None] * len(questions[k]) for k in keys}
    todo: list[tuple[str, int]] = []
    for k in keys:
        have = list(saved.get(k) or [])
        for i in range(len(questions[k])):
            if i < len(have) and have[i] is not None:
                out[k][i] = have[i]
            else:
                todo.append((k, i))
    errors: dict[str, str] = {}
    if todo and judge is None:
        for k in dict.fromkeys(k for k, _ in todo):
            errors[k] = "no saved answer for some questions and no judge (--judge or --judge-replay)"
    elif todo:
        results = judge.ask([question_request(captions[k], questions[k][i]) for k, i in todo])
        for (k, i), r in zip(todo, results):
            if r.ok:
                out[k][i] = r.text
            else:
                errors.setdefault(k, r.error or "judge: no answer")
    return {k: v for k, v in out.items() if k not in errors}, errors  # type: ignore[misc]


def dlc_bench(captions: Mapping[str, str], qa: Mapping[str, list[dict[str, Any]]], class_names: Mapping[str, str], *,
              saved: Mapping[str, Sequence[str | None]] | None = None, judge: Any = None,
              default_prediction: str | None = None) -> DlcResult:
    """Score the captions of every region of ``qa`` (the reference loops over qa.json's keys)."""
    caps: dict[str, str] = {}
    missing = []
    for k in map(str, qa):
        c = captions.get(k)
        if c is None or c.startswith("Error:"):
            if default_prediction is None:
                missing.append(k)
                continue
            c = default_prediction
        caps[k] = c
    errors: dict[str, str] = {}
    questions = {}
    for k in caps:
        if k not in class_names:
            errors[k] = "no class name in class_names.json"
            continue
        questions[k] = [recognition_question(class_names[k]), *qa[k]]
    answers, asked_errors = _answers(list(questions), questions, caps, saved or {}, judge)
    errors.update(asked_errors)
    per: dict[str, dict[str, Any]] = {}
    for k, ans in answers.items():
        try:
            r = score_region(questions[k], ans)
        except RegionError as exc:
            errors[k] = str(exc)
            continue
        per[k] = {"score": r.score, "pos": r.pos, "neg": r.neg, "recognized": r.recognized, "answers": r.answers,
                  "choices": r.choices}
    if not per:
        raise InputFileError(f"DLC-Bench: no region could be scored ({len(missing)} without a caption, "
                             f"{len(errors)} not scored, e.g. {next(iter(errors.items()), ('', ''))})")
    pos = sum(v["pos"] for v in per.values()) / len(per)
    negs = [v["neg"] for v in per.values() if v["neg"] is not None]
    neg = sum(negs) / len(negs) if negs else float("nan")
    return DlcResult({"dlc_pos": pos, "dlc_neg": neg, "dlc_avg": (pos + neg) / 2}, per, errors, missing)


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(f"{what} {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{what} {path}: not valid JSON ({exc.msg})") from None


def read_bench(folder: str | Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """DLC-Bench's ``qa.json`` and ``class_names.json`` (keys as strings)."""
    d = Path(folder)
    qa, names = _json(d / "qa.json", "--dlc-data"), _json(d / "class_names.json", "--dlc-data")
    if not isinstance(qa, dict) or not isinstance(names, dict):
        raise InputFileError(f"--dlc-data {d}: qa.json and class_names.json are JSON objects keyed by region")
    return {str(k): v for k, v in qa.items()}, {str(k): v for k, v in names.items()}


def read_saved_answers(path: str | Path) -> dict[str, list[str | None]]:
    """The judge's answers from the reference's evaluation file (``{key: {"response": [...]}}``)."""
    data = _json(Path(path), "--dlc-responses")
    if not isinstance(data, dict):
        raise InputFileError(f"--dlc-responses {path}: expected the reference's *_eval.json (an object keyed by "
                             "region)")
    return {str(k): v["response"] for k, v in data.items() if isinstance(v, dict) and "response" in v}


__all__ = ["DlcResult", "RegionError", "dlc_bench", "parse_choice", "question_prompt", "question_request",
           "read_bench", "read_saved_answers", "recognition_question", "score_region"]
