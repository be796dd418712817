"""One call for the standard caption numbers: :func:`evaluate` -> a JSON-able report.

Report keys: ``corpus`` (``bleu_1..4``, ``meteor``, ``rouge_l``, ``cider_d`` (``cider``), ``spice``,
``chair_s``, ``chair_i`` (``chair_fixed_s``, ``chair_fixed_i``), ``bertscore_f1``,
``clipscore``, ``refclipscore``, ``lin_*`` (``lin_fixed_*``)),
``per_image`` (``{id: {metric: value}}``), ``ci95`` (seeded bootstrap over images of
the per-image scores, see :mod:`.bootstrap`), ``n_images``, ``missing`` (count and ids
of references without a prediction; they are reported, not scored), ``extra`` (ids
predicted but without references), and ``info``.

PancapScore (panoptic captioning, :mod:`.pancapscore`), asked for as ``pancapscore_unofficial``,
needs an LLM judge (``judge=``) and one reference caption per image; it is not part of ``all``.
It is pixscribe's reimplementation, not checked against the authors' released code, so its keys
say so: ``pancap_unofficial_tag``, ``_location``, ``_attribute``, ``_relation``, ``_global`` (F1
on 0-100) and ``pancapscore_unofficial`` (their weighted sum), with the judge, prompts, sampling,
thresholds and per-image counts in ``info["pancapscore_unofficial"]``. The old name
``pancapscore`` still asks for it, with a note (:func:`metric_notes`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputFileError
from .bootstrap import bootstrap_ci
from .coco import coco_scores
from .tokenize import ptb_tokenize

if TYPE_CHECKING:  # pragma: no cover
    from .pancapscore import PancapConfig

ALL_METRICS = ("bleu", "meteor", "rouge_l", "cider_d", "spice", "chair", "bertscore", "clipscore", "lin")
# corrected variants of reference metrics (docs/metrics.md), and the original CIDEr; not part of "all"
FIXED_METRICS = ("chair_fixed", "lin_fixed", "cider")
# scored from answers and question labels, not captions and references (see pope.pope_report)
POPE_METRICS = ("pope", "pope_fixed")
PANCAP = "pancapscore_unofficial"
# scored against their own benchmark files, on their own (metrics/detailed_cli.py); asked for by name only
DETAILED_METRICS = ("amber", "capture", "dlc_bench", "caparena", "comprecap")
JUDGED_METRICS = (PANCAP, "dlc_bench", "caparena", "comprecap")  # need a judge: by name, never by "all"
DEFAULT_METRICS = ("bleu", "meteor", "rouge_l", "cider_d")
_ALIASES = {"rouge": "rouge_l", "ciderd": "cider_d", "bleu4": "bleu", "linbench": "lin",
            "refclipscore": "clipscore", "bert": "bertscore", "clip": "clipscore",
            "dlc": "dlc_bench", "dlcbench": "dlc_bench", "caparena_auto": "caparena"}
# old names that still work, each with a note saying what it is now
_RENAMED = {"pancapscore": PANCAP, "pancap": PANCAP, "pancap_score": PANCAP}
_NOTES = {
    PANCAP: ("note: '{asked}' is now 'pancapscore_unofficial' (keys pancapscore_unofficial, pancap_unofficial_*): "
             "pixscribe's reimplementation, not checked against the authors' released metric code; the old name "
             "will be removed"),
    "cider": ("note: cider is the original CIDEr (no clipping, no length penalty); the CIDEr of COCO's server, "
              "pycocoevalcap and most papers (IT's DID-Bench included) is cider_d. Until this release 'cider' was "
              "another name of cider_d."),
}
_KNOWN = ALL_METRICS + FIXED_METRICS + POPE_METRICS + tuple(dict.fromkeys(JUDGED_METRICS + DETAILED_METRICS))


def parse_metrics(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return list(DEFAULT_METRICS)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for m in items:
        m = m.strip().lower().replace("-", "_")
        if not m:
            continue
        if m == "all":
            out.extend(x for x in ALL_METRICS if x not in out)
            continue
        m = _ALIASES.get(m) or _RENAMED.get(m, m)
        if m not in _KNOWN:
            raise ConfigError(f"unknown metric {m!r}; choose from {', '.join(_KNOWN)}")
        if m not in out:
            out.append(m)
    return out


def metric_notes(spec: str | Sequence[str] | None) -> list[str]:
    """One line per name in ``spec`` whose meaning changed: an old name (``pancapscore``), or ``cider``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    notes = []
    for m in (x.strip().lower().replace("-", "_") for x in items):
        new = _RENAMED.get(m, m)
        if new in _NOTES and (m != new or m == "cider"):
            notes.append(_NOTES[new].format(asked=m))
    return list(dict.fromkeys(notes))


TOKENIZERS = ("ptb", "none")


def prepare_text(caps: Mapping[str, Sequence[str]], tokenize: str = "ptb") -> dict[str, list[str]]:
    """What the n-gram metrics read. ``ptb``: pycocoevalcap's PTBTokenizer (lower case, punctuation
    removed; every COCO number). ``none``: the strings as given, as Image Textualization's DID-Bench
    scorer reads them, line breaks deleted as IT's converter (``script/trans_to_DenseCap_format.py``)
    deletes them before scoring (METEOR's line protocol cannot carry one)."""
    if tokenize == "ptb":
        return ptb_tokenize(caps)
    if tokenize == "none":
        return {k: [str(c).replace("\n", "") for c in v] for k, v in caps.items()}
    raise ConfigError(f"unknown tokenize {tokenize!r}; choose from {', '.join(TOKENIZERS)}")


def evaluate(
    preds: Mapping[str, str],
    refs: Mapping[str, Sequence[str]],
    metrics: str | Sequence[str] | None = None,
    *,
    objects: Mapping[str, Iterable[str]] | None = None,
    bertscore_model: str | None = None,
    clip_model: str | None = None,
    images: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
    missing_preds: Sequence[str] = (),
    judge: Any = None,
    pancap_config: "PancapConfig | None" = None,
    tag_matcher: Any = None,
    tokenize: str = "ptb",
) -> dict[str, Any]:
    """Score predictions against references. ``images``: a directory or a callable id -> PIL image;
    ``judge``: a :class:`~pixscribe.metrics.judge.CachedJudge` for PancapScore; ``tokenize``: what
    BLEU, METEOR, ROUGE-L, CIDEr(-D) and SPICE read (:func:`prepare_text`)."""
    ms = parse_metrics(metrics)
    if any(m in POPE_METRICS for m in ms):
        raise InputFileError("POPE is scored from answers and question labels: pixscribe eval --metrics pope "
                             "--pope-labels LABELS --pred ANSWERS (pope.pope_report), not with caption metrics")
    ids = [k for k in refs if k in preds]
    missing = [k for k in refs if k not in preds]
    extra = [k for k in preds if k not in refs]
    if not ids:
        raise InputFileError("no prediction matches a reference id (ids are compared as strings)")
    corpus: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"metrics": ms, "seconds": {}}
    notes = metric_notes(metrics)
    if notes:
        info["notes"] = notes

    _text_metrics(ms, {k: list(refs[k]) for k in ids}, {k: [preds[k]] for k in ids}, tokenize, corpus, per, info)
    for variant in (m for m in ("chair", "chair_fixed") if m in ms):
        t = time.perf_counter()
        c0, p0, info[variant] = _chair(variant, preds, refs, ids, objects)
        corpus.update(c0)
        per.update(p0)
        info["seconds"][variant] = round(time.perf_counter() - t, 4)
    _embedding_metrics(ms, preds, refs, ids, bertscore_model, clip_model, images, corpus, per, info)
    for variant in (m for m in ("lin", "lin_fixed") if m in ms):
        _lin(variant, [preds[k] for k in ids], corpus, per, info)

    pancap_ci = None
    if PANCAP in ms:
        c0, p0, pancap_ci, info[PANCAP] = _pancapscore(preds, refs, ids, judge, pancap_config, tag_matcher,
                                                               bootstrap, seed)
        corpus.update(c0)
        per.update(p0)

    ci = bootstrap_ci({k: v for k, v in per.items() if k in corpus}, n_resamples=bootstrap, seed=seed)
    if pancap_ci is not None:
        ci[PANCAP] = pancap_ci  # the total's interval resamples the dimension means (see total_ci)
    per_image = {k: {m: (None if np.isnan(v[i]) else float(v[i])) for m, v in per.items()} for i, k in enumerate(ids)}
    miss = list(dict.fromkeys(list(missing) + [k for k in missing_preds if k in refs and k not in preds]))
    return {
        "corpus": corpus,
        "ci95": ci,
        "per_image": per_image,
        "n_images": len(ids),
        "missing": {"count": len(miss), "ids": miss},
        "extra": {"count": len(extra), "ids": extra},
        "info": info,
    }


Scores = dict[str, float]
PerImage = dict[str, np.ndarray]


def _text_metrics(ms: list[str], gts_raw: dict[str, list[str]], res_raw: dict[str, list[str]], tokenize: str,
                  corpus: Scores, per: PerImage, info: dict[str, Any]) -> None:
    """BLEU, ROUGE-L, CIDEr(-D), METEOR and SPICE on the texts as ``tokenize`` prepares them."""
    if not any(m in ms for m in ("bleu", "rouge_l", "cider_d", "cider", "meteor", "spice")):
        return
    t = time.perf_counter()
    gts, res = prepare_text(gts_raw, tokenize), prepare_text(res_raw, tokenize)
    info["seconds"]["tokenize"] = round(time.perf_counter() - t, 4)
    info["tokenize"] = tokenize
    coco_ms = [m for m in ("bleu", "rouge_l", "cider_d", "cider") if m in ms]
    if coco_ms:
        t = time.perf_counter()
        c, p, _ = coco_scores(gts, res, coco_ms)
        corpus.update(c)
        per.update(p)
        info["seconds"]["coco"] = round(time.perf_counter() - t, 4)
    if "meteor" in ms:
        from .meteor import Meteor

        t = time.perf_counter()
        with Meteor() as m:
            c0, p0 = m.compute_score(gts, res)
        corpus["meteor"] = c0
        per["meteor"] = np.asarray(p0)
        info["seconds"]["meteor"] = round(time.perf_counter() - t, 4)
    if "spice" in ms:
        from .spice import spice_scores

        c0, p0 = spice_scores(gts, res)
        corpus["spice"] = c0
        per["spice"] = np.asarray(p0)


def _embedding_metrics(ms: list[str], preds: Mapping[str, str], refs: Mapping[str, Sequence[str]], ids: list[str],
                       bertscore_model: str | None, clip_model: str | None, images: Any, corpus: Scores,
                       per: PerImage, info: dict[str, Any]) -> None:
    """BERTScore and CLIPScore (models named by the caller)."""
    if "bertscore" in ms:
        if not bertscore_model:
            raise ConfigError("bertscore needs a model: --bertscore-model DIR_OR_HUB_ID")
        from .embed import BertScorer

        b = BertScorer(bertscore_model).score([preds[k] for k in ids], [refs[k] for k in ids])
        for k2, v in b.items():
            per[k2] = v
            corpus[k2] = float(v.mean())
        info["bertscore_model"] = bertscore_model
    if "clipscore" in ms:
        if not clip_model or images is None:
            raise ConfigError("clipscore needs --clip-model DIR_OR_HUB_ID and --images DIR")
        from .embed import ClipScorer, load_images

        imgs = load_images(ids, images) if isinstance(images, str) else [images(k) for k in ids]
        cs = ClipScorer(clip_model)
        out = cs.score([preds[k] for k in ids], imgs, [refs[k] for k in ids])
        for k2, v in out.items():
            per[k2] = v
            corpus[k2] = float(v.mean())
        info["clip_model"] = clip_model
        info["clip_chunked"] = cs.chunked


def _lin(variant: str, texts: list[str], corpus: Scores, per: PerImage, info: dict[str, Any]) -> None:
    """LIN-Bench's text statistics (``lin`` or ``lin_fixed``)."""
    from .linguistic import TextStats, corpus_stats, nan_reason, text_stats

    stats = [text_stats(t, variant) for t in texts]
    lin = corpus_stats(texts, stats, variant)
    corpus.update(lin)
    if nan_reason(variant, stats, lin):
        info.setdefault("nan", {})[variant] = nan_reason(variant, stats, lin)
    for f in TextStats.__dataclass_fields__:
        per[f"{variant}_{f}"] = np.asarray([float(getattr(s, f)) for s in stats])
    info["pos"] = "not computed: no part-of-speech tagger is available offline"


def _chair(variant: str, preds: Mapping[str, str], refs: Mapping[str, Sequence[str]], ids: Sequence[str],
           objects: Mapping[str, Iterable[str]] | None) -> tuple[dict, dict, dict]:
    """CHAIR corpus and per-image scores; ground truth = instances + reference mentions, as in the paper."""
    from .chair import chair, ground_truth

    gt = ground_truth(ids, refs, objects, variant)
    r = chair({k: preds[k] for k in ids}, gt, variant)
    corpus = {f"{variant}_s": r.chair_s, f"{variant}_i": r.chair_i}
    per = {f"{variant}_s": np.asarray([r.per_image[k]["chair_s"] for k in ids]),
           f"{variant}_i": np.asarray([r.per_image[k]["chair_i"] if r.per_image[k]["mentioned"] else np.nan
                                       for k in ids])}
    info = {"mentions": r.mentions, "hallucinated": r.hallucinated,
            "ground_truth": "instances+reference mentions" if objects else "reference mentions"}
    return corpus, per, info


def _pancapscore(preds: Mapping[str, str], refs: Mapping[str, Sequence[str]], ids: Sequence[str], judge: Any,
                 config: "PancapConfig | None", matcher: Any, bootstrap: int, seed: int) -> tuple[dict, dict, Any, dict]:
    """PancapScore's corpus numbers, per-image arrays, the total's interval and its info."""
    from .pancapscore import DIMENSIONS, KEYS, TOTAL, PancapConfig, pancap_total, pancapscore, total_ci

    if judge is None:
        raise ConfigError("pancapscore_unofficial needs an LLM judge: --judge MODEL (a local model, or a served one "
                          "with --judge-base-url URL)")
    several = [k for k in ids if len(refs[k]) != 1]
    if several:
        raise InputFileError(f"pancapscore_unofficial takes one reference caption per image; {len(several)} images "
                             f"have several (e.g. {several[0]!r})")
    cfg = config or PancapConfig()
    res = pancapscore({k: preds[k] for k in ids}, {k: refs[k][0] for k in ids}, judge, config=cfg, matcher=matcher)
    nan = float("nan")
    per = {KEYS[d]: np.asarray([nan if (res.per_image.get(k) or {}).get(d) is None else res.per_image[k][d]
                                for k in ids]) for d in DIMENSIONS}
    per[TOTAL] = np.asarray([pancap_total({d: per[KEYS[d]][i] for d in DIMENSIONS}, cfg.global_weight)
                                     for i in range(len(ids))])  # NaN unless all five are defined
    ci = total_ci({d: per[KEYS[d]] for d in DIMENSIONS}, cfg.global_weight, bootstrap, seed)
    info = {**res.info, "scored": len(res.per_image), "errors": res.errors, "per_image": res.details}
    return res.corpus, per, ci, info
