"""P2: does decoding overlap model work?

A simulated model stage sleeps a fixed latency per batch (no CPU, like a GPU doing the
work). Over N generated 1024x768 JPEGs we measure:
  decode time  D = reading + decoding + resizing every image in a pool of the same size, alone,
  model time   M = number of batches x latency (latency chosen so M ~= D, the hardest case),
  wall time    W = the engine's wall time with the sleeping model.
Perfect overlap gives W = max(M, D). Target: W / max(M, D) <= 1.05.
A serial pipeline would take D + M; that is printed too.

    python bench/p2_overlap.py [--n 2000] [--batch-size 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _util import Stopwatch, generate_jpegs
from fixtures_engine import ScriptedBackend

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.testing.methods import method_with


PREFETCH = 4


class SleepBackend(ScriptedBackend):
    def _generate(self, requests):
        import time

        from pixscribe.backends.base import GenerationResult

        self.batches.append(len(requests))
        if self.delay:
            time.sleep(self.delay)
        return [GenerationResult(text="a caption", tokens_out=2) for _ in requests]


def run_once(inp: Path, out: Path, latency: float, batch: int, workers: int) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = RunConfig(inputs=[str(inp)], output=str(out), progress=False, batch_size=batch, decode_workers=workers,
                    prefetch_batches=PREFETCH, vlm="sim")
    backend = SleepBackend(delay=latency)
    with Stopwatch() as sw:
        s = Runner(cfg, method_with(cfg, backend)).run()
    assert s.rows_written == len(list(inp.glob("*.jpg"))) and s.error_rows == 0
    return sw.seconds, len(backend.batches)


def pure_decode(files: list[Path], workers: int) -> float:
    """Read + decode + resize every file in a pool of ``workers`` threads: the decode time D."""
    import concurrent.futures as cf

    from pixscribe.imaging import decode

    def one(p: Path) -> int:
        return decode(p.read_bytes(), max_pixels=1_000_000).width

    import sys

    prev = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as the engine does while it runs
    try:
        with Stopwatch() as sw, cf.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(one, files):
                pass
    finally:
        sys.setswitchinterval(prev)
    return sw.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefetch-batches", type=int, default=4)
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="model time / decode time")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "p2")
    a = ap.parse_args()
    global PREFETCH
    PREFETCH = a.prefetch_batches
    inp = a.data / f"jpegs-{a.n}"
    generate_jpegs(inp, a.n, (1024, 768))
    out = a.data / "out"
    print(f"P2 overlap: n={a.n} batch={a.batch_size} workers={a.workers}")
    files = sorted(inp.glob("*.jpg"))
    e, nb = run_once(inp, out, 0.0, a.batch_size, a.workers)  # also warms the page cache
    print(f"  engine with a zero-latency model: {e:.2f} s ({a.n / e:.0f} img/s)")
    for factor in a.factors:
        # the decode time: the faster of decoding alone and the whole engine with a
        # zero-latency model (so M/D = 1 really is the balanced, hardest case)
        d = min([pure_decode(files, a.workers) for _ in range(2)] + [e])
        latency = factor * d / nb  # factor 1.0: model time == decode time, the hardest case
        w, nb2 = run_once(inp, out, latency, a.batch_size, a.workers)
        m = nb2 * latency
        print(f"  M/D={factor:.1f}: decode D={d:.2f} s ({a.n / d:.0f} img/s), model M={m:.2f} s "
              f"({nb2} x {latency * 1000:.0f} ms), wall W={w:.2f} s, serial D+M={d + m:.2f} s, "
              f"W/max(M,D) = {w / max(m, d):.3f} (target <= 1.05)")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
