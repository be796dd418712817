"""BLEU-1..4, ROUGE-L and CIDEr-D with the same numbers as pycocoevalcap, vectorised.

Inputs are already tokenized strings (see :mod:`pixscribe.metrics.tokenize`), in
pycocoevalcap's shape: ``gts = {id: [ref, ...]}``, ``res = {id: [hyp]}``.

- BLEU: ``Bleu(4)`` with the ``closest`` reference length (ties -> shorter), the same
  ``tiny``/``small`` smoothing constants, per-image scores computed the way
  ``BleuScorer.compute_score`` builds ``bleu_list`` and the corpus score from summed counts.
- CIDEr-D: pycocoevalcap's ``Cider`` *is* CIDEr-D: tf-idf n-gram vectors (n=1..4) with idf
  from the reference sets, hypothesis weights clipped to the reference's
  (``min(h, r) * r``), a Gaussian length penalty with sigma=6 on the difference of the
  *bigram* counts (that is what its ``length`` counts), averaged over references, x10.
  The idf depends on the whole corpus, so per-image CIDEr-D is only defined together
  with the corpus it was computed in.
- ROUGE-L: LCS-based F-measure with beta=1.2, max precision and max recall over the
  references; the LCS is computed bit-parallel (Hyyrö) on Python integers.

N-grams of all sentences are numbered with ``numpy.unique`` (an n-gram id is the pair
(id of its (n-1)-gram prefix, last token)), then counting, clipping, idf and the cosine
terms are array operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

_TINY = 1e-15
_SMALL = 1e-9


@dataclass
class _Grams:
    """All n-gram occurrences of a list of sentences, counted per sentence."""

    sent: np.ndarray  # sentence index of each (sentence, gram) entry
    gram: np.ndarray  # global gram id (orders share one id space)
    order: np.ndarray  # n - 1
    count: np.ndarray  # term frequency in the sentence
    n_grams: int


def _count_grams(sentences: Sequence[Sequence[str]], n: int = 4) -> _Grams:
    vocab: dict[str, int] = {}
    lens = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    flat = [vocab.setdefault(w, len(vocab)) for s in sentences for w in s]
    toks = np.asarray(flat, dtype=np.int64)
    sent_of_tok = np.repeat(np.arange(len(sentences), dtype=np.int64), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else np.zeros(0, np.int64)
    pos_in_sent = np.arange(len(toks), dtype=np.int64) - np.repeat(starts, lens)
    V = max(len(vocab), 1)
    sents, grams, orders, counts = [], [], [], []
    prev_ids = toks  # (n-1)-gram ids ending at each position (for n=1: token ids)
    offset = 0
    cur_ids = toks.copy()
    n_total = 0
    for k in range(1, n + 1):
        if k == 1:
            valid = np.ones(len(toks), dtype=bool)
            uniq, inv = np.unique(toks, return_inverse=True)
            cur_ids = inv.astype(np.int64)
            n_k = len(uniq)
        else:
            valid = pos_in_sent >= (k - 1)
            # gram ending at position p = (k-1 gram ending at p-1, token at p)
            prev_shift = np.empty_like(prev_ids)
            prev_shift[1:] = prev_ids[:-1]
            if len(prev_shift):
                prev_shift[0] = 0
            key = prev_shift * V + toks
            key = np.where(valid, key, -1)
            uniq, inv = np.unique(key[valid], return_inverse=True)
            cur_ids = np.full(len(toks), -1, dtype=np.int64)
            cur_ids[valid] = inv
            n_k = len(uniq)
        # count per (sentence, gram)
        s_v = sent_of_tok[valid]
        g_v = cur_ids[valid]
        if len(g_v):
            pair = s_v * max(n_k, 1) + g_v
            up, cnt = np.unique(pair, return_counts=True)
            sents.append(up // max(n_k, 1))
            grams.append(up % max(n_k, 1) + offset)
            orders.append(np.full(len(up), k - 1, dtype=np.int64))
            counts.append(cnt.astype(np.float64))
        offset += n_k
        prev_ids = np.where(cur_ids >= 0, cur_ids, 0)
        n_total = offset
    if sents:
        return _Grams(np.concatenate(sents), np.concatenate(grams), np.concatenate(orders),
                      np.concatenate(counts), n_total)
    e = np.zeros(0, dtype=np.int64)
    return _Grams(e, e, e, np.zeros(0), 0)


def _lookup(keys_sorted: np.ndarray, values: np.ndarray, query: np.ndarray, default: float = 0.0) -> np.ndarray:
    if len(keys_sorted) == 0:
        return np.full(len(query), default, dtype=np.float64)
    idx = np.searchsorted(keys_sorted, query)
    idx_c = np.minimum(idx, len(keys_sorted) - 1)
    hit = keys_sorted[idx_c] == query
    return np.where(hit, values[idx_c], default)


class _Prepared:
    """Hypotheses and references of a corpus, split into tokens and counted once."""

    def __init__(self, gts: Mapping[object, Sequence[str]], res: Mapping[object, Sequence[str]], n: int = 4):
        if set(gts.keys()) != set(res.keys()):
            raise ValueError("gts and res must have the same image ids")
        self.ids = list(gts.keys())
        self.n = n
        hyps = []
        for i in self.ids:
            h = res[i]
            if len(h) != 1:
                raise ValueError(f"image {i!r}: expected exactly one hypothesis, got {len(h)}")
            hyps.append(h[0])
        refs: list[str] = []
        ref_img: list[int] = []
        for k, i in enumerate(self.ids):
            r = gts[i]
            if len(r) < 1:
                raise ValueError(f"image {i!r}: no references")
            refs.extend(r)
            ref_img.extend([k] * len(r))
        self.hyp_text = hyps
        self.ref_text = refs
        self.N = len(self.ids)
        self.ref_img = np.asarray(ref_img, dtype=np.int64)
        self.n_refs = np.bincount(self.ref_img, minlength=self.N)
        split = [s.split() for s in hyps] + [s.split() for s in refs]
        self.hyp_len = np.asarray([len(s) for s in split[: self.N]], dtype=np.float64)
        self.ref_len = np.asarray([len(s) for s in split[self.N:]], dtype=np.float64)
        g = _count_grams(split, n)
        self.G = max(g.n_grams, 1)
        is_hyp = g.sent < self.N
        self.h_img = g.sent[is_hyp]
        self.h_gram = g.gram[is_hyp]
        self.h_order = g.order[is_hyp]
        self.h_count = g.count[is_hyp]
        self.r_sent = g.sent[~is_hyp] - self.N
        self.r_img = self.ref_img[self.r_sent]
        self.r_gram = g.gram[~is_hyp]
        self.r_order = g.order[~is_hyp]
        self.r_count = g.count[~is_hyp]


def _bleu(p: _Prepared) -> tuple[list[float], np.ndarray]:
    n, N = p.n, p.N
    # max reference count per (image, gram)
    key = p.r_img * p.G + p.r_gram
    order = np.argsort(key, kind="stable")
    ks = key[order]
    cs = p.r_count[order]
    if len(ks):
        starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
        ukeys = ks[starts]
        umax = np.maximum.reduceat(cs, starts)
    else:
        ukeys, umax = ks, cs
    hkey = p.h_img * p.G + p.h_gram
    refmax = _lookup(ukeys, umax, hkey)
    clipped = np.minimum(p.h_count, refmax)
    correct = np.zeros((N, n))
    np.add.at(correct, (p.h_img, p.h_order), clipped)
    testlen = p.hyp_len
    guess = np.maximum(0.0, testlen[:, None] - np.arange(n)[None, :])
    # closest reference length, ties -> the shorter one
    diff = np.abs(p.ref_len - testlen[p.ref_img])
    o = np.lexsort((p.ref_len, diff, p.ref_img))
    first = np.concatenate([[True], p.ref_img[o][1:] != p.ref_img[o][:-1]])
    reflen = np.zeros(N)
    reflen[p.ref_img[o][first]] = p.ref_len[o][first]
    # per image (bleu_list), cumulative product over orders as pycocoevalcap does
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    bp = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    frac = (correct + _TINY) / (guess + _SMALL)
    cum = np.cumprod(frac, axis=1)
    per = cum ** (1.0 / np.arange(1, n + 1))[None, :] * bp[:, None]
    # corpus
    tc = correct.sum(0)
    tg = guess.sum(0)
    T, R = float(testlen.sum()), float(reflen.sum())
    bleus = []
    b = 1.0
    for k in range(n):
        b *= float(tc[k] + _TINY) / (tg[k] + _SMALL)
        bleus.append(b ** (1.0 / (k + 1)))
    r = (T + _TINY) / (R + _SMALL)
    if r < 1:
        bleus = [x * math.exp(1 - 1 / r) for x in bleus]
    return bleus, per


def _cider(p: _Prepared, sigma: float = 6.0) -> np.ndarray:
    n, N = p.n, p.N
    # document frequency: images whose references contain the gram
    ig = np.unique(p.r_img * p.G + p.r_gram)
    df = np.bincount(ig % p.G, minlength=p.G).astype(np.float64)
    log_n = np.log(float(N))
    w = log_n - np.log(np.maximum(1.0, df))
    hv = p.h_count * w[p.h_gram]
    rv = p.r_count * w[p.r_gram]
    h_norm = np.zeros((N, n))
    np.add.at(h_norm, (p.h_img, p.h_order), hv * hv)
    h_norm = np.sqrt(h_norm)
    n_ref_sent = len(p.ref_len)
    r_norm = np.zeros((n_ref_sent, n))
    np.add.at(r_norm, (p.r_sent, p.r_order), rv * rv)
    r_norm = np.sqrt(r_norm)
    # hypothesis value for every reference entry of the same image and gram
    hkey = p.h_img * p.G + p.h_gram
    o = np.argsort(hkey)
    hv_at_r = _lookup(hkey[o], hv[o], p.r_img * p.G + p.r_gram)
    acc = np.zeros((n_ref_sent, n))
    np.add.at(acc, (p.r_sent, p.r_order), np.minimum(hv_at_r, rv) * rv)
    denom = h_norm[p.ref_img] * r_norm
    ok = (h_norm[p.ref_img] != 0) & (r_norm != 0)
    val = np.where(ok, acc / np.where(ok, denom, 1.0), acc)
    # "length" in pycocoevalcap counts bigrams
    hb = np.maximum(0.0, p.hyp_len - 1)
    rb = np.maximum(0.0, p.ref_len - 1)
    delta = hb[p.ref_img] - rb
    val = val * (np.e ** (-(delta ** 2) / (2 * sigma ** 2)))[:, None]
    score = np.zeros((N, n))
    np.add.at(score, p.ref_img, val)
    return score.mean(axis=1) / p.n_refs * 10.0


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return 0
    masks: dict[str, int] = {}
    for i, t in enumerate(b):
        masks[t] = masks.get(t, 0) | (1 << i)
    full = (1 << m) - 1
    v = full
    for t in a:
        u = v & masks.get(t, 0)
        v = ((v + u) | (v - u)) & full
    return m - bin(v).count("1")


def _rouge(p: _Prepared, beta: float = 1.2) -> np.ndarray:
    out = np.zeros(p.N)
    b2 = beta ** 2
    k = 0
    for i in range(p.N):
        c = p.hyp_text[i].split(" ")
        lc = float(len(c))
        pm = rm = 0.0
        for _ in range(int(p.n_refs[i])):
            r = p.ref_text[k].split(" ")
            k += 1
            lcs = _lcs(r, c)
            pm = max(pm, lcs / lc)
            rm = max(rm, lcs / float(len(r)))
        if pm != 0 and rm != 0:
            out[i] = ((1 + b2) * pm * rm) / float(rm + b2 * pm)
    return out


def coco_scores(
    gts: Mapping[object, Sequence[str]],
    res: Mapping[object, Sequence[str]],
    metrics: Sequence[str] = ("bleu", "rouge_l", "cider_d"),
) -> tuple[dict[str, float], dict[str, np.ndarray], list[object]]:
    """Corpus and per-image BLEU-1..4 / ROUGE-L / CIDEr-D on tokenized captions.

    Returns ``(corpus, per_image, ids)``: ``corpus`` maps ``bleu_1..4``, ``rouge_l``,
    ``cider_d`` to floats; ``per_image`` maps the same names to arrays aligned with ``ids``.
    """
    p = _Prepared(gts, res)
    corpus: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    if "bleu" in metrics:
        bleus, per_b = _bleu(p)
        for k in range(4):
            corpus[f"bleu_{k + 1}"] = float(bleus[k])
            per[f"bleu_{k + 1}"] = per_b[:, k]
    if "rouge_l" in metrics:
        r = _rouge(p)
        corpus["rouge_l"] = float(np.mean(r)) if len(r) else 0.0
        per["rouge_l"] = r
    if "cider_d" in metrics:
        c = _cider(p)
        corpus["cider_d"] = float(np.mean(c)) if len(c) else 0.0
        per["cider_d"] = c
    return corpus, per, p.ids
