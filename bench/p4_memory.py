"""P4: memory stays flat as the dataset grows (2k -> 20k -> 200k rows).

Runs the engine with a simulated model (1 ms per batch) in a fresh process per size and
reports, per size:
  peak     peak RSS (ru_maxrss), the figure a scheduler's memory limit sees;
  steady   the median RSS sampled every 0.1 s over the second half of the run, which is
           what the run holds once warmed up (peak RSS moves by +-5 % with the allocator's
           and the queues' phases, so a growth shows in this figure first);
  rows/s.
The records come from a jsonl table with a `path` column and distinct keys, so N distinct
rows reuse 2k generated 512x384 JPEG files on disk. Targets: peak and steady RSS at 20k and
200k within 10 % of 2k, and rows/s within 10 % from 20k to 200k (2k is dominated by start-up).

What is bounded and why (docs/scale.md): the queues between reader, decode pool, stages and
writer hold a fixed number of batches; a shard's state (its ids, its duplicate check, its
batch files) is dropped when it ends; per-request latencies are a log-bucket histogram,
not a list (a list grew by 32 bytes a request).

The largest run also samples RSS as its rows pass each size, the curve inside one process:
it tells a warm-up that levels off from a growth that goes on.

    python bench/p4_memory.py [--sizes 2000,20000,200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import generate_jpegs

CHILD = r"""
import json, resource, statistics, sys, threading, time, shutil
sys.path.insert(0, {bench!r}); sys.path.insert(0, {tests!r})
from p2_overlap import SleepBackend
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.testing.methods import method_with

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

samples, stop, at, seen = [], threading.Event(), {{}}, [0]
def sample():
    while not stop.wait(0.1):
        samples.append(rss_mb())
def on_batch(recs):  # RSS as the rows go by: the curve inside one run
    before, seen[0] = seen[0], seen[0] + len(recs)
    for c in {checkpoints!r}:
        if before < c <= seen[0]:
            at[c] = rss_mb()
shutil.rmtree({out!r}, ignore_errors=True)
cfg = RunConfig(inputs=[{inp!r}], output={out!r}, progress=False, batch_size=16, vlm="sim")
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
s = Runner(cfg, method_with(cfg, SleepBackend(delay=0.001)), on_batch=on_batch).run()
seconds = time.perf_counter() - t
stop.set()
half = samples[len(samples) // 2:] or [rss_mb()]
print(json.dumps({{"rows": s.rows_written, "errors": s.error_rows, "seconds": seconds,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "steady_mb": statistics.median(half), "at": at}}))
shutil.rmtree({out!r}, ignore_errors=True)
"""


def table(path: Path, files: list[Path], n: int) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(n):
            f.write(json.dumps({"key": f"r{i:07d}", "path": str(files[i % len(files)]), "caption": f"row {i}"}) + "\n")
    tmp.rename(path)
    return path


def measure(n: int, files: list[Path], data: Path, repeat: int, checkpoints: list[int] = ()) -> dict:
    here = Path(__file__).resolve().parent
    inp = table(data / f"rows-{n}.jsonl", files, n)
    code = CHILD.format(bench=str(here), tests=str(here.parent / "tests"), inp=str(inp), out=str(data / "out"),
                       checkpoints=list(checkpoints))
    runs = []
    for _ in range(repeat):  # separate processes; the median damps allocator noise
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        assert r["rows"] == n and r["errors"] == 0, r
        runs.append(r)
    runs.sort(key=lambda r: r["maxrss_mb"])
    r = runs[len(runs) // 2]
    peaks = ", ".join(f"{x['maxrss_mb']:.0f}" for x in runs)
    print(f"  {n:>7} rows: peak RSS {r['maxrss_mb']:.0f} MB (runs: {peaks}), steady {r['steady_mb']:.0f} MB, "
          f"{n / r['seconds']:.0f} rows/s", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000,200000", help="comma-separated row counts, smallest first")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size up to 20k (the median is kept); 1 above")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "p4")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    files = generate_jpegs(a.data / "jpegs", min(sizes[0], 2000), (512, 384))
    res = {n: measure(n, files, a.data, a.repeat if n <= 20000 else 1, sizes if n == sizes[-1] else ()) for n in sizes}
    base = res[sizes[0]]
    for n in sizes[1:]:
        r = res[n]
        print(f"P4 memory {n} / {sizes[0]}: peak {r['maxrss_mb'] / base['maxrss_mb']:.3f}, "
              f"steady {r['steady_mb'] / base['steady_mb']:.3f}   (target <= 1.10)")
    curve = res[sizes[-1]]["at"]
    print(f"RSS inside the {sizes[-1]}-row run, after N rows: " + ", ".join(
        f"{int(k)}: {v:.0f} MB" for k, v in sorted(curve.items(), key=lambda kv: int(kv[0]))))
    if len(sizes) > 2:
        a2, b2 = res[sizes[-2]], res[sizes[-1]]
        rate = (sizes[-1] / b2["seconds"]) / (sizes[-2] / a2["seconds"])
        print(f"P4 rows/s {sizes[-1]} / {sizes[-2]}: {rate:.3f}   (target 0.90-1.10)")


if __name__ == "__main__":
    main()
