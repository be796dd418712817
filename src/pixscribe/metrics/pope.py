"""POPE (Li et al. 2023) answers read and scored exactly as RUCAIBox/POPE ``evaluate.py`` does.

Reading an answer (the reference, also Image Textualization's ``eval_pope.py``): keep the
text before the first ``.``, delete commas, split on single spaces; the answer is "no" if
one of the pieces is exactly ``No``, ``no`` or ``not``, and "yes" otherwise (an empty
answer, "NO", "No!" and "There isn't" are all "yes"). ``pope_fixed`` ends the first
sentence at ``. ! ?`` or a line break, splits words at any non-letter, ignores case and
also reads ``n't`` as a negation (the differences are listed in docs/metrics.md).

Scores (the reference's formulas): accuracy, precision and recall of "yes", F1, and the
yes-ratio (the share of answers read as "yes"). Where the reference divides by zero (and
stops with an error) the score is NaN here. Question building: :mod:`.pope_build`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .pope_build import SPLITS, VARIANTS, PopeQuestion, build_pope

_FIXED_SENTENCE_END = re.compile(r"[.!?\n]")
_FIXED_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def answer_is_yes(text: str, variant: str = "pope") -> bool:
    """Whether POPE reads ``text`` as "yes"."""
    if variant == "pope_fixed":
        first = _FIXED_SENTENCE_END.split(text, maxsplit=1)[0]
        words = _FIXED_WORD.findall(first.lower().replace("’", "'"))
        return not any(w in ("no", "not") or w.endswith("n't") for w in words)
    if variant != "pope":
        raise ConfigError(f"POPE variant must be one of {VARIANTS}, got {variant!r}")
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return not ("No" in words or "not" in words or "no" in words)


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def score_pope(labels: Sequence[bool], answers: Sequence[bool]) -> dict[str, float]:
    """The reference's counts and scores; ``labels``/``answers``: True for "yes"."""
    if len(labels) != len(answers):
        raise ValueError(f"POPE: {len(answers)} answers for {len(labels)} labelled questions")
    tp = sum(1 for lab, a in zip(labels, answers) if a and lab)
    fp = sum(1 for lab, a in zip(labels, answers) if a and not lab)
    tn = sum(1 for lab, a in zip(labels, answers) if not a and not lab)
    fn = sum(1 for lab, a in zip(labels, answers) if not a and lab)
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else float("nan")
    return {"accuracy": _div(tp + tn, tp + tn + fp + fn), "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": _div(sum(1 for a in answers if a), len(answers)),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": len(labels)}


def pope_report(labels: Sequence[bool], answers: Sequence[str], variant: str = "pope",
                ids: Sequence[str] | None = None, missing: Sequence[str] = (), bootstrap: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """A ``pixscribe eval`` report for POPE answers (``missing``: labelled questions without an answer)."""
    from .bootstrap import bootstrap_ci

    parsed = [answer_is_yes(a, variant) for a in answers]
    s = score_pope(labels, parsed)
    corpus = {f"{variant}_{k}": float(s[k]) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    per = {f"{variant}_accuracy": [float(p == lab) for p, lab in zip(parsed, labels)],
           f"{variant}_yes_ratio": [float(p) for p in parsed]}
    ci = bootstrap_ci({k: np.asarray(v) for k, v in per.items()}, n_resamples=bootstrap, seed=seed)
    ids = list(ids) if ids is not None else [str(i + 1) for i in range(len(labels))]
    return {
        "corpus": corpus,
        "ci95": ci,
        "per_question": {k: {"answer": a, "read_as": "yes" if p else "no", "label": "yes" if lab else "no"}
                         for k, a, p, lab in zip(ids, answers, parsed, labels)},
        "counts": {k: s[k] for k in ("tp", "fp", "tn", "fn", "n")},
        "n_questions": len(labels),
        "missing": {"count": len(missing), "ids": list(missing)},
        "info": {"metrics": [variant], "variant": variant},
    }


def ask_pope(
    backend: Any,
    questions: Sequence[PopeQuestion],
    images: Mapping[str, Any] | Callable[[str], Any],
    batch_size: int = 16,
    max_new_tokens: int = 8,
) -> list[str | None]:
    """Ask a Backend each question (its text as built) with its image; the raw answers.

    A failed request gives ``None``. ``images`` maps a question's ``image`` (file name) to a
    PIL image, or is a callable ``image -> PIL image``.
    """
    from ..backends.base import GenerationRequest, Sampling

    get = images if callable(images) else images.__getitem__
    raw: list[str | None] = []
    for s in range(0, len(questions), batch_size):
        chunk = questions[s:s + batch_size]
        reqs = [GenerationRequest.simple(q.text, [get(q.image)], sampling=Sampling(max_new_tokens=max_new_tokens),
                                         id=str(q.question_id)) for q in chunk]
        raw.extend(r.text if r.ok else None for r in backend.generate(reqs))
    return raw


def run_pope(backend: Any, segments: Sequence[Mapping[str, Any]], images: Any, splits: Sequence[str] = SPLITS,
             variant: str = "pope", **build: Any) -> dict[str, dict[str, float]]:
    """Build the question sets, ask the backend, score each split (failed requests are left out)."""
    sets = build_pope(segments, variant=variant, **build)
    out = {}
    for sp in splits:
        qs = sets[sp]
        raw = ask_pope(backend, qs, images)
        kept = [(q, a) for q, a in zip(qs, raw) if a is not None]
        s = score_pope([q.label == "yes" for q, _ in kept], [answer_is_yes(a, variant) for _, a in kept])
        s["failed"] = len(qs) - len(kept)
        out[sp] = s
    return out

