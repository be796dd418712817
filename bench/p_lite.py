"""Lite profile, before and after, in one run: img/s and per-expert latency on the same photos.

"before" is another git ref's code (default ``main``), taken with ``git archive`` into a
temporary folder (the repository is not touched); "after" is the code this script is run
with. Each side runs in its own subprocess with the same measurement code (``--child``):

1. the real engine with ``--profile lite`` over N copies of the sample photos (each copy
   slightly different so ids differ): img/s, model loading included;
2. the experts stage alone on the same decoded photos in batches of 8 (no decode, no writing):
   img/s; this is where batched OCR recognition shows;
3. each lite expert alone on each sample photo (median of 3 runs), and on the 7 photos as one
   batch, in ms of wall time and of CPU time (all threads: robust to other load on the machine);
4. the lite description of each sample photo.

The sides run one after the other, twice, interleaved (before, after, before, after), and the
better of the two is kept for each figure, so a burst of load from other work on this shared
machine hurts both sides alike.

    python bench/p_lite.py [--n 40] [--before main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LITE = ["stats", "faces", "ocr", "nsfw"]


def _write_photos(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    from pixscribe.testing import SAMPLE_NAMES, sample_photo

    photos = [sample_photo(name) for name in SAMPLE_NAMES]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.clip(np.asarray(photos[i % len(photos)]).astype(np.int16) + rng.integers(-2, 3, size=(1, 1, 3)), 0, 255)
        arr = arr.astype(np.uint8)
        arr[:8, :8] = (i % 256, i // 256, 99)  # a corner mark makes every copy's bytes unique
        Image.fromarray(arr).save(folder / f"{i:04d}-{SAMPLE_NAMES[i % len(photos)]}.jpg", quality=92)


def _engine_rate(folder: Path, out: Path) -> float:
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner

    cfg = RunConfig(inputs=[str(folder)], output=str(out), profile="lite", method="experts", progress=False)
    t = time.perf_counter()
    s = Runner(cfg).run()
    n = s.rows_written
    assert s.error_rows == 0, s.to_dict()
    return n / (time.perf_counter() - t)


def _stage_rate(photos: list) -> tuple[float, float]:
    """(img per wall second, img per CPU second of this process, all its threads)."""
    from pixscribe.config import RunConfig
    from pixscribe.engine.context import build_method
    from pixscribe.record import Record

    method = build_method("experts", RunConfig(profile="lite"))
    method.setup()
    stage = method.stages[0]
    recs = []
    for i, img in enumerate(photos):
        r = Record(source=str(i), id=str(i))
        r.image, r.width, r.height = img, img.width, img.height
        recs.append(r)
    stage(recs[:2])  # warm up
    t, c = time.perf_counter(), time.process_time()
    for s in range(0, len(recs), 8):
        stage(recs[s:s + 8])
    return len(recs) / (time.perf_counter() - t), len(recs) / (time.process_time() - c)


def child(n: int) -> dict:
    """The measurements of the pixscribe importable here (the side this process stands for)."""
    from pixscribe.config import RunConfig
    from pixscribe.methods.experts.describe import lite_description
    from pixscribe.experts import build_expert, to_jsonable
    from pixscribe.testing import SAMPLE_NAMES, sample_photo

    tmp = Path(tempfile.mkdtemp(prefix="pixscribe-lite-bench-"))
    _write_photos(tmp / "in", n)
    photos = {name: sample_photo(name) for name in SAMPLE_NAMES}
    result: dict = {"engine_img_s": _engine_rate(tmp / "in", tmp / "out")}
    wall, cpu = _stage_rate([photos[name] for name in SAMPLE_NAMES] * max(1, n // len(SAMPLE_NAMES)))
    result["stage_img_s"], result["stage_img_cpu_s"] = wall, cpu
    experts = {name: build_expert(name, RunConfig()) for name in LITE}
    ms: dict = {name: {} for name in LITE}
    cpu_ms: dict = {name: {} for name in LITE}
    outs: dict = {p: {} for p in SAMPLE_NAMES}
    for name, e in experts.items():
        e.setup()
        for p, img in photos.items():
            times, cpus = [], []
            for _ in range(3):
                t, c = time.perf_counter(), time.process_time()
                (o,) = e.run([img])
                times.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            ms[name][p] = statistics.median(times) * 1000
            cpu_ms[name][p] = statistics.median(cpus) * 1000
            outs[p][name] = to_jsonable(o)
        t, c = time.perf_counter(), time.process_time()
        e.run(list(photos.values()))  # the 7 photos as one batch
        ms[name]["batch of 7, per photo"] = (time.perf_counter() - t) * 1000 / len(photos)
        cpu_ms[name]["batch of 7, per photo"] = (time.process_time() - c) * 1000 / len(photos)
    result["expert_ms"], result["expert_cpu_ms"] = ms, cpu_ms
    result["descriptions"] = {p: lite_description(outs[p]) for p in SAMPLE_NAMES}
    return result


def _tree_of(ref: str, into: Path) -> Path:
    """``ref``'s ``src`` folder extracted with git archive (no worktree, the repo untouched)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    tar = into / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def _run_side(src: Path, n: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, __file__, "--child", "--n", str(n)], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"bench side {src} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _best(a: dict, b: dict) -> dict:
    out = {k: max(a[k], b[k]) for k in ("engine_img_s", "stage_img_s", "stage_img_cpu_s")}
    for key in ("expert_ms", "expert_cpu_ms"):
        out[key] = {e: {p: min(a[key][e][p], b[key][e][p]) for p in a[key][e]} for e in a[key]}
    out["descriptions"] = b["descriptions"]
    return out


def _table(before: dict, after: dict, key: str, title: str) -> None:
    photos = list(after[key]["ocr"])
    print(f"\n{title} (before -> after)")
    print(f"{'expert':8}" + "".join(f"{p[:13]:>15}" for p in photos) + f"{'median':>15}")
    for e in LITE:
        cells = [f"{before[key][e][p]:5.0f}->{after[key][e][p]:<5.0f}" for p in photos]
        one = [p for p in photos if not p.startswith("batch")]
        med_b = statistics.median(before[key][e][p] for p in one)
        med_a = statistics.median(after[key][e][p] for p in one)
        print(f"{e:8}" + "".join(f"{c:>15}" for c in cells) + f"{med_b:7.0f}->{med_a:<5.0f}")


def report(before: dict, after: dict, ref: str) -> None:
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; before = {ref}, after = this tree")
    for key, what in (("engine_img_s", "engine, --profile lite, img per wall s (model load in)"),
                      ("stage_img_s", "experts stage alone, batches of 8, img per wall s"),
                      ("stage_img_cpu_s", "experts stage alone, batches of 8, img per CPU s")):
        b, a = before[key], after[key]
        print(f"{what:56} before {b:6.2f}   after {a:6.2f}   x{a / b:.2f}")
    _table(before, after, "expert_ms", "per-expert latency, ms of wall time (median of 3, the better of 2 runs)")
    _table(before, after, "expert_cpu_ms", "per-expert cost, ms of CPU time of all threads (same runs)")
    print("\n| photo | before | after |\n|---|---|---|")
    for p in before["descriptions"]:
        print(f"| {p} | {before['descriptions'][p]} | {after['descriptions'][p]} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--before", default="main", help="git ref of the 'before' code")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.n)))
        return
    with tempfile.TemporaryDirectory(prefix="pixscribe-before-") as tmp:
        old = _tree_of(a.before, Path(tmp))
        new = ROOT / "src"
        runs = [(_run_side(old, a.n), _run_side(new, a.n)) for _ in range(2)]
    report(_best(runs[0][0], runs[1][0]), _best(runs[0][1], runs[1][1]), a.before)


if __name__ == "__main__":
    main()
