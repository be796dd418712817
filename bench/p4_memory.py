"""P4: peak memory stays flat with dataset size.

Runs the engine with a simulated model (1 ms per batch) over 2k and 20k records in
separate processes and compares peak RSS (ru_maxrss). The records come from a jsonl
table with a `path` column and distinct keys, so 20k distinct rows reuse 2k generated
512x384 JPEG files on disk. Target: peak RSS at 20k within 10% of 2k.

    python bench/p4_memory.py [--small 2000] [--large 20000]
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
import json, resource, sys, time, shutil
sys.path.insert(0, {bench!r}); sys.path.insert(0, {tests!r})
from p2_overlap import SleepBackend
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.methods.recap import recap_method
shutil.rmtree({out!r}, ignore_errors=True)
cfg = RunConfig(inputs=[{inp!r}], output={out!r}, progress=False, batch_size=16, vlm="sim")
t = time.perf_counter()
s = Runner(cfg, recap_method(SleepBackend(delay=0.001))).run()
print(json.dumps({{"rows": s.rows_written, "errors": s.error_rows, "seconds": time.perf_counter() - t,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
shutil.rmtree({out!r}, ignore_errors=True)
"""


def table(path: Path, files: list[Path], n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"key": f"r{i:07d}", "path": str(files[i % len(files)]), "caption": f"row {i}"}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "p4")
    a = ap.parse_args()
    files = generate_jpegs(a.data / "jpegs", min(a.small, 2000), (512, 384))
    here = Path(__file__).resolve().parent
    res = {}
    for n in (a.small, a.large):
        inp = table(a.data / f"rows-{n}.jsonl", files, n)
        code = CHILD.format(bench=str(here), tests=str(here.parent / "tests"), inp=str(inp), out=str(a.data / "out"))
        runs = []
        for _ in range(a.repeat):  # separate processes; the median damps allocator noise
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            assert r["rows"] == n and r["errors"] == 0, r
            runs.append(r)
        runs.sort(key=lambda r: r["maxrss_mb"])
        res[n] = runs[len(runs) // 2]
        peaks = ", ".join(f"{r['maxrss_mb']:.0f}" for r in runs)
        print(f"  {n:>6} rows: peak RSS median {res[n]['maxrss_mb']:.0f} MB (runs: {peaks}), "
              f"{n / res[n]['seconds']:.0f} rows/s")
    ratio = res[a.large]["maxrss_mb"] / res[a.small]["maxrss_mb"]
    print(f"P4 memory: peak RSS {a.large} / {a.small} = {ratio:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
