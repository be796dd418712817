"""P2 with a three-stage method: an image stage and two text stages, each a simulated model
of fixed latency per call (sleeping, no CPU, like a GPU doing the work).

    M = the sum over every stage call of its latency (the model time)
    W = the engine's wall time
Target: W / M <= 1.05 when the model is the bottleneck (decoding, batching, reuse checks,
the writer and per-stage bookkeeping all hide behind model time). The latencies keep the
given ratio (see:extract:rewrite) and are scaled so that M = --factor x E, where E is the
engine's wall time with zero-latency stages measured first (decode included): the model is
the bottleneck by that factor whatever the machine's speed. Also printed: the same method
when only the last stage's prompt changes (--overwrite reuses the first two), where M is the
rewrite stage alone.

    python bench/p2_stages.py [--n 2000] [--batch-size 16] [--ratio 3 1 1] [--factor 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _util import Stopwatch, generate_jpegs
from fixtures_engine import ScriptedBackend, _last_text, three_stage_method

from pixscribe.backends.base import GenerationResult
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner


class StageSleeper(ScriptedBackend):
    """Sleeps per call by the kind of request: image (see), or the text prompt's first word."""

    def __init__(self, latencies: dict[str, float]):
        super().__init__()
        self.latencies = latencies
        self.model_time = 0.0

    def _generate(self, requests):
        kind = "image" if requests[0].images else _last_text(requests[0]).split(" ", 1)[0]
        lat = self.latencies.get(kind, 0.0)
        time.sleep(lat)
        self.model_time += lat
        self.batches.append(len(requests))
        return [GenerationResult(text=f"{kind} answer", tokens_out=2) for _ in requests]


def run(inp: Path, out: Path, batch: int, lat: dict[str, float], **kw) -> tuple[float, float, dict]:
    cfg = RunConfig(inputs=[str(inp)], output=str(out), progress=False, batch_size=batch, vlm="sim", **kw)
    b = StageSleeper(lat)
    with Stopwatch() as sw:
        s = Runner(cfg, three_stage_method(cfg, b)).run()
    assert s.error_rows == 0
    return sw.seconds, b.model_time, s.stages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ratio", type=float, nargs=3, default=[3.0, 1.0, 1.0], metavar=("SEE", "EXTRACT", "REWRITE"))
    ap.add_argument("--factor", type=float, default=2.0, help="model time / zero-latency engine time")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "p2")
    a = ap.parse_args()
    inp = a.data / f"jpegs-{a.n}"
    generate_jpegs(inp, a.n, (1024, 768))
    out = a.data / "out-stages"
    shutil.rmtree(out, ignore_errors=True)
    e, _, _ = run(inp, out, a.batch_size, {})  # zero latency: decode + engine (warms the page cache)
    shutil.rmtree(out, ignore_errors=True)
    calls = -(-a.n // a.batch_size)
    unit = a.factor * e / (calls * sum(a.ratio))
    see, ext, rew = (r * unit for r in a.ratio)
    lat = {"image": see, "List": ext, "Rewrite:": rew, "Rewrite": rew}
    print(f"P2 three stages: n={a.n} batch={a.batch_size}; zero-latency engine E={e:.2f} s; latency per call "
          f"see/extract/rewrite = {see * 1000:.0f}/{ext * 1000:.0f}/{rew * 1000:.0f} ms (M = {a.factor} x E)")
    w, m, st = run(inp, out, a.batch_size, lat)
    print(f"  full run:      W={w:.2f} s, M={m:.2f} s (sum of the stages' model time), W/M = {w / m:.3f} "
          f"(target <= 1.05); computed per stage: { {k: v['computed'] for k, v in st.items()} }")
    lat2 = {**lat, "Rewrite": rew}
    w2, m2, st2 = run(inp, out, a.batch_size, lat2, overwrite=True, stages={"rewrite": {"prompt": "Rewrite briefly:"}})
    print(f"  rewrite only:  W={w2:.2f} s, M={m2:.2f} s, W/M = {w2 / m2:.3f}; reused per stage: "
          f"{ {k: v['reused'] for k, v in st2.items()} }, computed: { {k: v['computed'] for k, v in st2.items()} }")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
