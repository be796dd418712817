"""AMBER (Wang et al. 2023, arXiv 2311.07397): hallucination of MLLMs, LLM-free, as its reference computes it.

Reference: GitHub junyangwang0410/AMBER ``inference.py`` @ 534babf, with its ``data/``
(``annotations.json``, ``relation.json``, ``safe_words.txt``; Apache-2.0). Responses are
``[{"id": N, "response": TEXT}]``; the annotation of id N is ``annotations[N - 1]``.

**Generative** (a description per image; annotation ``truth`` and ``hallu`` objects):
every noun of the response (:class:`~.amber_text.NounExtractor`) that is one of the
association file's words is checked, in order: a safe word is skipped; a truth object or
one of its associated words marks that truth object covered; else a ``hallu`` object or
an associated word marks that one (the reference does not stop there); then the first
``hallu`` word, then the first truth word, whose similarity exceeds 0.8 marks its object,
and a noun matching a truth word this way is not hallucinated; every other noun is.

- CHAIR = hallucinated nouns / nouns; Cover = covered truth objects / truth objects;
  Hal = 100 - images without a hallucinated noun / images; Cog = marked ``hallu`` objects /
  ``hallu`` objects. All x100, rounded to one decimal.

**Discriminative** (``Yes`` / ``No`` answers, compared exactly): accuracy, and precision,
recall and F1 of "no", over all questions and per dimension (existence; attribute with its
state, number and action; relation).

Reference quirks kept: every denominator starts at 0.001 (``data/metrics.txt``), so a
dimension with no items scores 0.0 and every score is a hair low; F1 is taken from the
*rounded* precision and recall with ``+ 0.0001`` in its denominator (``+ 0.001`` for
existence); an answer other than exactly ``Yes`` or ``No`` is wrong either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputFileError

DIMENSIONS = {  # annotation type -> the reference's counter prefix
    "discriminative-attribute-state": "as", "discriminative-attribute-number": "an",
    "discriminative-attribute-action": "aa", "discriminative-hallucination": "ha",
}  # any other discriminative type ("discriminative-relation", "relation") counts as relation ("asso")
START = 0.001  # the reference's initial denominators


class AmberInputError(InputFileError):
    kind = "AmberInputError"  # as error rows and messages named it before it joined the family


@dataclass
class AmberData:
    annotations: list[dict[str, Any]]
    association: dict[str, list[str]]
    safe_words: list[str]
    words: frozenset[str] = field(init=False)  # every word of the association file (the reference's hallucination_words)

    def __post_init__(self) -> None:
        self.words = frozenset(list(self.association) + [w for v in self.association.values() for w in v])

    @classmethod
    def load(cls, folder: str | Path) -> "AmberData":
        d = Path(folder)
        try:
            ann = json.loads((d / "annotations.json").read_text(encoding="utf-8"))
            assoc = json.loads((d / "relation.json").read_text(encoding="utf-8"))
            safe = [line.split("\n")[0] for line in (d / "safe_words.txt").open(encoding="utf-8", newline="")]
        except FileNotFoundError as exc:
            raise AmberInputError(f"--amber-data {d}: {Path(exc.filename).name} is missing (AMBER's data/ folder "
                                  "holds annotations.json, relation.json and safe_words.txt)") from None
        except json.JSONDecodeError as exc:
            raise AmberInputError(f"--amber-data {d}: not valid JSON ({exc.msg})") from None
        return cls(ann, assoc, safe)

    def annotation(self, id_: int) -> dict[str, Any]:
        if not 1 <= id_ <= len(self.annotations):
            raise AmberInputError(f"response id {id_} has no AMBER annotation (ids are 1..{len(self.annotations)})")
        return self.annotations[id_ - 1]


class _Objects:
    """Objects (``truth`` or ``hallu``) with their associated words: the first word equal (or similar) marks its object."""

    def __init__(self, objects: Sequence[str], association: Mapping[str, list[str]]):
        self.words: list[str] = []
        self.owner: list[int] = []
        try:
            for k, o in enumerate(objects):
                self.words += association[o]
                self.owner += [k] * len(association[o])
        except KeyError as exc:
            raise AmberInputError(f"annotation object {exc.args[0]!r} is not in relation.json") from None
        self.words += list(objects)
        self.owner += range(len(objects))
        self.marked = [0] * len(objects)
        self.index = {w: j for j, w in reversed(list(enumerate(self.words)))}  # first occurrence

    def mark_equal(self, noun: str) -> bool:
        j = self.index.get(noun)
        if j is not None:
            self.marked[self.owner[j]] = 1
        return j is not None

    def mark_similar(self, noun: str, similar: Callable[[str, str], bool]) -> bool:
        for j, w in enumerate(self.words):
            if similar(noun, w):
                self.marked[self.owner[j]] = 1
                return True
        return False


def generative_item(nouns: Sequence[str], ann: Mapping[str, Any], data: AmberData,
                    similar: Callable[[str, str], bool]) -> dict[str, Any]:
    """One description: its object nouns, which are hallucinated, and the marked objects."""
    nouns = [n for n in nouns if n in data.words]
    safe, hallu = _Objects(ann["truth"], data.association), _Objects(ann["hallu"], data.association)
    safe_words = set(data.safe_words)
    flags = [0] * len(nouns)
    for i, noun in enumerate(nouns):
        if noun in safe_words or safe.mark_equal(noun):
            continue
        hallu.mark_equal(noun)
        hallu.mark_similar(noun, similar)
        if safe.mark_similar(noun, similar):
            continue
        flags[i] = 1
    return {"nouns": nouns, "hallucinated": [n for n, f in zip(nouns, flags) if f], "chair": flags,
            "covered": safe.marked, "cog": hallu.marked}


def _pct(score: float, num: float) -> float:
    return round(score / num * 100, 1)


def _f1(p: float, r: float, eps: float) -> float:
    return round(2 * (p / 100) * (r / 100) / ((p / 100) + (r / 100) + eps) * 100, 1)


class _Counts:
    """The reference's counters for one group of questions (each denominator starting at 0.001)."""

    def __init__(self) -> None:
        self.correct = self.no_score = self.ans_no_score = 0
        self.n = self.no_num = self.ans_no_num = START

    def add(self, truth: str, response: str) -> None:
        self.n += 1
        if truth == "yes":
            self.correct += response == "Yes"
        else:
            self.no_num += 1
            self.correct += response == "No"
            self.no_score += response == "No"
        if response == "No":
            self.ans_no_num += 1
            self.ans_no_score += truth == "no"

    def scores(self, eps: float = 0.0001) -> dict[str, float]:
        p, r = _pct(self.ans_no_score, self.ans_no_num), _pct(self.no_score, self.no_num)
        return {"accuracy": _pct(self.correct, self.n), "precision": p, "recall": r, "f1": _f1(p, r, eps)}


def _attribute(c: Mapping[str, _Counts]) -> dict[str, float]:
    """The attribute dimension: state, number and action pooled (sums of their counters)."""
    a, b, d = c["as"], c["an"], c["aa"]  # summed in this order, each denominator 0.001-started, as the reference
    p = _pct(a.ans_no_score + b.ans_no_score + d.ans_no_score, a.ans_no_num + b.ans_no_num + d.ans_no_num)
    r = _pct(a.no_score + b.no_score + d.no_score, a.no_num + b.no_num + d.no_num)
    return {"accuracy": _pct(a.correct + b.correct + d.correct, a.n + b.n + d.n), "precision": p, "recall": r,
            "f1": _f1(p, r, 0.0001)}


EVALUATION_TYPES = ("a", "g", "d", "de", "da", "dr")


@dataclass
class AmberResult:
    corpus: dict[str, float]  # amber_chair ... amber_relation_f1, as the reference prints them
    per_item: dict[str, dict[str, Any]]  # response id -> its nouns and flags, or its answer and truth
    info: dict[str, Any]


def _sections(evaluation_type: str) -> set[str]:
    if evaluation_type not in EVALUATION_TYPES:
        raise AmberInputError(f"AMBER evaluation type {evaluation_type!r}: one of {', '.join(EVALUATION_TYPES)}")
    return {"a": {"g", "de", "da", "dr"}, "d": {"de", "da", "dr"}}.get(evaluation_type, {evaluation_type})


def amber(responses: Sequence[Mapping[str, Any]], data: AmberData, nouns: Callable[[str], list[str]],
          similarity: Callable[[str, str], float], *, threshold: float = 0.8,
          evaluation_type: str = "a") -> AmberResult:
    """Score responses ``[{"id", "response"}]`` as ``inference.py --evaluation_type T`` does."""
    sections = _sections(evaluation_type)

    def similar(a: str, b: str) -> bool:
        return similarity(a, b) > threshold

    g = {"chair_score": 0, "chair_num": START, "cover_score": 0, "cover_num": START, "cog_score": 0,
         "cog_num": START, "non_hallu": 0, "images": START}
    disc = {k: _Counts() for k in ("all", "as", "an", "aa", "ha", "asso")}
    per: dict[str, dict[str, Any]] = {}
    for item in responses:
        ann = data.annotation(int(item["id"]))
        if ann["type"] == "generative":
            r = generative_item(nouns(item["response"]), ann, data, similar)
            g["chair_score"] += sum(r["chair"])
            g["chair_num"] += len(r["chair"])
            g["cover_score"] += sum(r["covered"])
            g["cover_num"] += len(r["covered"])
            g["cog_score"] += sum(r["cog"])
            g["cog_num"] += len(r["cog"])
            g["non_hallu"] += sum(r["chair"]) == 0
            g["images"] += 1
        else:
            r = {"answer": item["response"], "truth": ann["truth"], "type": ann["type"]}
            disc["all"].add(ann["truth"], item["response"])
            disc[DIMENSIONS.get(ann["type"], "asso")].add(ann["truth"], item["response"])
        per[str(item["id"])] = r
    corpus: dict[str, float] = {}
    if "g" in sections:
        corpus.update(amber_chair=_pct(g["chair_score"], g["chair_num"]), amber_cover=_pct(g["cover_score"], g["cover_num"]),
                      amber_hal=round(100 - g["non_hallu"] / g["images"] * 100, 1),
                      amber_cog=_pct(g["cog_score"], g["cog_num"]))
    if {"de", "da", "dr"} <= sections:
        corpus.update({f"amber_{k}": v for k, v in disc["all"].scores().items()})
    if "de" in sections:
        corpus.update({f"amber_existence_{k}": v for k, v in disc["ha"].scores(eps=0.001).items()})
    if "da" in sections:
        corpus.update({f"amber_attribute_{k}": v for k, v in _attribute(disc).items()})
        for name, key in (("state", "as"), ("number", "an"), ("action", "aa")):
            corpus.update({f"amber_{name}_{k}": v for k, v in disc[key].scores().items()})
    if "dr" in sections:
        corpus.update({f"amber_relation_{k}": v for k, v in disc["asso"].scores().items()})
    counts = {"nouns": int(round(g["chair_num"] - START)), "descriptions": int(round(g["images"] - START)),
              "questions": int(round(disc["all"].n - START))}
    return AmberResult(corpus, per, {"evaluation_type": evaluation_type, "threshold": threshold, "counts": counts})


def read_responses(path: str | Path) -> list[dict[str, Any]]:
    """AMBER's response file: a JSON list of ``{"id": N, "response": TEXT}``."""
    p = Path(path)
    try:
        rows = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AmberInputError(f"--pred {p}: no such file") from None
    except json.JSONDecodeError as exc:
        raise AmberInputError(f"--pred {p}: not valid JSON ({exc.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r and isinstance(r.get("response"), str)
                                             for r in rows):
        raise AmberInputError(f"--pred {p}: AMBER responses are a JSON list of {{\"id\": N, \"response\": TEXT}}")
    return rows


__all__ = ["AmberData", "AmberInputError", "AmberResult", "EVALUATION_TYPES", "amber", "generative_item",
           "read_responses"]
