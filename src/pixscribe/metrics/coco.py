"""BLEU-1..4, ROUGE-L and CIDEr-D with the same numbers as pycocoevalcap, and plain CIDEr, vectorised.

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
- CIDEr (``cider``): the original metric as the CIDEr authors' ``pyciderevalcap`` computes it
  (``Cider(df="corpus")``): the same tf-idf vectors and idf, the plain cosine (no clipping)
  and no length penalty, averaged over references, x10.
- ROUGE-L: LCS-based F-measure with beta=1.2, max precision and max recall over the
  references, on ``split(" ")`` tokens as pycocoevalcap; the LCS is computed bit-parallel
  (Hyyrö) for all (reference, hypothesis) pairs at once on uint64 bit vectors.

All sentences are split once; every n-gram (n=1..4) gets an integer id (the pair (id of
its (n-1)-gram prefix, last token), numbered with ``numpy.unique``), and a single sort of
``(image, gram, sentence slot)`` keys gives the counts BLEU clipping and CIDEr-D's document
frequencies and tf-idf products share; the rest are ``bincount``/``reduceat`` operations.
"""

from __future__ import annotations

import math
import re
from itertools import chain
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputFileError

_TINY = 1e-15
_SMALL = 1e-9


def _dense_ids(words: list[str]) -> tuple[np.ndarray, int]:
    """Integer ids (first-occurrence order) of a list of strings, and the vocabulary size."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    return np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words)), len(vocab)



def _flatten(ids: list[object], gts: Mapping[object, Sequence[str]],
             res: Mapping[object, Sequence[str]]) -> tuple[list[str], list[str], list[int]]:
    """(one hypothesis per image, every reference in image order, references per image)."""
    hyps: list[str] = []
    refs: list[str] = []
    n_refs: list[int] = []
    for i in ids:
        h, r = res[i], gts[i]
        if len(h) != 1:
            raise ValueError(f"image {i!r}: expected exactly one hypothesis, got {len(h)}")
        if len(r) < 1:
            raise InputFileError(f"image {i!r}: no references")
        hyps.append(h[0])
        refs.extend(r)
        n_refs.append(len(r))
    return hyps, refs, n_refs


def _ngram_occurrences(tok: np.ndarray, pos: np.ndarray, V: int,
                       n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Per order k = 1..n: the token positions where a k-gram ends, its gram id (offset past
    the lower orders' ids) and how many distinct k-grams there are. The k-gram ending at p is
    (id of the (k-1)-gram ending at p-1, token p)."""
    T = len(tok)
    occ_tok: list[np.ndarray] = []
    occ_gram: list[np.ndarray] = []
    sizes: list[int] = []
    offset = 0
    prev = tok
    for k in range(1, n + 1):
        if k == 1:
            idx = np.arange(T, dtype=np.int64)
            ids_k, n_k = tok, V
        else:
            idx = np.flatnonzero(pos >= k - 1)
            raw = prev[idx - 1] * V + tok[idx]
            if len(raw):
                _u, inv = np.unique(raw, return_inverse=True)
                ids_k, n_k = inv.reshape(-1).astype(np.int64), len(_u)
            else:
                ids_k, n_k = raw, 0
            nxt = np.zeros(T, dtype=np.int64)
            nxt[idx] = ids_k
            prev = nxt
        occ_tok.append(idx)
        occ_gram.append(ids_k + offset)
        sizes.append(n_k)
        offset += n_k
    return occ_tok, occ_gram, sizes

class _Prepared:
    """Hypotheses and references of a corpus, split into tokens and counted once.

    Sentences are numbered hypotheses first (``0..N-1``, sentence ``i`` is image ``i``'s
    hypothesis), then references in image order. Every n-gram (n=1..4) gets an integer id
    (orders share one id space) and every occurrence the key
    ``(image * G + gram) * S + slot`` (slot 0: the hypothesis, 1..: the references), so one
    ``np.sort`` groups the counts per (image, gram) with the hypothesis count first: BLEU
    clipping, CIDEr-D document frequencies and the tf-idf products are then array operations
    on those groups, shared by both metrics.
    """

    def __init__(self, gts: Mapping[object, Sequence[str]], res: Mapping[object, Sequence[str]], n: int = 4):
        if set(gts.keys()) != set(res.keys()):
            raise ValueError("gts and res must have the same image ids")
        self.ids = list(gts.keys())
        self.n = n
        hyps, refs, n_refs = _flatten(self.ids, gts, res)
        self.hyp_text = hyps
        self.ref_text = refs
        N = self.N = len(self.ids)
        self.n_refs = np.asarray(n_refs, dtype=np.int64).reshape(N)
        self.ref_start = np.cumsum(self.n_refs) - self.n_refs
        self.ref_img = np.repeat(np.arange(N, dtype=np.int64), self.n_refs)
        n_ref_sent = len(refs)
        sents = hyps + refs
        n_sent = len(sents)
        # tokens as pycocoevalcap's BLEU and CIDEr see them (str.split())
        split = list(map(str.split, sents))
        lens = np.fromiter(map(len, split), dtype=np.int64, count=n_sent)
        words = list(chain.from_iterable(split))
        tok, V = _dense_ids(words)
        self.tok, self.lens, self.V = tok, lens, V
        self.hyp_len = lens[:N].astype(np.float64)
        self.ref_len = lens[N:].astype(np.float64)
        T = len(tok)
        sent_of_tok = np.repeat(np.arange(n_sent, dtype=np.int64), lens)
        starts = np.cumsum(lens) - lens
        pos = np.arange(T, dtype=np.int64) - starts[sent_of_tok]
        self.sent_of_tok, self.pos = sent_of_tok, pos

        occ_tok, occ_gram, sizes = _ngram_occurrences(tok, pos, V, n)
        G = self.G = max(sum(sizes), 1)
        self.order_of_gram = np.repeat(np.arange(n, dtype=np.int64), sizes)
        S = int(self.n_refs.max()) + 1 if N else 1
        if N * G * S >= 2 ** 62:  # pragma: no cover - far beyond any caption corpus
            raise ValueError("corpus too large for 64-bit n-gram keys")
        img_of_sent = np.concatenate([np.arange(N, dtype=np.int64), self.ref_img])
        slot_of_sent = np.concatenate([np.zeros(N, dtype=np.int64),
                                       np.arange(n_ref_sent, dtype=np.int64) - self.ref_start[self.ref_img] + 1])
        base = (img_of_sent * G * S + slot_of_sent)[sent_of_tok]
        p = np.concatenate(occ_tok)
        key = np.sort(base[p] + np.concatenate(occ_gram) * S)
        # one entry per (image, gram, slot) with its count
        if len(key):
            first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
            ukey = key[first]
            cnt = np.diff(np.append(first, len(key))).astype(np.float64)
        else:
            ukey, cnt = key, np.zeros(0)
        slot = ukey % S
        grp = ukey // S
        # groups: one per (image, gram); the hypothesis entry (slot 0) comes first
        if len(grp):
            gnew = np.concatenate([[True], grp[1:] != grp[:-1]])
        else:
            gnew = np.zeros(0, dtype=bool)
        gstart = np.flatnonzero(gnew)
        gidx = np.cumsum(gnew) - 1
        is_hyp = slot == 0
        hc = np.zeros(len(gstart))
        hc[gidx[is_hyp]] = cnt[is_hyp]
        cnt_ref = np.where(is_hyp, 0.0, cnt)
        rmax = np.maximum.reduceat(cnt_ref, gstart) if len(gstart) else np.zeros(0)
        g_grp = grp[gstart]
        self.g_img = g_grp // G
        self.g_gram = g_grp % G
        self.g_order = self.order_of_gram[self.g_gram]
        self.g_hyp = hc  # hypothesis count of the gram
        self.g_refmax = rmax  # max count over the image's references
        # reference entries
        er = ~is_hyp
        self.e_idx = gidx[er]  # group of the entry
        self.e_count = cnt[er]
        e_grp = grp[er]
        self.e_gram = e_grp % G
        self.e_sent = self.ref_start[e_grp // G] + slot[er] - 1
        self.e_order = self.order_of_gram[self.e_gram]


def _bleu(p: _Prepared) -> tuple[list[float], np.ndarray]:
    n, N = p.n, p.N
    clipped = np.minimum(p.g_hyp, p.g_refmax)
    correct = np.bincount(p.g_img * n + p.g_order, weights=clipped, minlength=N * n).reshape(N, n)
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


def _cider(p: _Prepared, sigma: float = 6.0, plain: bool = False) -> np.ndarray:
    """CIDEr-D as pycocoevalcap; ``plain``: the original CIDEr (no clipping, no length penalty)."""
    n, N = p.n, p.N
    # document frequency: images whose references contain the gram
    df = np.bincount(p.g_gram[p.g_refmax > 0], minlength=p.G).astype(np.float64)
    w = np.log(float(N)) - np.log(np.maximum(1.0, df))
    hv = p.g_hyp * w[p.g_gram]  # hypothesis tf-idf per (image, gram)
    rv = p.e_count * w[p.e_gram]  # reference tf-idf per (reference, gram)
    h_norm = np.sqrt(np.bincount(p.g_img * n + p.g_order, weights=hv * hv, minlength=N * n)).reshape(N, n)
    n_ref_sent = len(p.ref_len)
    e_key = p.e_sent * n + p.e_order
    r_norm = np.sqrt(np.bincount(e_key, weights=rv * rv, minlength=n_ref_sent * n)).reshape(n_ref_sent, n)
    h_e = hv[p.e_idx]
    acc = np.bincount(e_key, weights=(h_e if plain else np.minimum(h_e, rv)) * rv,
                      minlength=n_ref_sent * n).reshape(n_ref_sent, n)
    hn = h_norm[p.ref_img]
    ok = (hn != 0) & (r_norm != 0)
    val = np.where(ok, acc / np.where(ok, hn * r_norm, 1.0), acc)
    if not plain:
        # "length" in pycocoevalcap counts bigrams
        hb = np.maximum(0.0, p.hyp_len - 1)
        rb = np.maximum(0.0, p.ref_len - 1)
        delta = hb[p.ref_img] - rb
        val = val * (np.e ** (-(delta ** 2) / (2 * sigma ** 2)))[:, None]
    score = np.add.reduceat(val, p.ref_start, axis=0) if N else np.zeros((0, n))
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


def _popcount(v: np.ndarray, builtin: bool = True) -> np.ndarray:
    """Set bits of each uint64 (``np.bitwise_count`` needs numpy >= 2)."""
    if builtin and hasattr(np, "bitwise_count"):
        return np.bitwise_count(v).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[np.ascontiguousarray(v).view(np.uint8)].reshape(len(v), -1).sum(axis=1)


# whitespace where str.split(" ") and str.split() disagree (other than the empty string)
_ODD_SPACE = re.compile(r"[^\S ]|  |^ | $")


def _rouge_tokens(p: _Prepared) -> tuple[np.ndarray, np.ndarray, list[list[str]] | None]:
    """Token ids and lengths of every sentence as ``str.split(" ")`` gives them (ROUGE's split).

    For single-spaced text this is the BLEU/CIDEr-D split, except that an empty sentence is
    one empty token (it then has length 1 and matches only another empty sentence).
    """
    sents = p.hyp_text + p.ref_text
    # cheap pre-filter: any whitespace other than " " makes str.isprintable() false
    if not any(_ODD_SPACE.search(s) for s in sents if not s.isprintable() or "  " in s or s[:1] == " " or s[-1:] == " "):
        tok = p.tok
        lens = p.lens
        empty = np.flatnonzero(lens == 0)
        if len(empty):
            # insert one token with id V (the empty string) for each empty sentence
            starts = np.cumsum(lens) - lens
            tok = np.insert(tok, starts[empty], p.V)
            lens = np.maximum(lens, 1)
        return tok, lens, None
    split = [s.split(" ") for s in sents]
    words = [w for s in split for w in s]
    tok, _V = _dense_ids(words)
    lens = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    return tok, lens, split


def _rouge(p: _Prepared, beta: float = 1.2) -> np.ndarray:
    """pycocoevalcap's ROUGE-L: LCS of every (reference, hypothesis) pair, bit-parallel (Hyyrö)
    with the hypothesis as a uint64 bit vector, for all pairs at once (hypotheses longer than
    64 tokens use the Python-integer version)."""
    N = p.N
    b2 = beta ** 2
    tok, lens, split = _rouge_tokens(p)
    starts = np.cumsum(lens) - lens
    n_sent = len(lens)
    hyp_len, ref_len = lens[:N], lens[N:]
    lcs = np.zeros(len(ref_len), dtype=np.int64)
    pair_h = p.ref_img  # reference r is compared with hypothesis ref_img[r]
    vec = hyp_len[pair_h] <= 64
    rv = np.flatnonzero(vec)
    if len(rv):
        # padded matrices (hypotheses padded with -2, references with -1: padding never matches)
        sent_of_tok = np.repeat(np.arange(n_sent, dtype=np.int64), lens)
        pos = np.arange(len(tok), dtype=np.int64) - starts[sent_of_tok]
        lh = int(hyp_len[pair_h[rv]].max())
        width = 8 if lh <= 8 else 16 if lh <= 16 else 32 if lh <= 32 else 64
        H = np.full((N, width), -2, dtype=np.int64)
        ht = sent_of_tok < N
        keep = ht & (pos < width)
        H[sent_of_tok[keep], pos[keep]] = tok[keep]
        udt = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
        one = np.uint64(1)
        # sort pairs by reference length so that blocks pad little
        rv = rv[np.argsort(ref_len[rv], kind="stable")]
        block = max(1, (1 << 22) // (width * max(1, int(ref_len[rv[-1]]))))
        block = max(block, 256)
        for b0 in range(0, len(rv), block):
            r = rv[b0:b0 + block]
            la = int(ref_len[r].max())
            idx = (starts[N + r][:, None] + np.arange(la)[None, :])
            A = np.where(np.arange(la)[None, :] < ref_len[r][:, None],
                         tok[np.minimum(idx, len(tok) - 1)], -1)
            eq = A[:, :, None] == H[pair_h[r]][:, None, :]
            masks = np.packbits(eq, axis=-1, bitorder="little").view(udt).reshape(len(r), la).astype(np.uint64)
            m = hyp_len[pair_h[r]].astype(np.uint64)
            full = np.where(m >= 64, np.uint64(0xFFFFFFFFFFFFFFFF),
                            (one << np.minimum(m, np.uint64(63))) - one)
            v = full.copy()
            for t in range(la):
                u = v & masks[:, t]
                v = ((v + u) | (v - u)) & full
            lcs[r] = hyp_len[pair_h[r]] - _popcount(v)
    for r in np.flatnonzero(~vec):  # long hypotheses
        if split is not None:
            a, b = split[N + r], split[pair_h[r]]
        else:
            a = tok[starts[N + r]:starts[N + r] + ref_len[r]].tolist()
            b = tok[starts[pair_h[r]]:starts[pair_h[r]] + hyp_len[pair_h[r]]].tolist()
        lcs[r] = _lcs(a, b)
    lcs_f = lcs.astype(np.float64)
    prec = lcs_f / hyp_len[pair_h]
    rec = lcs_f / ref_len
    pm = np.maximum.reduceat(prec, p.ref_start) if N else np.zeros(0)
    rm = np.maximum.reduceat(rec, p.ref_start) if N else np.zeros(0)
    ok = (pm != 0) & (rm != 0)
    den = np.where(ok, rm + b2 * pm, 1.0)
    return np.where(ok, ((1 + b2) * pm * rm) / den, 0.0)


def coco_scores(
    gts: Mapping[object, Sequence[str]],
    res: Mapping[object, Sequence[str]],
    metrics: Sequence[str] = ("bleu", "rouge_l", "cider_d"),
) -> tuple[dict[str, float], dict[str, np.ndarray], list[object]]:
    """Corpus and per-image BLEU-1..4 / ROUGE-L / CIDEr-D / CIDEr on tokenized captions.

    Returns ``(corpus, per_image, ids)``: ``corpus`` maps ``bleu_1..4``, ``rouge_l``,
    ``cider_d``, ``cider`` to floats; ``per_image`` maps the same names to arrays aligned with ``ids``.
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
    for name in (m for m in ("cider_d", "cider") if m in metrics):
        c = _cider(p, plain=name == "cider")
        corpus[name] = float(np.mean(c)) if len(c) else 0.0
        per[name] = c
    return corpus, per, p.ids
