"""METEOR's time per caption as the caption grows: why ``pixscribe eval --max-caption-chars``
defaults to 10,000 characters (issue 23: a 10 MB caption ran 87 s, took 2.2 GB, then the
Java died).

One persistent METEOR 1.5 process (pixscribe.metrics.meteor, the jar pycocoevalcap ships),
started and warmed before timing; each length is one hypothesis of that many characters
drawn from 15 words (repeated words are METEOR's worst case: many alignments) against two
60-character references, ``--repeats`` different captions per length. Printed: the median
seconds per caption and its ratio to the shortest length's.

    python bench/p_meteor_length.py [--lengths 2000,5000,10000,20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from pixscribe.metrics.meteor import Meteor
from pixscribe.metrics.tokenize import ptb_tokenize

WORDS = "a man riding a red bike down the street next to tall buildings with people walking".split()


def caption(n: int, rng: random.Random) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < n:
        out.append(rng.choice(WORDS))
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="2000,5000,10000,20000")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(0)
    m = Meteor()
    try:
        m.compute_score({"w": ["a cat"]}, {"w": ["a cat"]})  # start-up (the paraphrase table) not timed
        first = None
        for n in (int(x) for x in a.lengths.split(",")):
            times = []
            for _ in range(a.repeats):
                refs = ptb_tokenize({"a": [caption(60, rng), caption(60, rng)]})
                hyp = ptb_tokenize({"a": [caption(n, rng)]})
                t = time.perf_counter()
                m.compute_score(refs, hyp)
                times.append(time.perf_counter() - t)
            s = statistics.median(times)
            first = first or s
            print(f"{n:>7,} characters: {s:6.2f} s  ({s / first:5.1f}x the first)")
    finally:
        m.close()


if __name__ == "__main__":
    main()
