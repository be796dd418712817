"""--method panoptic with a scripted VLM of fixed latency per call (sleeping, no CPU, like a GPU
doing the work): requests per image and stage, and the engine's own overhead.

    M = the sum over every model call of its latency (the model time)
    W = the engine's wall time for the run (decode, padding, prompts, parsing, writing, reuse checks)
    overhead per image = (W - M) / n, and (W - S) / n with S the sleeps as they really lasted
    (on a loaded machine a sleeping thread wakes late, and that is not the engine's doing)

Printed for PancapChain (four VLM stages) and for the entity-aware variant (scripted
Florence-2 proposals and Grounding DINO of the same per-call latency, then one VLM stage),
beside a one-stage recap run of the same images and latency, all in one process, so the
ratios compare like with like. The scripted answers hold duplicates, "none" and malformed
items (tests/fixtures_panoptic.py), so the parsing work is the real one.

    python bench/p_panoptic.py [--n 512] [--batch-size 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _util import Stopwatch, generate_jpegs
from fixtures_panoptic import PancapScript, panoptic_method

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.experts.base import Detection, Expert
from pixscribe.testing.methods import method_with


class Sleepy(PancapScript):
    """The scripted PancapChain answers, after ``latency`` seconds per call."""

    def __init__(self, latency: float):
        super().__init__()
        self.latency = latency
        self.model_time = 0.0
        self.slept = 0.0  # the sleeps as they happened (a loaded machine wakes a sleeper late)
        self.batches: list[int] = []

    def _generate(self, requests):
        t = time.perf_counter()
        time.sleep(self.latency)
        self.model_time += self.latency
        self.slept += time.perf_counter() - t
        self.batches.append(len(requests))
        return super()._generate(requests)


class SleepyExpert(Expert):
    """Florence-2 or a detector: two labelled boxes per image, after ``latency`` per call."""

    def __init__(self, name: str, latency: float, clock: Sleepy):
        self.name, self.model, self.latency, self.clock = name, f"scripted-{name}", latency, clock

    def run(self, images, **kw):
        t = time.perf_counter()
        time.sleep(self.latency)
        self.clock.model_time += self.latency
        self.clock.slept += time.perf_counter() - t
        out = []
        queries = kw.get("queries") or [["dog", "car"]] * len(images)  # a detector gets the proposals' tags
        for im, labels in zip(images, queries):
            w, h = im.size
            out.append([Detection.make((0.1 * w, 0.2 * h, 0.5 * w, 0.9 * h), 0.8, labels[0], w, h),
                        Detection.make((0.55 * w, 0.1 * h, 0.95 * w, 0.6 * h), 0.7, labels[-1], w, h)])
        return out


def _cfg(inp: Path, out: Path, batch: int, **kw) -> RunConfig:
    return RunConfig(inputs=[str(inp)], output=str(out), progress=False, batch_size=batch, vlm="sim",
                     method="panoptic", **kw)


def run_chain(inp: Path, out: Path, batch: int, lat: float, **kw) -> tuple[float, Sleepy, dict]:
    cfg = _cfg(inp, out, batch, **kw)
    b = Sleepy(lat)
    with Stopwatch() as sw:
        s = Runner(cfg, panoptic_method(cfg, b)).run()
    assert s.error_rows == 0, s.errors
    return sw.seconds, b, s.stages


def run_experts(inp: Path, out: Path, batch: int, lat: float) -> tuple[float, Sleepy, dict]:
    import pixscribe.methods.panoptic.method as mp

    b = Sleepy(lat)
    real = mp.build_expert
    mp.build_expert = lambda name, config: SleepyExpert(name, lat, b)  # type: ignore[assignment]
    try:
        cfg = _cfg(inp, out, batch, stages={"caption": {"entities": "experts"}})
        with Stopwatch() as sw:
            s = Runner(cfg, panoptic_method(cfg, b)).run()
    finally:
        mp.build_expert = real
    assert s.error_rows == 0, s.errors
    return sw.seconds, b, s.stages


def run_recap(inp: Path, out: Path, batch: int, lat: float) -> tuple[float, Sleepy, dict]:
    cfg = _cfg(inp, out, batch).model_copy(update={"method": "recap"})
    b = Sleepy(lat)
    with Stopwatch() as sw:
        s = Runner(cfg, method_with(cfg, b)).run()
    return sw.seconds, b, s.stages


def report(label: str, n: int, w: float, b: Sleepy, stages: dict) -> None:
    per = {k: round(v / n, 2) for k, v in b.calls.items()}
    m = b.model_time
    per = {("recap" if k == "other" else k): v for k, v in per.items()}
    print(f"  {label}: W={w:.2f} s, M={m:.2f} s, W/M={w / m:.3f}, overhead {(w - m) / n * 1000:.1f} ms/image "
          f"({(w - b.slept) / n * 1000:.1f} beyond the sleeps as they happened, {b.slept:.2f} s); "
          f"VLM requests per image by stage {per}; calls {len(b.batches)} (batch sizes {sorted(set(b.batches))}); "
          f"computed per stage { {k: v['computed'] for k, v in stages.items()} }")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per model call (a batch)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "panoptic")
    a = ap.parse_args()
    inp = a.data / f"jpegs-{a.n}"
    generate_jpegs(inp, a.n, (1024, 768))
    out = a.data / "out"
    nopad = {st: {"pad": False} for st in ("localize", "tag", "discover", "caption")}
    runs = {"PancapChain (4 VLM stages)": lambda lat: run_chain(inp, out, a.batch_size, lat),
            "PancapChain, pad: false": lambda lat: run_chain(inp, out, a.batch_size, lat, stages=nopad),
            "entity-aware (scripted Florence-2 + Grounding DINO, 1 VLM stage)":
                lambda lat: run_experts(inp, out, a.batch_size, lat),
            "recap (1 VLM stage)": lambda lat: run_recap(inp, out, a.batch_size, lat)}
    print(f"panoptic: n={a.n} images 1024x768, batch {a.batch_size}")
    zero: dict[str, float] = {}
    for label, fn in runs.items():
        for _ in range(2):  # the first run warms the page cache
            shutil.rmtree(out, ignore_errors=True)
            zero[label] = fn(0.0)[0]
        print(f"  zero latency (the engine alone), {label}: {zero[label] / a.n * 1000:.1f} ms/image")
    base = zero["recap (1 VLM stage)"]
    print(f"  PancapChain's own cost beyond recap's: {(zero['PancapChain (4 VLM stages)'] - base) / a.n * 1000:.1f} "
          f"ms/image (3 more stages: prompts, parsing, the padded square, provenance)")
    print(f"with {a.latency * 1000:.0f} ms per model call:")
    for label, fn in runs.items():
        shutil.rmtree(out, ignore_errors=True)
        w, b, st = fn(a.latency)
        report(label, a.n, w, b, st)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
