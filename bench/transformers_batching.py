"""TransformersBackend: a left-padded batch vs the same requests one at a time.

On the tiny random-weight models (pixscribe.testing.tiny) the model itself is cheap, so
this mostly measures the per-call overhead batching removes (template, processor, generate
loop). Prints seconds per request for both and the speed-up, per family, and checks the
batched greedy texts equal the one-at-a-time texts.

    python bench/transformers_batching.py [--n 16] [--max-new-tokens 16] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pixscribe.backends import GenerationRequest, Sampling  # noqa: E402
from pixscribe.backends.transformers_backend import TransformersBackend  # noqa: E402
from pixscribe.testing import SAMPLE_NAMES, sample_photo  # noqa: E402
from pixscribe.testing.tiny import build_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build/reuse the tiny models")
    args = ap.parse_args()

    root = args.dir or os.environ.get("PIXSCRIBE_TINY_DIR") or tempfile.mkdtemp(prefix="pixscribe-tiny-")
    paths = build_all(root)
    photos = [sample_photo(n) for n in SAMPLE_NAMES]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    print(f"n={args.n} max_new_tokens={args.max_new_tokens} repeat={args.repeat} (best of)")
    print(f"{'model':<10} {'batched s/req':>14} {'alone s/req':>12} {'speed-up':>9} {'same text':>10}")
    for name, path in paths.items():
        be = TransformersBackend(str(path)).load()
        reqs = []
        for i in range(args.n):
            prompt = "Describe the image" + " in detail" * (i % 4) + "."
            imgs = [] if name == "text_llm" else [photos[i % len(photos)]]
            reqs.append(GenerationRequest.simple(prompt, imgs, sampling=sampling))
        be.generate(reqs[:2])  # warm up

        def timed(fn):
            best, out = float("inf"), None
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = fn()
                best = min(best, time.perf_counter() - t)
            return best, out

        tb, batched = timed(lambda: be.generate(reqs))
        ta, alone = timed(lambda: [be.generate([r])[0] for r in reqs])
        same = [r.text for r in batched] == [r.text for r in alone]
        print(f"{name:<10} {tb / args.n:>14.4f} {ta / args.n:>12.4f} {ta / tb:>8.2f}x {str(same):>10}")


if __name__ == "__main__":
    main()
