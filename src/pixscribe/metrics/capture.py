"""CAPTURE (Dong et al. 2024, arXiv 2405.19092): scene-graph F1 of detailed captions, scored as its reference does.

Reference: GitHub foundation-multimodal-models/CAPTURE ``capture/capture_metric/capture.py``
@ 52eeb27 (Apache-2.0), ``CAPTURE.compute_score`` with ``prev_gt_parsed`` / ``prev_cand_parsed``:
scoring from **frozen parses**. A parse is a caption's objects, attributes per object and
(subject, relation, object) triples, as the reference's parser stage leaves them (FACTUAL's
T5 scene-graph parser, lemmatised, filtered by the caption's nouns and a stop-word list).

Per candidate and reference parse (:func:`f_scores`):

- objects and attribute words are matched in three passes: exact (each candidate to the
  first unmatched equal reference), then *synonyms* (the first unmatched reference with
  ``compute_synonyms_score > 0``: one word contained in the other, or a non-empty overlap of
  the WordNet lemma names of all their synsets), then *soft*: the unit embeddings of what
  is left, each candidate adding its best cosine to the candidate side and each reference
  its best to the reference side;
- relations the same, a triple matching by synonyms when all three parts do, soft on
  ``" ".join(triple)``;
- precision = matches / (count + 1e-6), recall likewise, F1 = 2PR / (P + R + 1e-6);
  CAPTURE = (0.5 F1_obj + 0.5 F1_attr + 0.2 F1_rel) / 1.2.

An image's score is the mean over its references; the corpus score the mean over images.
The sentence encoder is pluggable (the reference: all-mpnet-base-v2; ``minilm``: the
all-MiniLM-L6-v2 installable here). Embeddings are computed once per distinct phrase (the
reference encodes each image's leftover phrases in batches of 4, pixscribe every phrase once in batches of
64; the numbers agree to float32 precision, ~1e-7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputFileError

EPS = 1e-6
Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass
class Parse:
    objects: list[str]
    attributes: dict[str, list[str]]
    relations: list[tuple[str, str, str]]

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> "Parse":
        try:
            rels = [tuple(r) for r in d.get("relations", [])]
            if any(len(r) != 3 for r in rels):
                raise ValueError("a relation is not [subject, relation, object]")
            return cls([str(o) for o in d.get("objects", [])],
                       {str(k): [str(a) for a in v] for k, v in d.get("attributes", {}).items()},
                       rels)  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputFileError(f"{where}: not a CAPTURE parse ({exc})") from None

    def attribute_words(self) -> list[str]:
        return [a for v in self.attributes.values() for a in v]


class Synonyms:
    """The reference's ``compute_synonyms_score`` on a WordNet reader, memoised."""

    def __init__(self, wordnet: Any = None):
        from .pancap_tags import load_wordnet

        self.wordnet = wordnet or load_wordnet()
        self._names: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple[str, str], float] = {}

    def names(self, word: str) -> frozenset[str]:
        got = self._names.get(word)
        if got is None:
            got = self._names[word] = frozenset(l.name() for s in self.wordnet.synsets(word) for l in s.lemmas())
        return got

    def __call__(self, a: str, b: str) -> float:
        s = self._memo.get((a, b))
        if s is None:
            if a in b or b in a:
                s = 1
            else:
                n1, n2 = self.names("_".join(a.split())), self.names("_".join(b.split()))
                s = len(n1 & n2) / (len(n1 | n2) + EPS)
            self._memo[(a, b)] = s
        return s


class Embedder:
    """Unit embeddings per distinct phrase, computed in one batch per :meth:`prepare`."""

    def __init__(self, encode: Encode):
        self.encode = encode
        self._vec: dict[str, np.ndarray] = {}

    def prepare(self, phrases: Sequence[str]) -> None:
        new = [p for p in dict.fromkeys(phrases) if p not in self._vec]
        if new:
            x = np.asarray(self.encode(new))
            x = x / np.sqrt(np.sum(x ** 2, axis=1, keepdims=True))
            self._vec.update(zip(new, x))

    def matrix(self, phrases: Sequence[str]) -> np.ndarray:
        self.prepare(phrases)
        return np.stack([self._vec[p] for p in phrases])


def _match(cands: Sequence[Any], refs: Sequence[Any], similar: Callable[[Any, Any], bool] | None,
           embed: Embedder | None, text: Callable[[Any], str]) -> tuple[int, Any, Any]:
    """(exact + synonym matches, candidate-side matches, reference-side matches)."""
    total, used_c, used_r = 0, set(), set()
    passes = [lambda c, r: c == r] + ([similar] if similar else [])
    for same in passes:
        for i, c in enumerate(cands):
            if i in used_c:
                continue
            for j, r in enumerate(refs):
                if j not in used_r and same(c, r):
                    used_c.add(i)
                    used_r.add(j)
                    total += 1
                    break
    cand_m: Any = total
    ref_m: Any = total
    left_c = [text(c) for i, c in enumerate(cands) if i not in used_c]
    left_r = [text(r) for j, r in enumerate(refs) if j not in used_r]
    if embed is not None and left_c and left_r:
        sim = embed.matrix(left_c).dot(embed.matrix(left_r).T)
        cand_m = total + np.sum(np.max(sim, axis=1))
        ref_m = total + np.sum(np.max(sim, axis=0))
    return total, cand_m, ref_m


def _prf(cand_m: Any, ref_m: Any, n_c: int, n_r: int) -> tuple[Any, Any, Any]:
    p, r = cand_m / (n_c + EPS), ref_m / (n_r + EPS)
    return p, r, 2 * p * r / (p + r + EPS)


@dataclass(frozen=True)
class CaptureConfig:
    alpha: float = 0.5  # weights of object, attribute and relation F1
    beta: float = 0.5
    gamma: float = 0.2
    synonym_matching: bool = True
    soft_matching: bool = True


FIELDS = ("object_precision", "object_recall", "object_f1", "attribute_precision", "attribute_recall",
          "attribute_f1", "relation_precision", "relation_recall", "relation_f1")


def f_scores(ref: Parse, cand: Parse, cfg: CaptureConfig, synonyms: Callable[[str, str], float] | None,
             embed: Embedder | None) -> tuple[Any, ...]:
    """(CAPTURE, then the nine precision/recall/F1 of :data:`FIELDS`) of one candidate against one reference."""
    word_syn = (lambda a, b: synonyms(a, b) > 0.0) if cfg.synonym_matching and synonyms else None  # noqa: E731
    rel_syn = (lambda c, r: all([synonyms(x, y) > 0.0 for x, y in zip(c, r)])  # type: ignore[misc]  # noqa: E731
               if word_syn else None)
    soft = embed if cfg.soft_matching else None
    _, oc, orr = _match(cand.objects, ref.objects, word_syn, soft, str)
    obj = _prf(oc, orr, len(cand.objects), len(ref.objects))
    ca, ra = cand.attribute_words(), ref.attribute_words()
    _, ac, ar = _match(ca, ra, word_syn, soft, str)
    att = _prf(ac, ar, len(ca), len(ra))
    _, rc, rr = _match(cand.relations, ref.relations, rel_syn, soft, " ".join)
    rel = _prf(rc, rr, len(cand.relations), len(ref.relations))
    score = cfg.alpha * obj[2] + cfg.beta * att[2] + cfg.gamma * rel[2]
    score /= (cfg.alpha + cfg.beta + cfg.gamma)
    return (score, *obj, *att, *rel)


def _phrases(p: Parse) -> list[str]:
    return [*p.objects, *p.attribute_words(), *(" ".join(r) for r in p.relations)]


@dataclass
class CaptureResult:
    score: float  # the corpus CAPTURE score (0-1), as compute_score returns it
    per_image: dict[str, dict[str, float]]  # id -> capture and the nine sub-scores (x100, means over references)
    corpus: dict[str, float]  # capture (0-1) and the means of the sub-scores over images (x100)


def capture(cands: Mapping[str, Parse], refs: Mapping[str, Sequence[Parse]], *,
            config: CaptureConfig | None = None, synonyms: Callable[[str, str], float] | None = None,
            encode: Encode | None = None) -> CaptureResult:
    """Score every id of ``refs`` that has a candidate parse (the reference loops over the references' ids)."""
    cfg = config or CaptureConfig()
    if cfg.alpha + cfg.beta != 1.0:
        raise ConfigError(f"CAPTURE needs alpha + beta == 1 (got {cfg.alpha} + {cfg.beta})")
    if synonyms is None and cfg.synonym_matching:
        synonyms = Synonyms()
    embed = Embedder(encode) if cfg.soft_matching and encode is not None else None
    if cfg.soft_matching and embed is None:
        raise ConfigError("CAPTURE's soft matching needs a sentence encoder (encode=...)")
    if embed is not None:  # one encoding of every phrase the soft pass may need, instead of a call per image
        embed.prepare([x for k, rs in refs.items() if k in cands for p in (cands[k], *rs) for x in _phrases(p)])
    per: dict[str, dict[str, float]] = {}
    scores = []
    for k, ref_parses in refs.items():
        if k not in cands or not ref_parses:
            continue
        results = [f_scores(r, cands[k], cfg, synonyms, embed) for r in ref_parses]
        score = sum(x[0] for x in results) / len(results)
        scores.append(score)
        per[k] = {"capture": float(score), **{f: float(np.mean([float(x[i + 1]) * 100 for x in results]))
                                              for i, f in enumerate(FIELDS)}}
    if not scores:
        raise InputFileError("CAPTURE: no id has both a candidate parse and reference parses")
    total = sum(scores) / len(scores)
    corpus = {"capture": float(total), **{f"capture_{f}": float(np.mean([v[f] for v in per.values()])) for f in FIELDS}}
    return CaptureResult(float(total), per, corpus)


def read_parses(path: str | Path) -> tuple[dict[str, Parse], dict[str, list[Parse]]]:
    """``{"candidates": {id: parse}, "references": {id: [parse, ...]}}`` (see docs/metrics.md)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        cands = {str(k): Parse.from_json(v, f"{p}: candidate {k}") for k, v in data["candidates"].items()}
        refs = {str(k): [Parse.from_json(x, f"{p}: reference {k}") for x in v] for k, v in data["references"].items()}
    except FileNotFoundError:
        raise InputFileError(f"--capture-parses {p}: no such file") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"--capture-parses {p}: not valid JSON ({exc.msg})") from None
    except (KeyError, AttributeError, TypeError) as exc:
        raise InputFileError(f"--capture-parses {p}: expected {{'candidates': {{id: parse}}, 'references': "
                             f"{{id: [parse, ...]}}}} ({exc})") from None
    return cands, refs


def sentence_encoder(spec: str, device: str = "cpu") -> Encode:
    """``minilm`` (all-MiniLM-L6-v2, installed) or ``st:NAME_OR_DIR`` (any sentence-transformers model;
    the reference's is ``st:sentence-transformers/all-mpnet-base-v2``)."""
    from ..deps import require

    st = require("sentence_transformers", extra="detailed", package="sentence-transformers",
                 what="CAPTURE's soft matching")
    if spec == "minilm":
        from .pancap_tags import minilm_path

        model = st.SentenceTransformer(minilm_path(), device=device, local_files_only=True)
    elif spec.startswith("st:"):
        model = st.SentenceTransformer(spec[3:], device=device)
    else:
        raise ConfigError(f"CAPTURE encoder {spec!r}: expected minilm or st:NAME_OR_DIR")
    return lambda texts: model.encode(list(texts), batch_size=64, show_progress_bar=False)


__all__ = ["CaptureConfig", "CaptureResult", "Embedder", "FIELDS", "Parse", "Synonyms", "capture", "f_scores",
           "read_parses", "sentence_encoder"]
