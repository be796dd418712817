"""CompreCap (Lu et al., CVPR 2025, arXiv 2412.08614): detailed captions against a directed scene graph per image,
scored as its reference does.

Reference: GitHub LuFan31/CompreCap ``evaluate.py``, ``utils/evaluator.py``,
``utils/metric/llama3.py``, ``utils/metric/utils.py`` @ b70aae6 (MIT); data: the CompreCap
benchmark's ``anno.json`` (objects with a category, short and extended descriptions, a
mask and relations).

Per image with a caption and objects:

1. the caption is cut into sub-captions at line breaks, ``\\n``, ``</s>`` and periods, and the
   nouns of each are lemmatised (the reference: spaCy ``en_core_web_lg``, tags starting
   ``N``, ``lemma_`` lower-cased; pluggable, :data:`Nouns`);
2. **object coverage**: the distinct object categories and the nouns are embedded with
   all-MiniLM-L6-v2 and compared by cosine; a category and a noun *match* when each is the
   other's best; a category is covered when it matches a noun; soft coverage (the
   reference's ``--soft_coverage``) adds its best cosine instead of 1; over the categories;
3. **attributes**: each object's description is rated 0-5 by the LLM judge against the
   sub-captions of its matched nouns (no matched noun: 0 without asking); **relations**:
   each relation against the sub-captions of its object and of every other object whose
   category occurs in the relation text, kept as the reference keeps them (the list of
   sub-captions grows over an object's relations, and the relation and sentence lists are
   paired as the reference pairs them, off by one past an object without relations); a
   rating is the first integer in the judge's answer, -1 if none;
4. **pixel coverage**: the area of the objects' masks weighted by their attribute score / 5
   (clipped at 1), over the area of their union.

Corpus: object and pixel coverage (x100) and the attribute and relation scores (0-5)
averaged over the images; unified = 0.25 coverage + 0.35 x 20 x attribute + 0.4 x 20 x
relation. The judge's answers come through the engine (metrics/judge.py): cached, written
to the transcript, replayable; the reference samples (temperature 0.6), so only a replayed
transcript gives the same numbers twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..backends.base import GenerationRequest, Sampling
from ..errors import InputFileError

Nouns = Callable[[str], list[str]]  # a sub-caption -> its nouns' lemmas, lower-cased
Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]  # cosines, rows x columns
SAMPLING = Sampling(max_new_tokens=256, temperature=0.6, top_p=0.9)
_SPLIT = re.compile(r"\n|\\n|</s>|[.]")
_DIGITS = re.compile(r"\d+")


def split_caption(text: str) -> list[str]:
    return [t.strip() for t in _SPLIT.split(text) if t.strip()]


def first_integer(answer: str) -> int:
    m = _DIGITS.search(answer)
    return int(m.group()) if m else -1


@lru_cache(maxsize=1)
def prompts() -> dict[str, str]:
    """The judge's system prompt and its two user prompts, packaged verbatim (data/comprecap_prompts.json)."""
    return json.loads(resources.files(__package__).joinpath("data/comprecap_prompts.json").read_text(encoding="utf-8"))


def rating_request(sentence: str, phrase: str, relation: bool) -> GenerationRequest:
    p = prompts()
    text = p["relation" if relation else "object"].format(sentence=sentence, phrase=phrase)
    return GenerationRequest(messages=[{"role": "system", "content": [{"type": "text", "text": p["system"]}]},
                                       {"role": "user", "content": [{"type": "text", "text": text}]}],
                             sampling=SAMPLING)


@dataclass
class ImageObjects:
    categories: list[str]
    descriptions: list[str]
    relations: list[list[str]]  # per object, its relation phrases
    masks: list[Any] = field(default_factory=list)  # base64(zlib(uint8 h x w)) per object, or empty


def spacy_nouns(model: str = "en_core_web_lg") -> Nouns:
    """The reference's nouns: a spaCy pipeline's tokens whose tag starts with N, their lemmas lower-cased."""
    from ..deps import MissingDependency, require

    spacy = require("spacy", extra="amber-spacy", what="CompreCap's noun extraction (the reference's)")
    try:
        nlp = spacy.load(model)
    except OSError as exc:
        raise MissingDependency(f"spaCy pipeline {model!r} is not installed (python -m spacy download {model}); "
                                "or choose --detail-option comprecap.nouns=nltk") from exc
    return lambda text: [t.lemma_.lower() for t in nlp(text) if t.tag_[:1] == "N"]


def nltk_nouns(tagger: str | None = None) -> Nouns:
    """nltk's tokenizer and perceptron tagger, WordNet's shortest noun lemma, lower-cased (tags starting with N)."""
    from .amber_text import NounExtractor, nltk_tagger, word_tokenize

    ex = NounExtractor(nltk_tagger(tagger))
    return lambda text: [ex.lemmatize(w).lower() for w, t in ex.tag(word_tokenize(text)) if t[:1] == "N"]


def keywords(subcaps: Sequence[str], nouns: Nouns) -> tuple[list[str], dict[int, int]]:
    """Every noun of every sub-caption, and which sub-caption each came from."""
    words: list[str] = []
    owner: dict[int, int] = {}
    for i, s in enumerate(subcaps):
        for w in nouns(s):
            owner[len(words)] = i
            words.append(w)
    return words, owner


def coverage(categories: Sequence[str], words: Sequence[str], similarity: Similarity,
             soft: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(match matrix categories x words, each category's score, the image's coverage 0-1)."""
    cos = np.asarray(similarity(list(categories), list(words)))
    match = (cos == cos.max(axis=0, keepdims=True)) & (cos == cos.max(axis=1, keepdims=True))
    covered = match.any(axis=1)
    best = cos.max(axis=1)
    if soft:
        return match, covered * best, sum(float(best[i]) for i in np.nonzero(covered)[0]) / len(categories)
    return match, covered.astype(float), len(np.nonzero(covered)[0]) / len(categories)


def minilm_similarity(device: str = "cpu") -> Similarity:
    """all-MiniLM-L6-v2 (the reference's model): each list encoded in one call, cosines by sentence-transformers."""
    from ..deps import require
    from .pancap_tags import minilm_path

    st = require("sentence_transformers", extra="detailed", package="sentence-transformers",
                 what="CompreCap's object coverage")
    model = st.SentenceTransformer(minilm_path(), device=device, local_files_only=True)

    def similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        ea = model.encode(list(a), show_progress_bar=False)
        eb = model.encode(list(b), show_progress_bar=False)
        return model.similarity(ea, eb).numpy()

    return similarity


@dataclass
class _Plan:
    image: str
    coverage: float
    objects: list[tuple[str, str]] = field(default_factory=list)  # (description, sentence) to rate
    relations: list[tuple[str, str]] = field(default_factory=list)  # (relation, sentence), as the reference pairs them
    masks: list[Any] = field(default_factory=list)


def plan_image(image: str, caption: str, objs: ImageObjects, nouns: Nouns, similarity: Similarity,
               soft: bool = True) -> _Plan | None:
    """What to ask the judge about one image (None: the reference skips it: no caption or no object)."""
    if not caption or not objs.categories:
        return None
    subcaps = split_caption(caption)
    words, owner = keywords(subcaps, nouns)
    distinct = list(dict.fromkeys(objs.categories))
    if not words:  # the reference fails on an empty similarity matrix; no noun covers nothing
        match_d = np.zeros((len(distinct), 0), dtype=bool)
        cov = 0.0
    else:
        match_d, _, cov = coverage(distinct, words, similarity, soft)
    match = [match_d[distinct.index(c)] for c in objs.categories]

    def sentences_of(k: int) -> list[int]:
        return sorted(owner[int(j)] for j in np.nonzero(match[k])[0])

    plan = _Plan(image, cov)
    rel_sentences: list[str] = []
    rels: list[str] = []
    for k, desc in enumerate(objs.descriptions):
        own = sentences_of(k)
        plan.objects.append((desc, ". ".join(subcaps[i] for i in own)))
        if objs.relations[k]:
            for rel in objs.relations[k]:
                for k2, other in enumerate(objs.categories):
                    if k2 != k and other in rel:
                        own = own + sentences_of(k2)  # grows over this object's relations, as in the reference
                rel_sentences.append(". ".join(subcaps[i] for i in sorted(set(own))))
                rels.append(rel)
        else:
            rel_sentences.append("")  # the reference appends a sentence but no relation here
    plan.relations = list(zip(rels, rel_sentences))
    return plan


def _requests(plans: Sequence[_Plan]) -> list[GenerationRequest]:
    out = []
    for p in plans:
        out += [rating_request(s, d, False) for d, s in p.objects if s]
        out += [rating_request(s, r, True) for r, s in p.relations if s]
    return out


def decode_mask(data: str, width: int, height: int) -> np.ndarray | None:
    """A CompreCap mask: base64 of zlib-compressed uint8 pixels, h x w, non-zero = inside."""
    import base64
    import zlib

    if not isinstance(data, str) or len(data) <= 1:
        return None
    arr = np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=np.uint8)
    return (arr > 0).astype(np.uint8).reshape(height, width)


def pixel_coverage(scores: Sequence[float], masks: Sequence[str], size: tuple[int, int]) -> float:
    """Mask area weighted by score / 5 (clipped at 1 after each object) over the union of the masks."""
    w, h = size
    seen = np.zeros((h, w))
    union = np.zeros((h, w))
    for score, m in zip(scores, masks):
        mask = decode_mask(m, w, h)
        if mask is None:
            raise ValueError("an object has no mask")
        seen = np.clip(seen + mask.astype(np.float64) * score / 5, 0, 1)  # NumPy 1.20's result for -1 too
    for m in masks:
        union = 1 * ((union + decode_mask(m, w, h)) > 0)
    return float(np.sum(seen) / np.sum(union))


@dataclass
class CompreCapResult:
    corpus: dict[str, float]
    per_image: dict[str, dict[str, Any]]
    errors: dict[str, str]
    skipped: list[str]


def comprecap(captions: Mapping[str, str], annotations: Sequence[Mapping[str, Any]], judge: Any, nouns: Nouns,
              similarity: Similarity, *, soft: bool = True, image_size: Callable[[str], tuple[int, int]] | None = None,
              extended: bool = False) -> CompreCapResult:
    """Score ``captions`` (image file name -> caption) against ``anno.json``'s entries, in its order."""
    plans, skipped = [], []
    for a in annotations:
        info = a["info"]
        objs = ImageObjects([i["category"] for i in info],
                            [i["extend_description" if extended else "short_description"] for i in info],
                            [list(i["relation"]) if isinstance(i["relation"], list) else [i["relation"]] for i in info],
                            [i.get("mask_out") for i in info])
        p = plan_image(a["image"], captions.get(a["image"], ""), objs, nouns, similarity, soft)
        if p is None:
            skipped.append(a["image"])
        else:
            p.masks = objs.masks
            plans.append(p)
    reqs = _requests(plans)
    answers = judge.ask(reqs) if reqs else []
    by_prompt = {r.messages[1]["content"][0]["text"]: a for r, a in zip(reqs, answers)}
    return _score(plans, by_prompt, image_size, skipped)


def _rate(sentence: str, phrase: str, relation: bool, by_prompt: Mapping[str, Any]) -> int:
    if not sentence:
        return 0
    res = by_prompt[rating_request(sentence, phrase, relation).messages[1]["content"][0]["text"]]
    if not res.ok:
        raise ValueError(res.error or "judge: no answer")
    return first_integer(res.text)


def _score(plans: Sequence[_Plan], by_prompt: Mapping[str, Any], image_size: Any, skipped: list[str]) -> CompreCapResult:
    totals = {"object coverage": 0.0, "pixel coverage": 0.0, "attribute score": 0.0, "relation score": 0.0}
    per: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    count = 0
    for p in plans:
        try:
            obj = [_rate(s, d, False, by_prompt) for d, s in p.objects]
            rel = [_rate(s, r, True, by_prompt) for r, s in p.relations]
            if not rel:
                raise ValueError("the image has no relation (the reference stops here)")
            pix = pixel_coverage(obj, p.masks, image_size(p.image)) if image_size else None
        except ValueError as exc:
            errors[p.image] = str(exc)
            continue
        count += 1
        totals["object coverage"] += p.coverage * 100.0
        totals["attribute score"] += sum(obj) / len(p.objects)
        totals["relation score"] += sum(rel) / len(rel)
        if pix is not None:
            totals["pixel coverage"] += pix * 100.0
        per[p.image] = {"object_coverage": p.coverage, "pixel_coverage": pix, "attribute": obj, "relation": rel}
    if not count:
        raise InputFileError(f"CompreCap: no image could be scored ({len(errors)} errors, {len(skipped)} skipped)")
    cov, attr, rel = (totals["object coverage"] / count, totals["attribute score"] / count,
                      totals["relation score"] / count)
    corpus = {"comprecap_object_coverage": cov, "comprecap_attribute": attr, "comprecap_relation": rel,
              "comprecap_unified": 0.25 * cov + 0.35 * (totals["attribute score"] / count * 20.0)
              + 0.4 * (totals["relation score"] / count * 20.0)}
    if image_size:
        corpus["comprecap_pixel_coverage"] = totals["pixel coverage"] / count
    return CompreCapResult(corpus, per, errors, skipped)


__all__ = ["CompreCapResult", "ImageObjects", "comprecap", "coverage", "decode_mask", "first_integer", "keywords",
           "minilm_similarity", "nltk_nouns", "pixel_coverage", "plan_image", "prompts", "rating_request", "spacy_nouns", "split_caption"]
