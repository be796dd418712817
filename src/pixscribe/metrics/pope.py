"""POPE (Li et al. 2023): polling-based yes/no object probing.

:func:`build_pope` makes the three question sets from ground-truth object sets:

- ``random``: negatives drawn uniformly from objects absent from the image;
- ``popular``: negatives are the most frequent objects of the dataset that are absent;
- ``adversarial``: negatives are the absent objects that co-occur most with the image's
  objects.

Each image gets up to ``k`` positives (present objects) and the same number of
negatives, seeded. :func:`ask_pope` asks any :class:`pixscribe.backends.base.Backend`
the questions with the image and parses yes/no; :func:`score_pope` gives accuracy,
precision, recall, F1 and the yes-ratio (an unparseable answer counts as "no", and
is counted under ``unparsed``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

QUESTION = "Is there a {} in the image? Answer yes or no."
SPLITS = ("random", "popular", "adversarial")


@dataclass
class PopeQuestion:
    image_id: str
    object: str
    label: bool  # True = the object is present
    split: str

    @property
    def text(self) -> str:
        return QUESTION.format(self.object)


def build_pope(
    objects: Mapping[str, Iterable[str]],
    split: str = "random",
    k: int = 3,
    seed: int = 0,
    vocabulary: Sequence[str] | None = None,
) -> list[PopeQuestion]:
    if split not in SPLITS:
        raise ValueError(f"POPE split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(seed)
    objs = {str(i): sorted(set(o)) for i, o in objects.items()}
    freq = Counter(o for os_ in objs.values() for o in os_)
    vocab = sorted(set(vocabulary) if vocabulary else set(freq))
    popular = sorted(vocab, key=lambda o: (-freq.get(o, 0), o))
    co: dict[str, Counter] = {}
    for os_ in objs.values():
        for a in os_:
            c = co.setdefault(a, Counter())
            for b in os_:
                if a != b:
                    c[b] += 1
    out: list[PopeQuestion] = []
    for img in sorted(objs):
        present = objs[img]
        if not present:
            continue
        pos = rng.sample(present, min(k, len(present)))
        here = set(present)
        absent = [o for o in vocab if o not in here]
        n_neg = min(len(pos), len(absent))
        if split == "random":
            neg = rng.sample(absent, n_neg)
        elif split == "popular":
            neg = [o for o in popular if o not in here][:n_neg]
        else:
            score: Counter = Counter()
            for p in present:
                score.update(co.get(p, Counter()))
            ranked = sorted(absent, key=lambda o: (-score.get(o, 0), -freq.get(o, 0), o))
            neg = ranked[:n_neg]
        for o in pos:
            out.append(PopeQuestion(img, o, True, split))
        for o in neg:
            out.append(PopeQuestion(img, o, False, split))
    return out


_YES = re.compile(r"\b(yes|yeah|yep|true|correct)\b", re.I)
_NO = re.compile(r"\b(no|not|nope|false|none|there is no|isn't|aren't)\b", re.I)


def parse_yes_no(answer: str | None) -> bool | None:
    """True/False from a free-form answer: the first yes-like or no-like word wins."""
    if not answer:
        return None
    y = _YES.search(answer)
    n = _NO.search(answer)
    if y and (not n or y.start() < n.start()):
        return True
    if n:
        return False
    return None


def score_pope(labels: Sequence[bool], answers: Sequence[bool | None]) -> dict[str, float]:
    if len(labels) != len(answers):
        raise ValueError("labels and answers differ in length")
    tp = fp = tn = fn = unparsed = 0
    for lab, ans in zip(labels, answers):
        if ans is None:
            unparsed += 1
            ans = False
        if ans and lab:
            tp += 1
        elif ans and not lab:
            fp += 1
        elif not ans and lab:
            fn += 1
        else:
            tn += 1
    n = len(labels)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "yes_ratio": (tp + fp) / n if n else 0.0,
        "n": float(n),
        "unparsed": float(unparsed),
    }


def ask_pope(
    backend: Any,
    questions: Sequence[PopeQuestion],
    images: Mapping[str, Any] | Callable[[str], Any],
    batch_size: int = 16,
    max_new_tokens: int = 8,
) -> tuple[list[bool | None], list[str | None]]:
    """Ask a Backend each question with its image; returns (parsed answers, raw texts).

    A failed request gives ``None`` (counted as unparsed). ``images`` maps image id to a
    PIL image, or is a callable id -> image.
    """
    from ..backends.base import GenerationRequest, Sampling

    get = images if callable(images) else images.__getitem__
    parsed: list[bool | None] = []
    raw: list[str | None] = []
    for s in range(0, len(questions), batch_size):
        chunk = questions[s:s + batch_size]
        reqs = [GenerationRequest.simple(q.text, [get(q.image_id)], sampling=Sampling(max_new_tokens=max_new_tokens),
                                         id=q.image_id) for q in chunk]
        for r in backend.generate(reqs):
            raw.append(r.text if r.ok else None)
            parsed.append(parse_yes_no(r.text) if r.ok else None)
    return parsed, raw


def run_pope(backend: Any, objects: Mapping[str, Iterable[str]], images: Any, splits: Iterable[str] = SPLITS,
             k: int = 3, seed: int = 0) -> dict[str, dict[str, float]]:
    """All three splits end to end: {split: scores}."""
    out = {}
    for sp in splits:
        qs = build_pope(objects, sp, k=k, seed=seed)
        ans, _ = ask_pope(backend, qs, images)
        out[sp] = score_pope([q.label for q in qs], ans)
    return out
