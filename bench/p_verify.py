"""Verification: detector seconds per image at 1, 5, 10 and 20 phrases, each phrase checked alone.

A real-size random-weight Grounding DINO (pixscribe.testing.real_gdino: the published tiny and
base configs, the published 800/1333 px resize) on one real photo, on the CPU, in one run:

- per-phrase path: what verification did before, one full pass per (image, phrase) (processor,
  Swin backbone, BERT, encoder, decoder each time): ``run([img] * n, [[p] for p in phrases])``;
- shared image pass: ``run([img], [phrases], each=True)``, what the verify stage does now: the
  processor's image work and the backbone once per image, the text-dependent rest per phrase;
- joint text (NOT Image Textualization's rule: ``stages.verify.per_phrase: false``): all phrases
  in one text, one pass per image, for scale.

Both per-phrase runs go one pair per forward (the expert's ``batch_size`` 1), so the seconds at
n phrases are read off one run of 20 phrases: the time from the start of the run to the end of
the n-th forward. Before them, one pass is split into processor / backbone / text encoder /
encoder / decoder / the rest, in seconds (forward hooks) and in multiply-accumulates (torch's
FlopCounterMode), which is what explains the ratios: the backbone is the only part a phrase can
share exactly (the encoder fuses the text into the image features from its first layer on).
On a machine shared with other work, ``--threads 1 --clock cpu`` (this process's CPU seconds)
gives steadier figures than wall time.

    python bench/p_verify.py [--models tiny,base] [--edges 800,1333] [--threads 1] [--clock cpu] [--json out.json]

Random weights: the timings are real, the detections meaningless.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from typing import Any

PHRASES = [
    "a cat", "striped orange fur", "a wooden table", "a cup of coffee", "a white saucer", "a spoon",
    "a rocket on a launch pad", "a blue sky", "an astronaut in a white suit", "a flag", "a woman in a uniform",
    "the camera", "a red car", "a dog sleeping by the door", "a lamp", "a window", "a green plant", "a book",
    "a laptop on a desk", "a pair of shoes",
]  # fmt: skip
PARTS = ("backbone", "text_backbone", "encoder", "decoder")
now = time.perf_counter  # --clock cpu: time.process_time (one thread on a shared machine)


def photo() -> Any:
    from pixscribe.testing import sample_photo

    return sample_photo("chelsea")  # 451x300, resized by the processor to 1202x800


class Clock:
    """Seconds (of ``now``) inside named submodules (forward pre/post hooks), the end time of each
    forward of the whole model, and the number of image tokens the encoder saw."""

    def __init__(self, det: Any):
        self.spent = dict.fromkeys(PARTS, 0.0)
        self.ends: list[float] = []
        self.tokens = 0
        self._start: dict[str, float] = {}
        self.handles = [det.net.register_forward_hook(lambda *a: self.ends.append(now()))]
        for name in PARTS:
            mod = getattr(det.net.model, name)
            self.handles.append(mod.register_forward_pre_hook(partial(self._begin, name), with_kwargs=True))
            self.handles.append(mod.register_forward_hook(partial(self._stop, name)))

    def _begin(self, name: str, module: Any, args: Any, kwargs: Any) -> None:
        if name == "encoder":
            self.tokens = int(kwargs["vision_features"].shape[1])
        self._start[name] = now()

    def _stop(self, name: str, *_: Any) -> None:
        self.spent[name] += now() - self._start[name]

    def reset(self) -> None:
        self.spent = dict.fromkeys(PARTS, 0.0)
        self.ends.clear()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def split(det: Any, img: Any, clock: Clock, kw: dict[str, float]) -> dict[str, float]:
    """One full per-phrase pass (``run`` on one image and one phrase), split into its parts (seconds);
    the processor is timed on its own, on the same inputs."""
    t0 = now()
    det.processor(images=[img], text=["a cat."], return_tensors="pt")
    processor = now() - t0
    clock.reset()
    t0 = now()
    det.run([img], [["a cat"]], **kw)
    total = now() - t0
    parts = {"processor (resize, normalise, pad; tokenizer)": processor, **clock.spent}
    parts["rest (input projections, query selection, heads, post-processing)"] = total - sum(parts.values())
    return {**parts, "total": total, "tokens": float(clock.tokens)}


def gmacs(det: Any, img: Any, kw: dict[str, float]) -> dict[str, float]:
    """Multiply-accumulates (10^9) of one per-phrase pass, per part (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        det.run([img], [["a cat"]], **kw)
    counts = {k: sum(v.values()) / 2e9 for k, v in fc.get_flop_counts().items()}
    root = f"{type(det.net).__name__}.model."
    out = {p: counts.get(root + p, 0.0) for p in PARTS}
    return {**out, "rest": counts["Global"] - sum(out.values()), "total": counts["Global"]}


def cumulative(det: Any, clock: Clock, counts: list[int], fn: Any) -> dict[int, float]:
    """Seconds from the start of ``fn()`` to the end of its n-th forward, for each n in ``counts``."""
    clock.reset()
    t0 = now()
    fn()
    return {n: clock.ends[n - 1] - t0 for n in counts}


def measure(size: str, edges: tuple[int, int], counts: list[int]) -> dict[str, Any]:
    import torch

    from pixscribe.testing.real_gdino import real_size_grounding_dino

    t = now()
    det = real_size_grounding_dino(size, shortest_edge=edges[0], longest_edge=edges[1], batch_size=1)
    built = now() - t
    img, top = photo(), max(counts)
    phrases = PHRASES[:top]
    clock = Clock(det)
    kw = {"box_threshold": 0.2, "text_threshold": 0.18}
    try:
        det.run([img], [["a cat"]], **kw)  # warm-up
        parts = split(det, img, clock, kw)
        work = gmacs(det, img, kw)
        per_phrase = cumulative(det, clock, counts, lambda: det.run([img] * top, [[p] for p in phrases], **kw))
        shared = cumulative(det, clock, counts, lambda: det.run([img], [phrases], each=True, **kw))
        joint = {}
        for n in counts:
            t = now()
            det.run([img], [phrases[:n]], **kw)
            joint[n] = now() - t
    finally:
        clock.close()
    return {"model": f"grounding-dino-{size} (random weights)", "edges": list(edges), "build_seconds": built,
            "threads": torch.get_num_threads(), "clock": "cpu" if now is time.process_time else "wall",
            "split": parts, "gmacs": work, "per_phrase": per_phrase, "shared": shared, "joint_text": joint}  # fmt: skip


def report(r: dict[str, Any]) -> None:
    sp, gm = r["split"], r["gmacs"]
    print(f"\n{r['model']}, resize to {r['edges'][0]}/{r['edges'][1]} px, {int(sp['tokens'])} image tokens")
    print(f"  one per-phrase pass, split ({r['clock']} seconds; GMACs from torch's FlopCounterMode):")
    for k, v in sp.items():
        if k not in ("total", "tokens"):
            g = gm.get(k.split(" ")[0], gm["rest"] if k.startswith("rest") else 0.0)
            print(f"    {k:<68} {v:8.2f} s {100 * v / sp['total']:5.1f} % {g:8.1f} GMAC")
    print(f"    {'total':<68} {sp['total']:8.2f} s {'':7} {gm['total']:8.1f} GMAC")
    share = gm["backbone"] / gm["total"]
    print(f"  the backbone is {100 * share:.0f} % of a pass's GMACs: with it shared, n phrases cost at least "
          f"{1 - share:.2f} n + {share:.2f} passes (10 phrases: {10 - 9 * share:.2f}x one)")
    print(f"  {'phrases':>8} {'per-phrase s':>13} {'shared s':>10} {'shared/per-phrase':>18} "
          f"{'shared n/1':>11} {'joint text s (not IT)':>22}")  # fmt: skip
    pp, sh, jt = r["per_phrase"], r["shared"], r["joint_text"]
    for n in pp:
        print(f"  {n:>8} {pp[n]:13.2f} {sh[n]:10.2f} {sh[n] / pp[n]:18.3f} {sh[n] / sh[min(sh)]:11.2f} {jt[n]:22.2f}")
    if 10 in sh and 1 in sh:
        ok = sh[10] <= 2 * sh[1]
        print(f"  target 10 phrases <= 2x one phrase (shared): {sh[10] / sh[1]:.2f}x -> {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny", help="comma-separated: tiny, base")
    ap.add_argument("--edges", default="800,1333", help="the processor's shortest,longest edge (published: 800,1333)")
    ap.add_argument("--phrases", default="1,5,10,20")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU seconds, steadier than wall time with --threads 1 on a busy machine")
    ap.add_argument("--json", default="", help="also write the figures here")
    a = ap.parse_args()
    import torch

    global now
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.clock == "cpu":
        now = time.process_time
    edges = tuple(int(x) for x in a.edges.split(","))
    counts = [int(x) for x in a.phrases.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32, one pair per forward, "
          f"{a.clock} seconds")
    results = []
    for size in a.models.split(","):
        results.append(measure(size.strip(), edges, counts))  # type: ignore[arg-type]
        report(results[-1])
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
