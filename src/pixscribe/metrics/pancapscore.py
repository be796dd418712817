"""PancapScore (Lin et al., "Panoptic Captioning", arXiv 2505.16334) with any LLM judge.

Five dimensions, each an F1 on 0-100, for a candidate caption against one reference
caption (both with inline ``[[x1, y1, x2, y2]]`` boxes):

1. **extraction**: the judge lists each caption's entities (tag, box, attributes,
   relations) and global-state items (:mod:`.pancap_prompts`);
2. **instance matching**: candidate and reference entities are paired one to one by an
   optimal (Hungarian) assignment on tag similarity (:mod:`.pancap_tags`: exact > WordNet
   synset overlap > MiniLM cosine >= 0.5 > none) plus box IoU; pairs without a tag match
   are dropped. Tag F1 counts the pairs; location F1 the pairs whose IoU >= 0.5;
3. **instance-aware questions**: each attribute, relation and global item of one side
   becomes a statement about the *matched* entity of the other side (named by that side's
   own tag and box) and is checked yes/no against the other side's caption. Items of the
   candidate give precision, items of the reference recall. An item whose entity (or a
   related entity) has no match counts as no without asking.

``PancapScore = Tag + Location + Attribute + Relation + 0.1 x Global`` (at most 410).

**Unofficial.** This is a reimplementation from the paper's description, written before the
authors released their metric code (2025-12-12) and not checked against it: only the total's
formula is known to agree (the project page's numbers). So the numbers are reported as
``pancapscore_unofficial`` and ``pancap_unofficial_<dimension>`` (:data:`TOTAL`, :data:`KEYS`),
never under the paper's name; docs/panoptic.md says what is and is not known to match.

Choices where the paper does not say (all parameters of :class:`PancapConfig`, and listed
in docs/panoptic.md): F1s are computed per image and averaged over images; a dimension
in which both captions have no items is left out of that image's average
(``both_empty="skip"``) rather than counted as 100; the weights of the assignment.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..backends.base import Sampling
from ..errors import ConfigError
from . import pancap_prompts as P
from .pancap_tags import TIERS, TagMatcher

DIMENSIONS = ("tag", "location", "attribute", "relation", "global")
# report keys: not the paper's name until checked against the released metric code (see above)
TOTAL = "pancapscore_unofficial"
KEYS = {d: f"pancap_unofficial_{d}" for d in DIMENSIONS}
STATUS = ("unofficial: pixscribe's reimplementation from the paper's description; its extraction prompt, "
          "matching tiers and question scoring are its own and were not checked against the authors' "
          "released metric code (docs/panoptic.md)")


@dataclass(frozen=True)
class PancapConfig:
    """Every threshold and weight of the metric."""

    iou_threshold: float = 0.5  # a matched pair counts for location at IoU >= this
    embed_threshold: float = 0.5  # MiniLM cosine for the embedding tier
    wordnet_senses: int | None = None  # noun senses per tag taking part in the synset overlap (None = all)
    weight_exact: float = 1.0  # assignment weight of a pair: its tier's weight + iou_weight x IoU
    weight_wordnet: float = 0.8
    weight_embedding: float = 0.6
    iou_weight: float = 1.0
    global_weight: float = 0.1
    both_empty: str = "skip"  # a dimension with no items on either side: "skip" it or count it as "full" (100)
    qa_batch: int = 20  # statements per judge request
    extract_max_new_tokens: int = 2048
    qa_max_new_tokens: int = 512

    def __post_init__(self) -> None:
        if self.both_empty not in ("skip", "full"):
            raise ConfigError(f"both_empty must be 'skip' or 'full', got {self.both_empty!r}")
        if self.qa_batch < 1:
            raise ConfigError("qa_batch must be >= 1")

    @classmethod
    def from_options(cls, options: Sequence[str]) -> "PancapConfig":
        """From ``key=value`` strings, e.g. ``["iou_threshold=0.6", "both_empty=full"]``."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for opt in options:
            key, sep, raw = opt.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in kinds:
                raise ConfigError(f"--pancap-option {opt!r}: expected KEY=VALUE with KEY one of {', '.join(kinds)}")
            kind, raw = str(kinds[key]), raw.strip()
            try:
                kw[key] = (raw if "str" in kind else None if raw.lower() == "none" and "None" in kind
                           else int(raw) if kind.startswith("int") else float(raw))
            except ValueError as exc:
                raise ConfigError(f"--pancap-option {opt!r}: {raw!r} is not a {kind}") from exc
        return cls(**kw)

    def extract_sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.extract_max_new_tokens, temperature=0.0)

    def qa_sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.qa_max_new_tokens, temperature=0.0)


def pancap_total(scores: Mapping[str, float], global_weight: float = 0.1) -> float:
    """Tag + Location + Attribute + Relation + global_weight x Global (each on 0-100)."""
    return (scores["tag"] + scores["location"] + scores["attribute"] + scores["relation"]
            + global_weight * scores["global"])


def f1(tp_p: int, n_p: int, tp_r: int, n_r: int, both_empty: str = "skip") -> float | None:
    """F1 on 0-100 from precision ``tp_p / n_p`` and recall ``tp_r / n_r``; None (or 100) when both sides are empty."""
    if n_p == 0 and n_r == 0:
        return None if both_empty == "skip" else 100.0
    if n_p == 0 or n_r == 0:
        return 0.0
    p, r = tp_p / n_p, tp_r / n_r
    return 0.0 if p + r == 0 else 200.0 * p * r / (p + r)


# ---- instance matching -------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    cand: int  # index into the candidate's entities
    ref: int
    tier: int  # pancap_tags tier code (1 embedding, 2 wordnet, 3 exact)
    iou: float


def _box_array(ents: Sequence[P.Entity]) -> np.ndarray:
    return np.array([e.box if e.box is not None else (np.nan,) * 4 for e in ents], dtype=np.float64).reshape(-1, 4)


def iou_matrix(cand: Sequence[P.Entity], ref: Sequence[P.Entity]) -> np.ndarray:
    """Box IoU of every (candidate, reference) pair; 0 where either has no box."""
    a, b = _box_array(cand)[:, None, :], _box_array(ref)[None, :, :]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(out, nan=0.0)


def assignment_weights(tiers: np.ndarray, ious: np.ndarray, cfg: PancapConfig) -> np.ndarray:
    """The weight of every pair: 0 without a tag match, else its tier's weight + iou_weight x IoU."""
    tier_w = np.array([0.0, cfg.weight_embedding, cfg.weight_wordnet, cfg.weight_exact])
    w = tier_w[tiers] + cfg.iou_weight * ious
    w[tiers == 0] = 0.0
    return w


def match_entities(tiers: np.ndarray, ious: np.ndarray, cfg: PancapConfig) -> list[Pair]:
    """The one-to-one pairing of most total weight (Hungarian), pairs without a tag match dropped."""
    if tiers.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(assignment_weights(tiers, ious, cfg), maximize=True)
    return [Pair(int(r), int(c), int(tiers[r, c]), float(ious[r, c])) for r, c in zip(rows, cols) if tiers[r, c] > 0]


# ---- statements --------------------------------------------------------------------


@dataclass
class _Side:
    """The items of one caption, as statements to check against the other caption (None = counts as no)."""

    attribute: list[str | None] = field(default_factory=list)
    relation: list[str | None] = field(default_factory=list)
    global_: list[str | None] = field(default_factory=list)

    def dims(self) -> dict[str, list[str | None]]:
        return {"attribute": self.attribute, "relation": self.relation, "global": self.global_}


def statements_for(own: P.Extraction, match: dict[str, P.Entity]) -> _Side:
    """Statements from ``own``'s items about the entities they are matched to (``match``: own id -> other entity)."""
    side = _Side()
    for e in own.entities:
        other = match.get(e.id)
        side.attribute.extend(P.attribute_statement(other, a) if other else None for a in e.attributes)
        for rel in e.relations:
            names = {e.id: other, **{o: match.get(o) for o in rel.objects}}
            ok = all(v is not None for v in names.values())
            side.relation.append(P.relation_statement(e.id, rel, names) if ok else None)  # type: ignore[arg-type]
    side.global_.extend(P.global_statement(g) for g in own.globals)
    return side


@dataclass
class _Image:
    id: str
    cand_caption: str
    ref_caption: str
    cand: P.Extraction
    ref: P.Extraction
    pairs: list[Pair] = field(default_factory=list)
    precision: _Side = field(default_factory=_Side)  # candidate items, checked against the reference
    recall: _Side = field(default_factory=_Side)  # reference items, checked against the candidate
    answers: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    unanswered: int = 0


def _prepare(img: _Image, matcher: TagMatcher, cfg: PancapConfig) -> None:
    c, r = img.cand.entities, img.ref.entities
    img.pairs = match_entities(matcher.tiers([e.tag for e in c], [e.tag for e in r]), iou_matrix(c, r), cfg)
    c2r = {c[p.cand].id: r[p.ref] for p in img.pairs}
    r2c = {r[p.ref].id: c[p.cand] for p in img.pairs}
    img.precision = statements_for(img.cand, c2r)
    img.recall = statements_for(img.ref, r2c)


# ---- the judge's part --------------------------------------------------------------


def _extract_all(captions: Sequence[str], judge: Any, cfg: PancapConfig) -> dict[str, P.Extraction | str]:
    """caption -> its extraction, or the judge's error text. Empty captions cost no request."""
    todo = [c for c in dict.fromkeys(captions) if c.strip()]
    out: dict[str, P.Extraction | str] = {c: P.Extraction() for c in captions if not c.strip()}
    results = judge.ask([P.extraction_request(c, cfg.extract_sampling()) for c in todo])
    for c, res in zip(todo, results):
        out[c] = P.parse_extraction(res.text) if res.ok else (res.error or "judge: no answer")
    return out


def _ask_all(images: Sequence[_Image], judge: Any, cfg: PancapConfig) -> dict[str, str]:
    """Check every statement; fills ``img.answers``. Returns image id -> error for failed requests."""
    plan: list[tuple[_Image, str, list[tuple[str, int]]]] = []  # per request: image, side, (dim, index) slots
    requests = []
    for img in images:
        for side_name, side, caption in (("precision", img.precision, img.ref_caption),
                                         ("recall", img.recall, img.cand_caption)):
            for dim, items in side.dims().items():
                img.answers[(side_name, dim)] = [False] * len(items)
            if not caption.strip():
                continue  # nothing holds of an empty caption: no question needed
            flat = [(dim, i, s) for dim, items in side.dims().items() for i, s in enumerate(items) if s is not None]
            for s in range(0, len(flat), cfg.qa_batch):
                chunk = flat[s:s + cfg.qa_batch]
                plan.append((img, side_name, [(d, i) for d, i, _ in chunk]))
                requests.append(P.question_request(caption, [x[2] for x in chunk], cfg.qa_sampling()))
    errors: dict[str, str] = {}
    for (img, side_name, slots), res in zip(plan, judge.ask(requests)):
        if not res.ok:
            errors[img.id] = res.error or "judge: no answer"
            continue
        for (dim, i), ans in zip(slots, P.parse_answers(res.text, len(slots))):
            img.answers[(side_name, dim)][i] = bool(ans)
            img.unanswered += ans is None
    return errors


# ---- per-image scores and the corpus -------------------------------------------------


def image_scores(img: _Image, cfg: PancapConfig) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The five F1s of one image and the counts behind them."""
    n_c, n_r, be = len(img.cand.entities), len(img.ref.entities), cfg.both_empty
    tp = len(img.pairs)
    loc = sum(1 for p in img.pairs if p.iou >= cfg.iou_threshold and img.cand.entities[p.cand].box is not None
              and img.ref.entities[p.ref].box is not None)
    scores: dict[str, float | None] = {"tag": f1(tp, n_c, tp, n_r, be), "location": f1(loc, n_c, loc, n_r, be)}
    counts: dict[str, Any] = {"entities": [n_c, n_r], "tag_tp": tp, "location_tp": loc}
    for dim in ("attribute", "relation", "global"):
        yp, yr = img.answers[("precision", dim)], img.answers[("recall", dim)]
        scores[dim] = f1(sum(yp), len(yp), sum(yr), len(yr), be)
        counts[dim] = {"precision": [sum(yp), len(yp)], "recall": [sum(yr), len(yr)]}
    counts["matches"] = [[img.cand.entities[p.cand].tag, img.ref.entities[p.ref].tag, TIERS[p.tier], round(p.iou, 4)]
                         for p in img.pairs]
    counts["unanswered"] = img.unanswered
    counts["problems"] = {"candidate": img.cand.problems, "reference": img.ref.problems}
    return scores, counts


def corpus_scores(per_image: Mapping[str, Mapping[str, float | None]], global_weight: float = 0.1) -> dict[str, float]:
    """Mean of each dimension over the images where it is defined, and the weighted total."""
    means: dict[str, float] = {}
    for d in DIMENSIONS:
        vals = [v[d] for v in per_image.values() if v.get(d) is not None]
        means[d] = float(np.mean(vals)) if vals else math.nan
    out = {KEYS[d]: means[d] for d in DIMENSIONS}
    out[TOTAL] = pancap_total(means, global_weight)
    return out


def total_ci(per_dim: Mapping[str, np.ndarray], global_weight: float, n_resamples: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> list[float] | None:
    """Bootstrap interval of the total: images resampled, each dimension's mean (NaNs left out) recomputed."""
    arrays = {d: np.asarray(per_dim[d], dtype=np.float64) for d in DIMENSIONS}
    n = len(arrays["tag"])
    if n == 0 or n_resamples <= 0 or any(np.isnan(a).all() for a in arrays.values()):
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    total = np.zeros(n_resamples)
    for d, a in arrays.items():
        mask = ~np.isnan(a)
        count = mask[idx].sum(1)
        means = np.where(count > 0, np.where(mask, a, 0.0)[idx].sum(1) / np.maximum(count, 1), np.nan)
        total += (global_weight if d == "global" else 1.0) * means
    if np.isnan(total).all():
        return None
    lo, hi = np.nanpercentile(total, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


@dataclass
class PancapResult:
    corpus: dict[str, float]
    per_image: dict[str, dict[str, float | None]]  # id -> dimension -> F1 (None = not defined)
    details: dict[str, dict[str, Any]]  # id -> counts, matches, parse problems
    errors: dict[str, str]  # id -> why the judge could not score it (left out of the means)
    info: dict[str, Any]


def _matcher_for(cfg: PancapConfig, matcher: TagMatcher | None) -> TagMatcher:
    """``matcher`` (its loaded WordNet and MiniLM reused) with the thresholds of ``cfg``."""
    if matcher is None:
        return TagMatcher.default(embed_threshold=cfg.embed_threshold, wordnet_senses=cfg.wordnet_senses)
    if (matcher.embed_threshold, matcher.wordnet_senses) == (cfg.embed_threshold, cfg.wordnet_senses):
        return matcher
    return TagMatcher(matcher.wordnet, matcher.embed, embed_threshold=cfg.embed_threshold,
                      wordnet_senses=cfg.wordnet_senses)


def pancapscore(preds: Mapping[str, str], refs: Mapping[str, str], judge: Any, *,
                config: PancapConfig | None = None, matcher: TagMatcher | None = None) -> PancapResult:
    """Score ``preds[id]`` against ``refs[id]`` for every id of ``preds``; ``judge`` has
    ``ask(requests) -> results`` (a :class:`~pixscribe.metrics.judge.CachedJudge`)."""
    cfg = config or PancapConfig()
    matcher = _matcher_for(cfg, matcher)
    ids = list(preds)
    extracted = _extract_all([preds[k] for k in ids] + [refs[k] for k in ids], judge, cfg)
    errors = {k: e for k in ids for e in (extracted[preds[k]], extracted[refs[k]]) if isinstance(e, str)}
    images = [_Image(k, preds[k], refs[k], extracted[preds[k]], extracted[refs[k]])  # type: ignore[arg-type]
              for k in ids if k not in errors]
    matcher.prepare(e.tag for img in images for x in (img.cand, img.ref) for e in x.entities)
    for img in images:
        _prepare(img, matcher, cfg)
    errors.update(_ask_all(images, judge, cfg))
    per_image, details = {}, {}
    for img in images:
        if img.id not in errors:
            per_image[img.id], details[img.id] = image_scores(img, cfg)
    info = {"status": STATUS, "config": dataclasses.asdict(cfg), "prompts": P.prompt_config(),
            "tags": matcher.describe(),
            "sampling": {"extract": cfg.extract_sampling().to_dict(),
                         "questions": cfg.qa_sampling().to_dict()},
            "judge": judge.describe() if hasattr(judge, "describe") else None,
            "unanswered": sum(d["unanswered"] for d in details.values()),
            "parse_problems": sum(len(v) for d in details.values() for v in d["problems"].values())}
    return PancapResult(corpus_scores(per_image, cfg.global_weight), per_image, details, errors, info)


__all__ = ["DIMENSIONS", "KEYS", "STATUS", "TOTAL",
           "Pair", "PancapConfig", "PancapResult", "assignment_weights", "corpus_scores", "f1",
           "iou_matrix", "match_entities", "pancap_total", "pancapscore", "statements_for", "total_ci"]
