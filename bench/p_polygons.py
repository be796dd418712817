"""COCO polygon masks: pycocotools in the run's process vs checked and isolated (issue 23).

pixscribe checks each polygon's bounds and rasterises it with pycocotools in a child process
(:mod:`pixscribe.methods.region.polygons`), so a crash in C is one region's error. This measures what
that costs per polygon, side by side in one run, on polygons like COCO's (a ring of 20 to
200 vertices around an object in a 640x480 image):

- ``in-process``: ``frPyObjects`` + ``merge`` + ``decode`` in this process (the old path);
- ``checked+isolated``: :func:`pixscribe.methods.region.masks.decode_polygons` (bounds check, one
  round trip to the child, RLE decoded here).

    python bench/p_polygons.py [--polygons 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pycocotools.mask as mask_api

from pixscribe.methods.region.masks import decode_polygons

W, H = 640, 480


def polygons(n: int, seed: int = 0) -> list[list[list[float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(20, 200))
        cx, cy, r = rng.uniform(100, 540), rng.uniform(100, 380), rng.uniform(10, 100)
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.6, 1.0, k)
        out.append([np.column_stack([cx + rad * np.cos(t), cy + rad * np.sin(t)]).ravel().round(2).tolist()])
    return out


def in_process(rings: list[list[float]]) -> np.ndarray:
    return mask_api.decode(mask_api.merge(mask_api.frPyObjects(rings, H, W))) != 0


def timed(fn, polys) -> float:
    t = time.perf_counter()
    for p in polys:
        fn(p)
    return (time.perf_counter() - t) / len(polys)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polygons", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    polys = polygons(a.polygons)
    for p in polys[:50]:  # same pixels both ways (and the child is started before timing)
        assert (in_process(p) == decode_polygons(p, W, H)).all()
    old, new = [], []
    for _ in range(a.repeats):
        old.append(timed(in_process, polys))
        new.append(timed(lambda p: decode_polygons(p, W, H), polys))
    o, n = statistics.median(old), statistics.median(new)
    print(f"{a.polygons} polygons of 20-200 vertices in a {W}x{H} image, median of {a.repeats}")
    print(f"  in-process pycocotools   {o * 1e3:7.3f} ms/polygon")
    print(f"  checked + isolated       {n * 1e3:7.3f} ms/polygon   ({n / o:.2f}x, +{(n - o) * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
