"""Textualize: what the engine adds to the model time, and model calls per image per stage.

The real engine (readers, decode pool, the five stages, writer, resume) runs the textualize
method over N synthetic scenes with the scripted VLM/LLM and experts of
pixscribe.testing.scripted_textualize, each sleeping a fixed latency per call (a batch).
The model time is the time spent inside the scripted models' and experts' calls (the
sleeps and their own small work); the wall time is the run's (planning and setup included,
and without them). Then the same output is rerun with only the rewrite
prompt changed (--overwrite): only the rewrite stage should call a model.

    python bench/p_textualize.py [--n 96] [--batch-size 8] [--latency 0.05,0.2] [--verify-mode single]

What the engine adds is a cost per image (decode, the stages' own work, writing), so its
share shrinks as model calls get slower: the figures are printed for each latency given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures_textualize import ScriptedRun  # noqa: E402
from pixscribe.testing.scripted_textualize import Scene  # noqa: E402

STAGE_OF = {"dense": "detail", "sam": "detail", "depth": "detail", "describe": "describe", "objects": "objects",
            "grounding_dino": "verify", "owlv2": "verify", "rewrite": "rewrite"}


def scenes(n: int) -> list[Scene]:
    """n scenes of distinct sizes: three named objects (the third one not there), three regions."""
    out = []
    for i in range(n):
        w, h = 96 + i % 40, 64 + i // 40
        out.append(Scene(
            (w, h), f"Scene {i}: a cat sits on a red sofa. A dog sleeps by the door.", ["cat", "red sofa", "dog"],
            gdino={"cat": (0.8, (0.1, 0.1, 0.4, 0.6)), "red sofa": (0.6, (0.0, 0.7, 1.0, 1.0))},
            owl={"cat": (0.3, (0.1, 0.1, 0.4, 0.6)), "red sofa": (0.2, (0.0, 0.7, 1.0, 1.0))},
            regions=[("a grey cat", (0.1, 0.1, 0.4, 0.6), 0.9), ("a red sofa", (0.0, 0.7, 1.0, 1.0), 0.5),
                     ("a lamp", (0.8, 0.0, 0.95, 0.3), 0.2)],
        ))
    return out


def model_seconds(run: ScriptedRun) -> tuple[float, float]:
    """(seconds slept, seconds spent inside the scripted calls: the sleeps plus their own work)."""
    pieces = list(run.experts.values()) + list({id(run.vlm): run.vlm, id(run.llm): run.llm}.values())
    return sum(p.batches * p.latency for p in pieces), sum(p.busy for p in pieces)


def report(title: str, run: ScriptedRun, n: int, wall: float, latency: float) -> None:
    s = run.summary
    slept, total = model_seconds(run)
    print(f"\n{title}: {n} images, batch size {run.config.batch_size}, latency {latency * 1000:.0f} ms per call")
    print(f"  model time: {total:.3f} s inside the scripted models' calls ({slept:.3f} s of it the fixed latency)")
    print(f"  wall time, run() end to end:     {wall:.3f} s  ({100 * (wall / total - 1):+.1f} % over the model time)")
    print(f"  wall time, executing the shards: {s.seconds:.3f} s  ({100 * (s.seconds / total - 1):+.1f} %; "
          f"{1000 * (s.seconds - total) / n:.1f} ms per image)")
    calls = run.calls()
    batches = {k: e.batches for k, e in run.experts.items()}
    for kind in ("describe", "objects", "rewrite"):
        batches[kind] = sum(m.batches_by[kind] for m in {id(run.vlm): run.vlm, id(run.llm): run.llm}.values())
    print(f"  {'model':16} {'stage':9} {'calls/image':>11} {'batches':>8}")
    for k in ("dense", "sam", "depth", "describe", "objects", "grounding_dino", "owlv2", "rewrite"):
        b = batches.get(k, "")
        print(f"  {k:16} {STAGE_OF[k]:9} {calls[k] / n:11.2f} {b!s:>8}")
    print("  stages: " + "; ".join(f"{k} computed {v['computed']} reused {v['reused']}" for k, v in s.stages.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--latency", default="0.05,0.2", help="seconds per model call (comma-separated: one run each)")
    ap.add_argument("--verify-mode", default="single")
    a = ap.parse_args()
    stages = {"verify": {"mode": a.verify_mode}}
    for latency in [float(x) for x in a.latency.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="pixscribe-textualize-"))
        run = ScriptedRun(tmp, scenes(a.n), latency=latency)
        t = time.perf_counter()
        s, rows = run.run(batch_size=a.batch_size, stages=stages, flush_seconds=60)
        wall = time.perf_counter() - t
        assert len(rows) == a.n and s.error_rows == 0, s.to_dict()
        report("first run", run, a.n, wall, latency)
    t = time.perf_counter()
    s, rows = run.run(batch_size=a.batch_size, overwrite=True, flush_seconds=60,
                      stages={**stages, "rewrite": {"prompt": "Rewrite the description, briefly."}})
    wall = time.perf_counter() - t
    assert len(rows) == a.n and s.error_rows == 0, s.to_dict()
    report("rerun with only the rewrite prompt changed (--overwrite)", run, a.n, wall, latency)


if __name__ == "__main__":
    main()
