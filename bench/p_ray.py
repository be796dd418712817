"""P-Ray: the Ray executor's overhead against the local executor, on the same cores.

A simulated model stage of fixed latency (the test plugin's ``sleep`` method: one image
stage sleeping ``--latency`` seconds per batch and doing nothing else, like a GPU doing
the work; the images are read, decoded and resized for it as for a real model) over N
generated JPEGs, run by the real ``pixscribe caption`` command, once with ``--executor
local`` and once with ``--executor ray`` (a local Ray instance of this machine's cores,
started by the command). Printed side by side:

  pipeline seconds  the run's own time (the summary's ``seconds``: after models are loaded
                    and, on Ray, after the cluster and the replicas are up);
  throughput        rows / pipeline seconds, and the ratio Ray / local (target >= 0.8);
  start             on Ray, the summary's ``ray start`` (ray.init, replicas built and ready);
  wall              the whole command, process start to exit, and the ratio;
  driver CPU        the command's own process, CPU seconds per 1,000 rows: locally that is
                    everything (decoding included); on Ray, what receiving, converting and
                    writing every row costs the driver (the ceiling of "the driver writes",
                    docs/scale.md).

    python bench/p_ray.py [--n 2000] [--batch-size 16] [--latency 0.05] [--size 640x480] [--replica-cpus 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import generate_jpegs

ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import resource, runpy, sys, json
sys.argv = ["pixscribe"] + sys.argv[2:]
try:
    runpy.run_module("pixscribe.cli", run_name="__main__")
finally:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    open({cpu!r}, "w").write(json.dumps(ru.ru_utime + ru.ru_stime))
"""


def plugin_env(tmp: Path) -> dict[str, str]:
    target, src = tmp / "plugin_site", tmp / "plugin_pkg"  # built from a copy: pip's build files stay out of tests/
    shutil.copytree(ROOT / "tests" / "plugin_pkg", src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run(env: dict[str, str], inp: Path, out: Path, executor: str, args: argparse.Namespace) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cpu_file = out.parent / f"cpu-{executor}.json"
    script = DRIVER.format(cpu=str(cpu_file))
    cmd = [sys.executable, "-c", script, "-", "caption", str(inp), "-o", str(out), "--method", "sleep",
           "--no-progress", "--batch-size", str(args.batch_size), "--executor", executor,
           "--replica-cpus", str(args.replica_cpus)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env={**env, "PIXSCRIBE_SCRIPTED_DELAY": str(args.latency)}, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{executor} run failed:\n{p.stderr[-3000:]}")
    s = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert s["rows_written"] == args.n and s["error_rows"] == 0, s
    return {"seconds": s["seconds"], "wall": wall, "start": (s["usage"].get("ray start") or {}).get("seconds"),
            "cpu": json.loads(cpu_file.read_text()), "usage": s["usage"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per batch")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--replica-cpus", type=float, default=1.0)
    ap.add_argument("--keep", help="a directory to keep the images in between runs")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="p_ray-"))
    try:
        inp = Path(args.keep) if args.keep else tmp / "in"
        generate_jpegs(inp, args.n, (w, h))
        env = plugin_env(tmp)
        model = -(-args.n // args.batch_size) * args.latency
        print(f"{args.n} JPEGs {w}x{h}, batch {args.batch_size}, simulated model {args.latency:.3f} s per batch "
              f"= {model:.1f} s of model time; {os.cpu_count()} cores; Ray replica CPUs "
              f"{args.replica_cpus:g}")
        local = run(env, inp, tmp / "out-local", "local", args)
        ray = run(env, inp, tmp / "out-ray", "ray", args)
        show(args, model, local, ray)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def show(args: argparse.Namespace, model: float, local: dict, ray: dict) -> None:
    n = args.n
    for name, r in (("local", local), ("ray", ray)):
        print(f"{name:>5}: pipeline {r['seconds']:7.2f} s  {n / r['seconds']:7.1f} img/s   wall {r['wall']:6.2f} s   "
              f"driver CPU {1000 * r['cpu'] / n:5.2f} s per 1,000 rows")
    pool = ray["usage"].get("ray sleep", {})
    dec = ray["usage"].get("ray decode", {})
    print(f"ray start (ray.init + replicas ready): {ray['start']:.2f} s; replica busy {pool.get('busy_seconds')} s "
          f"(utilisation {pool.get('utilisation')}); {dec.get('tasks')} decode tasks, {dec.get('seconds')} s in them")
    print(f"throughput ratio ray/local (pipeline): {local['seconds'] / ray['seconds']:.3f}  (target >= 0.8)")
    print(f"throughput ratio ray/local (wall, start included): {local['wall'] / ray['wall']:.3f}")
    print(f"model-bound ideal: {model:.2f} s; local at {model / local['seconds']:.2f}, ray at "
          f"{model / ray['seconds']:.2f} of it")


if __name__ == "__main__":
    main()
