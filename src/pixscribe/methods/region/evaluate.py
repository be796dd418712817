"""Region-level evaluation: captions keyed by region id, scored per prompting mode and attribute.

    report = evaluate_regions(pred_rows, refs, attributes, metrics="bleu,meteor,rouge_l,cider_d")
    report["by_prompt_mode"]["focal"]["corpus"]["cider_d"]
    report["by_prompt_mode"]["box"]["by_attribute"]["color"]["corpus"]["bleu_4"]

The numbers are :func:`pixscribe.metrics.evaluate.evaluate`'s (BLEU-4, METEOR, ROUGE-L,
CIDEr-D equal to pycocoevalcap; BERTScore with a local model), computed separately for each
prompting mode, so two runs over the same regions (``--region-prompt focal`` and ``box``) are
compared side by side, and within a mode for each attribute. Scores are on pycocoevalcap's
0-1 scale (FineCaption's table multiplies by 100).

Prediction rows are region output dicts (:mod:`.output`): ``region_id`` (or ``id``),
``caption``, ``prompt_mode``, ``attribute``, ``error``; a pixscribe output with a ``regions``
list column (one row per image) is exploded into them, and one with a ``region`` column (one
row per region) is read from it. A row without a caption (an error) counts as missing.
The reference's attribute, when it has one, wins over the prediction's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError, InputFileError
from .tasks import attribute_key

NO_MODE = "unknown"
NO_ATTRIBUTE = "none"


def _group(rows: Iterable[Mapping[str, Any]], attributes: Mapping[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> region id -> {caption, attribute}; a (mode, id) given twice is a ValueError naming
    both rows (their ``_where``, set by the readers)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        rid = r.get("region_id") if r.get("region_id") is not None else r.get("id")
        if rid is None:
            raise InputFileError(f"a prediction row has no 'region_id' or 'id' (keys: {', '.join(sorted(r))})")
        rid = str(rid)
        mode = str(r.get("prompt_mode") or NO_MODE)
        attr = attributes.get(rid) or r.get("attribute") or NO_ATTRIBUTE
        if rid in out.get(mode, {}):
            raise InputFileError(f"region {rid!r} has two predictions in prompt mode {mode!r} "
                                 f"({out[mode][rid]['where']} and {r.get('_where', 'another row')}); give one "
                                 "caption per region and mode")
        out.setdefault(mode, {})[rid] = {"caption": r.get("caption"), "attribute": attribute_key(str(attr)),
                                         "where": r.get("_where", "a row")}
    return out


class _Scorers:
    """Metrics for many groups with one METEOR process and one BERTScore model.

    BLEU, ROUGE-L and CIDEr-D go through :func:`evaluate` on each group (their corpus scores
    pool the group). METEOR is scored by one persistent jar for every group (its corpus score
    is the jar's, per group). BERTScore's corpus score is the mean of per-region F1s, so each
    region is embedded once and groups take means."""

    def __init__(self, metrics: Any, kw: dict[str, Any]) -> None:
        from ...metrics.evaluate import parse_metrics

        self.kw = dict(kw)
        ms = parse_metrics(metrics)
        self.core = [m for m in ms if m not in ("meteor", "bertscore")]
        self.meteor = None
        self.bert = None
        self._bert_cache: dict[tuple[str, str], dict[str, float]] = {}
        if "meteor" in ms:
            from ...metrics.meteor import Meteor

            self.meteor = Meteor()
        if "bertscore" in ms:
            model = self.kw.pop("bertscore_model", None)
            if not model:
                raise ConfigError("bertscore needs a model: --bertscore-model DIR_OR_HUB_ID")
            from ...metrics.embed import BertScorer

            self.bert, self.bert_model = BertScorer(model), model
        self.kw.pop("bertscore_model", None)

    def close(self) -> None:
        if self.meteor is not None:
            self.meteor.close()

    def score(self, mode: str, preds: Mapping[str, str], refs: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        from ...metrics.bootstrap import bootstrap_ci
        from ...metrics.evaluate import evaluate

        if not any(k in refs for k in preds):
            return {"n": 0, "corpus": {}, "ci95": {}, "missing": {"count": len(refs), "ids": list(refs)}}
        rep = evaluate(preds, refs, self.core, **self.kw)
        ids = [k for k in refs if k in preds]  # evaluate's order
        corpus, per = dict(rep["corpus"]), {m: np.array([rep["per_image"][k][m] for k in ids], dtype=float)
                                            for m in rep["corpus"]}  # fmt: skip
        if self.meteor is not None:
            from ...metrics.tokenize import ptb_tokenize

            c, p = self.meteor.compute_score(ptb_tokenize({k: list(refs[k]) for k in ids}),
                                             ptb_tokenize({k: [preds[k]] for k in ids}))  # fmt: skip
            corpus["meteor"], per["meteor"] = c, np.asarray(p, dtype=float)
        if self.bert is not None:
            todo = [k for k in ids if (mode, k) not in self._bert_cache]
            if todo:
                b = self.bert.score([preds[k] for k in todo], [list(refs[k]) for k in todo])
                for i, k in enumerate(todo):
                    self._bert_cache[(mode, k)] = {m: float(v[i]) for m, v in b.items()}
            for m in ("bertscore_p", "bertscore_r", "bertscore_f1"):
                per[m] = np.array([self._bert_cache[(mode, k)][m] for k in ids])
                corpus[m] = float(per[m].mean())
        ci = bootstrap_ci(per, n_resamples=self.kw.get("bootstrap", 1000), seed=self.kw.get("seed", 0))
        return {"n": rep["n_images"], "corpus": corpus, "ci95": ci, "missing": rep["missing"]}


def evaluate_regions(
    rows: Iterable[Mapping[str, Any]],
    refs: Mapping[str, Sequence[str]],
    attributes: Mapping[str, str] | None = None,
    metrics: str | Sequence[str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Scores per prompting mode, and per attribute within each mode (see the module doc).

    ``kw`` goes to :func:`~pixscribe.metrics.evaluate.evaluate` (``bootstrap``, ``seed``,
    ``bertscore_model``...). A group with no prediction matching a reference is reported
    with ``n = 0`` and no scores."""
    attributes = {str(k): attribute_key(str(v)) for k, v in (attributes or {}).items() if v}
    refs = {str(k): list(v) for k, v in refs.items() if v}
    groups = _group(rows, attributes)
    scorers = _Scorers(metrics, kw)
    by_mode: dict[str, Any] = {}
    try:
        for mode, items in sorted(groups.items()):
            preds = {k: v["caption"] for k, v in items.items() if v["caption"]}
            entry = scorers.score(mode, preds, refs)
            attr_of = {k: attributes.get(k) or items.get(k, {}).get("attribute") or NO_ATTRIBUTE for k in refs}
            entry["by_attribute"] = {}
            for attr in sorted(set(attr_of.values())):
                sub = {k: v for k, v in refs.items() if attr_of[k] == attr}
                entry["by_attribute"][attr] = scorers.score(mode, {k: c for k, c in preds.items() if k in sub}, sub)
            by_mode[mode] = entry
    finally:
        scorers.close()
    return {"by_prompt_mode": by_mode, "n_refs": len(refs), "modes": sorted(by_mode)}


def explode_regions(rows: Iterable[Mapping[str, Any]], column: str = "regions") -> list[dict[str, Any]]:
    """Rows with a ``regions`` list column -> one row per region; a row with a ``region`` dict
    (the region method's one row per region) -> that region's keys over the row's; other rows
    pass through. A ``region``/``regions`` value that is not (JSON text of) an object / a list
    of objects is a ValueError saying so."""
    out: list[dict[str, Any]] = []
    for r in rows:
        one = _json_value(r.get("region"), "region")
        if isinstance(one, dict):
            out.append({**r, **one})
            continue
        if column not in r:
            out.append(dict(r))
            continue
        items = _json_value(r.get(column), column) or []
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise ConfigError(f"the {column!r} column is not a list of region objects")
        out.extend(dict(x) for x in items)
    return out


def _json_value(v: Any, column: str) -> Any:
    if not isinstance(v, str):
        return v
    import json

    try:
        return json.loads(v)
    except (ValueError, RecursionError):
        raise InputFileError(f"the {column!r} column is not valid JSON") from None


from .eval_io import read_region_predictions, read_region_references  # noqa: E402 - re-exported

__all__ = ["evaluate_regions", "explode_regions", "read_region_predictions", "read_region_references"]
