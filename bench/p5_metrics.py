"""P5: own BLEU + ROUGE-L + CIDEr-D (tokenizer included) against pycocoevalcap.

Data: seeded synthetic captions, 5,000 images x 5 references + 1 hypothesis, drawn
from a 2,000-word vocabulary with commas, periods, hyphenated words, contractions,
possessives, numbers and the odd quote or bracket.

    python bench/p5_metrics.py [--images 5000] [--refs 5] [--seed 0]

Prints both timings, the ratio and the max abs difference of every score.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np


def synth(n_images: int, n_refs: int, seed: int):
    rng = random.Random(seed)
    syll = ["ba", "ko", "ri", "tu", "me", "sa", "lo", "ni", "da", "pe", "zu", "ga", "fi", "mo", "te"]
    vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(4000)})[:2000]
    common = ["a", "the", "of", "on", "in", "with", "and", "is", "two", "man", "woman", "dog", "table", "near"]
    zipf = [1.0 / (i + 1) for i in range(len(vocab))]

    def word() -> str:
        r = rng.random()
        if r < 0.35:
            return rng.choice(common)
        w = rng.choices(vocab, weights=zipf)[0]
        r = rng.random()
        if r < 0.03:
            w = w + "-" + rng.choice(vocab)
        elif r < 0.05:
            w = w + "'s"
        elif r < 0.06:
            w = rng.choice(["don't", "isn't", "can't", "they're"])
        elif r < 0.08:
            w = str(rng.choice([2, 3, 10, 1000, 3.5, "1,000"]))
        elif r < 0.09:
            w = f'"{w}"'
        elif r < 0.10:
            w = f"({w})"
        return w

    def caption() -> str:
        ws = [word() for _ in range(rng.randint(7, 16))]
        if rng.random() < 0.3:
            ws[rng.randrange(1, len(ws))] += ","
        s = " ".join(ws)
        s = s[0].upper() + s[1:]
        return s + rng.choice([".", ".", "", " .", "!"])

    gts = {str(i): [caption() for _ in range(n_refs)] for i in range(n_images)}
    res = {str(i): [caption() if rng.random() < 0.5 else gts[str(i)][0][::-1][::-1].replace("a", "the", 1)]
           for i in range(n_images)}
    return gts, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs each (the machine may be shared)")
    a = ap.parse_args()
    gts, res = synth(a.images, a.refs, a.seed)
    G = {k: [{"caption": c} for c in v] for k, v in gts.items()}
    R = {k: [{"caption": c} for c in v] for k, v in res.items()}

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    best_ref = (1e9, 1e9)
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        tg, tr = PTBTokenizer().tokenize(G), PTBTokenizer().tokenize(R)
        t1 = time.perf_counter()
        b, bl = Bleu(4).compute_score(tg, tr, verbose=0)
        r, rl = Rouge().compute_score(tg, tr)
        c, cl = Cider().compute_score(tg, tr)
        t2 = time.perf_counter()
        best_ref = min(best_ref, (t2 - t0, t1 - t0))
    ref_scores = {f"bleu_{k + 1}": (b[k], np.asarray(bl[k])) for k in range(4)}
    ref_scores["rouge_l"] = (r, rl)
    ref_scores["cider_d"] = (c, cl)

    from pixscribe.metrics import tokenize as tk
    from pixscribe.metrics.coco import coco_scores

    best_own = (1e9, 1e9)
    for _ in range(a.repeat):
        tk._CACHE.clear()  # no help from earlier runs
        t3 = time.perf_counter()
        mg, mr = tk.ptb_tokenize(G), tk.ptb_tokenize(R)
        t4 = time.perf_counter()
        corpus, per, ids = coco_scores(mg, mr)
        t5 = time.perf_counter()
        best_own = min(best_own, (t5 - t3, t4 - t3))
    t0, t1, t2 = 0.0, best_ref[1], best_ref[0]
    t3, t4, t5 = 0.0, best_own[1], best_own[0]
    ref_t, own_t = t2 - t0, t5 - t3
    print(f"P5  {a.images} images x {a.refs} refs (seed {a.seed}), best of {a.repeat}")
    print(f"{'':18}{'pycocoevalcap':>14}{'pixscribe':>12}{'ratio':>8}")
    print(f"{'tokenize (s)':18}{t1 - t0:14.3f}{t4 - t3:12.3f}{(t1 - t0) / (t4 - t3):8.1f}")
    print(f"{'score (s)':18}{t2 - t1:14.3f}{t5 - t4:12.3f}{(t2 - t1) / (t5 - t4):8.1f}")
    print(f"{'total (s)':18}{ref_t:14.3f}{own_t:12.3f}{ref_t / own_t:8.1f}")
    print(f"tokenized captions equal: {tg == mg and tr == mr}")
    worst = 0.0
    for k, (cv, pv) in ref_scores.items():
        d = max(abs(cv - corpus[k]), float(np.abs(pv - per[k]).max()))
        worst = max(worst, d)
        print(f"  {k:8} corpus {cv:.6f} vs {corpus[k]:.6f}   max abs diff (corpus+per-image) {d:.2e}")
    print(f"max abs score difference: {worst:.2e}")


if __name__ == "__main__":
    main()
