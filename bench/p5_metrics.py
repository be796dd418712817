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

    ref_runs = []  # (tokenize, score) seconds per run
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        tg, tr = PTBTokenizer().tokenize(G), PTBTokenizer().tokenize(R)
        t1 = time.perf_counter()
        b, bl = Bleu(4).compute_score(tg, tr, verbose=0)
        r, rl = Rouge().compute_score(tg, tr)
        c, cl = Cider().compute_score(tg, tr)
        t2 = time.perf_counter()
        ref_runs.append((t1 - t0, t2 - t1))
    ref_scores = {f"bleu_{k + 1}": (b[k], np.asarray(bl[k])) for k in range(4)}
    ref_scores["rouge_l"] = (r, rl)
    ref_scores["cider_d"] = (c, cl)

    from pixscribe.metrics import tokenize as tk
    from pixscribe.metrics.coco import coco_scores

    own_runs = []
    for _ in range(a.repeat):
        tk.clear_caches()  # no help from earlier runs: every run starts cold
        t3 = time.perf_counter()
        mg, mr = tk.ptb_tokenize(G), tk.ptb_tokenize(R)
        t4 = time.perf_counter()
        corpus, per, ids = coco_scores(mg, mr)
        t5 = time.perf_counter()
        own_runs.append((t4 - t3, t5 - t4))

    def best(runs):  # best tokenize, best score, best total (each over the runs)
        return min(t for t, _ in runs), min(s for _, s in runs), min(t + s for t, s in runs)

    rt, rs, rtot = best(ref_runs)
    ot, os_, otot = best(own_runs)
    print(f"P5  {a.images} images x {a.refs} refs (seed {a.seed}), best of {a.repeat}, both sides tokenize + score")
    print(f"{'':18}{'pycocoevalcap':>14}{'pixscribe':>12}{'ratio':>8}")
    print(f"{'tokenize (s)':18}{rt:14.3f}{ot:12.3f}{rt / ot:8.1f}")
    print(f"{'score (s)':18}{rs:14.3f}{os_:12.3f}{rs / os_:8.1f}")
    print(f"{'total (s)':18}{rtot:14.3f}{otot:12.3f}{rtot / otot:8.1f}")
    print(f"all runs, total (s): pycocoevalcap {[round(t + s, 3) for t, s in ref_runs]}, "
          f"pixscribe {[round(t + s, 3) for t, s in own_runs]}")
    print(f"tokenized captions equal: {tg == mg and tr == mr}")
    worst = 0.0
    for k, (cv, pv) in ref_scores.items():
        d = max(abs(cv - corpus[k]), float(np.abs(pv - per[k]).max()))
        worst = max(worst, d)
        print(f"  {k:8} corpus {cv:.6f} vs {corpus[k]:.6f}   max abs diff (corpus+per-image) {d:.2e}")
    print(f"max abs score difference: {worst:.2e}")


if __name__ == "__main__":
    main()
