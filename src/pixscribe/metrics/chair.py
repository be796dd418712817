"""CHAIR-s and CHAIR-i (Rohrbach et al. 2018) exactly as the reference computes them.

Reference: GitHub LisaAnne/Hallucination ``utils/chair.py`` and ``data/synonyms.txt``
(commit 6e4d33c; the synonym list is packaged verbatim in ``data/chair_synonyms.txt``).
For each caption the reference

1. lower-cases it and tokenises it with ``nltk.word_tokenize`` (:mod:`.wordtok`);
2. singularises every token with ``pattern.en.singularize`` (:mod:`.singular`);
3. joins the two-word phrases of its list, left to right (``hot dog``, ``teddy bear``,
   ``traffic light``...), maps ``baby|adult <animal>`` to the animal and
   ``passenger jet|train`` to the vehicle (so no person is counted), ``bow tie`` to
   ``tie``, ``toilet seat`` to ``toilet`` and ``wine glas`` to ``wine glass``;
4. drops every ``seat`` when the caption also has ``toilet``;
5. keeps the words that are in the synonym list and maps each to its COCO category.

Every mention counts: "a dog chasing another dog" is two ``dog`` mentions.

- CHAIR-i = hallucinated mentions / all mentions (over the corpus)
- CHAIR-s = captions with a hallucinated mention / all captions

An image's ground truth is the categories of its COCO instance annotations plus the
categories its reference captions mention (found the same way).

``chair_fixed`` corrects the reference's bugs (listed in docs/metrics.md): synonym
entries are stripped and lower-cased (``motor bike``, ``cheesecake``, ``iphone`` match),
a word that is already an object word is not singularised (a singular ``bus`` is seen),
a plural whose stem is an object word is reduced to it (``ties``, ``collies``), and the
three-word ``stove top oven`` of the reference's two-word list is one mention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import ConfigError
from .singular import singularize
from .wordtok import word_tokenize

VARIANTS = ("chair", "chair_fixed")

# the reference's "double words" (its list, duplicates included; "stove top oven" has three words)
_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "hot dog", "teddy bear", "home plate",
    "train track",
)
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
_VEHICLES = ("jet", "train")


@dataclass(frozen=True)
class ChairVocabulary:
    """One variant's object words, their categories and its phrase rules."""

    variant: str
    objects: frozenset[str]          # every synonym (the reference's ``mscoco_objects``)
    category: Mapping[str, str]      # synonym -> COCO category (first entry of its line)
    phrases: Mapping[str, str]       # "w1 w2" (or "w1 w2 w3" in chair_fixed) -> the word it stands for
    singular: Callable[[str], str]

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(self.category.values()))


def synonym_lines() -> list[str]:
    """The packaged synonym file's lines, as the reference reads them."""
    text = resources.files(__package__).joinpath("data/chair_synonyms.txt").read_text(encoding="utf-8")
    return text.splitlines(keepends=True)


def _phrase_rules(fixed: bool) -> dict[str, str]:
    rules = {p: p for p in _DOUBLE_WORDS if fixed or len(p.split()) == 2}
    for a in _ANIMALS:
        rules[f"baby {a}"] = a
        rules[f"adult {a}"] = a
    for v in _VEHICLES:
        rules[f"passenger {v}"] = v
    rules["bow tie"] = "tie"
    rules["toilet seat"] = "toilet"
    rules["wine glas"] = "wine glass"
    return rules


@lru_cache(maxsize=None)
def vocabulary(variant: str = "chair") -> ChairVocabulary:
    if variant not in VARIANTS:
        raise ConfigError(f"CHAIR variant must be one of {VARIANTS}, got {variant!r}")
    fixed = variant == "chair_fixed"
    category: dict[str, str] = {}
    for line in synonym_lines():
        entries = line.strip().split(", ")
        if fixed:
            entries = [e.strip().lower() for e in entries]
        for e in entries:
            category[e] = entries[0]  # a later line wins, as in the reference (no entry is on two lines)
    objects = frozenset(category)
    singular = singularize if not fixed else _fixed_singular(objects)
    return ChairVocabulary(variant, objects, category, _phrase_rules(fixed), singular)


def _fixed_singular(objects: frozenset[str]) -> Callable[[str], str]:
    def singular(word: str) -> str:
        if word in objects:
            return word
        if word.endswith("s") and word[:-1] in objects:
            return word[:-1]
        return singularize(word)

    return singular


def _join_phrases(words: list[str], phrases: Mapping[str, str]) -> list[str]:
    """The reference's left-to-right pass: a known phrase becomes one word; longest first in chair_fixed."""
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in (3, 2):
            p = " ".join(words[i:i + n])
            if len(words) - i >= n and p in phrases:
                out.append(phrases[p])
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out


@dataclass
class CaptionObjects:
    words: list[str]       # object words in caption order, one per mention
    categories: list[str]  # their COCO categories
    tokens: list[str]      # all words after singularising and phrase joining (the reference's "words")


def caption_objects(caption: str, variant: str = "chair") -> CaptionObjects:
    """The COCO objects a caption mentions, one entry per mention (the reference's ``caption_to_words``)."""
    v = vocabulary(variant)
    tokens = _join_phrases([v.singular(t) for t in word_tokenize(caption.lower())], v.phrases)
    kept = [t for t in tokens if t != "seat"] if ("toilet" in tokens and "seat" in tokens) else tokens
    words = [t for t in kept if t in v.objects]
    return CaptionObjects(words, [v.category[w] for w in words], tokens)


def mentioned_objects(caption: str, variant: str = "chair") -> list[str]:
    """COCO categories of a caption's mentions, in order, repeats kept."""
    return caption_objects(caption, variant).categories


def objects_from_captions(captions: Iterable[str], variant: str = "chair") -> set[str]:
    s: set[str] = set()
    for c in captions:
        s.update(mentioned_objects(c, variant))
    return s


def category_of(name: str, variant: str = "chair") -> str:
    """A COCO instance category name -> its CHAIR category (names not in the list are kept as they are)."""
    return vocabulary(variant).category.get(name, name)


def ground_truth(
    ids: Iterable[str],
    refs: Mapping[str, Sequence[str]] | None = None,
    instances: Mapping[str, Iterable[str]] | None = None,
    variant: str = "chair",
) -> dict[str, set[str]]:
    """Per image: categories of its instance annotations plus those its reference captions mention."""
    out: dict[str, set[str]] = {}
    for k in ids:
        s = {category_of(n, variant) for n in (instances or {}).get(k, ())}
        s |= objects_from_captions((refs or {}).get(k, ()), variant)
        out[k] = s
    return out


@dataclass
class ChairResult:
    chair_s: float
    chair_i: float
    per_image: dict[str, dict] = field(default_factory=dict)
    mentions: int = 0
    hallucinated: int = 0
    captions: int = 0


def chair(captions: Mapping[str, str], truth: Mapping[str, Iterable[str]], variant: str = "chair") -> ChairResult:
    """CHAIR over the captions whose id has ground truth (``truth`` holds CHAIR categories)."""
    per: dict[str, dict] = {}
    mentions = hall = hall_caps = n = 0
    for k, cap in captions.items():
        if k not in truth:
            continue
        gt = set(truth[k])
        co = caption_objects(cap, variant)
        bad = [[w, c] for w, c in zip(co.words, co.categories) if c not in gt]
        mentions += len(co.words)
        hall += len(bad)
        hall_caps += bool(bad)
        n += 1
        per[k] = {"mentioned": co.categories, "hallucinated": bad, "chair_s": float(bool(bad)),
                  "chair_i": len(bad) / len(co.words) if co.words else 0.0}
    return ChairResult(chair_s=hall_caps / n if n else float("nan"),
                       chair_i=hall / mentions if mentions else float("nan"),
                       per_image=per, mentions=mentions, hallucinated=hall, captions=n)


def read_coco_instances(path: str) -> dict[str, list[str]]:
    """Per image id (as a string): its annotations' category names, in annotation order, once each."""
    from .files import MetricsInputError, read_json

    data = read_json(Path(path), "--instances")
    try:
        cats = {c["id"]: c["name"] for c in data["categories"]}
        out: dict[str, list[str]] = {str(i["id"]): [] for i in data.get("images", [])}
        for a in data["annotations"]:
            names = out.setdefault(str(a["image_id"]), [])
            name = cats.get(a["category_id"], str(a["category_id"]))
            if name not in names:
                names.append(name)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MetricsInputError(f"--instances {path}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
    return out
