"""Lite profile: throughput (img/s on this machine's cores) and per-expert latency.

Runs the real engine with `--profile lite` over N copies of the sample photos (each copy
slightly different so ids differ); then the experts stage alone on the same N decoded images
in batches of 8 (no decode, no writing; experts side by side vs one after another); then times
each offline expert alone on every sample photo (median of 3).

    python bench/p_lite.py [--n 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.experts import LITE_EXPERTS, build_expert
from pixscribe.testing import SAMPLE_NAMES, sample_photo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixscribe-lite-"))
    photos = {n: sample_photo(n) for n in SAMPLE_NAMES}
    rng = np.random.default_rng(0)
    names = list(photos)
    for i in range(a.n):
        n = names[i % len(names)]
        arr = np.clip(np.asarray(photos[n]).astype(np.int16) + rng.integers(-2, 3, size=(1, 1, 3)), 0, 255)
        arr = arr.astype(np.uint8)
        arr[:8, :8] = (i % 256, i // 256, 99)  # a corner mark makes every copy's bytes unique
        Image.fromarray(arr).save(tmp / f"{i:04d}-{n}.jpg", quality=92)
    cfg = RunConfig(inputs=[str(tmp)], output=str(tmp / "out"), profile="lite", method="experts", progress=False)
    t = time.perf_counter()
    s = Runner(cfg).run()
    wall = time.perf_counter() - t
    assert s.rows_written == a.n and s.error_rows == 0, s.to_dict()
    print(f"lite profile: {a.n} images in {wall:.1f} s = {a.n / wall:.2f} img/s on {os.cpu_count()} cores "
          f"(engine, decode pool, model load included)")
    print(f"{'expert':8}" + "".join(f"{n[:12]:>13}" for n in names) + f"{'median':>10}")
    for name in LITE_EXPERTS:
        e = build_expert(name, cfg)
        e.setup()
        row = []
        for n in names:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                e.run([photos[n]])
                times.append(time.perf_counter() - t)
            row.append(statistics.median(times) * 1000)
        print(f"{name:8}" + "".join(f"{v:>11.1f}ms" for v in row) + f"{statistics.median(row):>8.1f}ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
