"""P-report: `pixscribe report` on 100,000 synthetic rows finishes in bounded time and memory.

Writes synthetic textualize-like outputs (10,000-row parquet parts, as the engine's shards:
captions of 20-80 words, objects/hallucinations/regions JSON with a COCO RLE mask, 2 % error
rows) of 10,000 and 100,000 rows, and runs the report on each in its own process, side by
side: wall seconds and peak RSS (ru_maxrss). The report reads every row for the run page's
aggregates (DuckDB, a few columns) and renders the --sample rows (default 1,000, 20 pages);
--images points the rows at 200 real 1024x768 JPEGs so the sample's thumbnails are decoded
and written too (without it, the sources do not exist: the measure is the query, the
aggregates and the pages; thumbnails are then reported as unreadable, at no cost).

    python bench/p_report.py [--sizes 10000,100000] [--sample 1000] [--images]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from _util import generate_jpegs

WORDS = ("a red car parked beside an old brick wall under a cloudy sky with two people walking a small dog "
         "near the corner of the street while a bus passes").split()

BASELINE = r"""
import json, resource
import duckdb, jinja2, pyarrow.parquet, PIL.Image
import pixscribe.report.build
print("RESULT " + json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD = r"""
import json, resource, sys, time
from pixscribe.report.build import ReportOptions, build_report
t = time.perf_counter()
res = build_report({out!r}, {dest!r}, ReportOptions(sample={sample}, images={images}, workers=2))
print("RESULT " + json.dumps({{"rows": res.rows, "shown": res.shown, "pages": res.pages, "thumbnails": res.thumbnails,
                  "seconds": time.perf_counter() - t,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _mask() -> dict:
    from pixscribe.experts.rle import encode
    import numpy as np

    m = np.zeros((768, 1024), np.uint8)
    m[200:500, 300:700] = 1
    return encode(m)


def synth(out: Path, n: int, photos: list[Path] | None, part_rows: int = 10_000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    mask = json.dumps(_mask())
    out.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, n, part_rows)):
        cols: dict[str, list] = {k: [] for k in ("id", "source", "width", "height", "sha256", "method", "caption",
                                                 "description", "objects", "hallucinations", "regions", "model",
                                                 "prompt_sha", "seconds", "error", "provenance", "stages")}
        for i in range(start, min(n, start + part_rows)):
            err = rng.random() < 0.02
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))
            src = str(photos[i % len(photos)]) if photos else f"/nowhere/img{i:07d}.jpg"
            objs = [{"phrase": w, "verdict": rng.choice(("grounded", "hallucinated")), "score": round(rng.random(), 3),
                     "box": [100, 100, 400, 300], "detector": "owlv2"} for w in rng.sample(WORDS, 5)]
            vals = {"id": f"img{i:07d}", "source": src, "width": 1024, "height": 768, "sha256": None,
                    "method": "textualize", "caption": None if err else words, "description": None if err else words,
                    "objects": None if err else json.dumps(objs),
                    "hallucinations": None if err else json.dumps([o["phrase"] for o in objs if o["verdict"] != "grounded"]),
                    "regions": None if err else json.dumps([{"caption": "a region", "box": [300, 200, 700, 500],
                                                             "mask": json.loads(mask), "nearness": 0.5, "size_pct": 15.3}]),
                    "model": "sim", "prompt_sha": "abc", "seconds": None if err else rng.uniform(0.1, 2.0),
                    "error": f"{rng.choice(('decode', 'fetch', 'generate'))}: synthetic failure {i}" if err else None,
                    "provenance": json.dumps({"caption": {"stage": "rewrite", "model": "sim", "seconds": 0.2}}),
                    "stages": json.dumps({"describe": {"status": "ok", "fp": "a"}, "rewrite": {"status": "ok", "fp": "b"}})}
            for k, v in vals.items():
                cols[k].append(v)
        schema = pa.schema([(k, pa.int32() if k in ("width", "height") else pa.float64() if k == "seconds" else pa.string())
                            for k in cols])
        pq.write_table(pa.table(cols, schema=schema), out / f"part-{part:05d}.parquet", compression="zstd",
                       row_group_size=1024)
    (out / "_run.json").write_text(json.dumps({"method": {"method": "textualize", "stages": [
        {"stage": "describe", "fingerprint": "a"}, {"stage": "rewrite", "fingerprint": "b"}]}}))
    return out


def _result(p: subprocess.CompletedProcess) -> dict:
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"the child printed no result:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--images", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = generate_jpegs(Path(tmp) / "jpegs", 200, (1024, 768)) if a.images else None
        results = {}
        p = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True)
        base = _result(p)["maxrss_mb"]
        print(f"baseline (the report's imports only): peak RSS {base:.0f} MB")
        for n in (int(x) for x in a.sizes.split(",")):
            out = synth(Path(tmp) / f"out{n}", n, photos)
            size = sum(f.stat().st_size for f in out.glob("part-*")) / 1e6
            code = CHILD.format(out=str(out), dest=str(Path(tmp) / f"rep{n}"), sample=a.sample, images=a.images)
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = _result(p)
            rep = Path(tmp) / f"rep{n}"
            r["report_mb"] = sum(f.stat().st_size for f in rep.rglob("*") if f.is_file()) / 1e6
            results[n] = r
            print(f"{n:>8} rows ({size:6.1f} MB of parquet): {r['seconds']:6.2f} s, peak RSS {r['maxrss_mb']:6.0f} MB, "
                  f"{r['shown']} rows shown on {r['pages']} pages, {r['thumbnails']} thumbnails, "
                  f"report {r['report_mb']:.1f} MB", flush=True)
        ns = sorted(results)
        if len(ns) > 1:
            lo, hi = results[ns[0]], results[ns[-1]]
            print(f"x{ns[-1] / ns[0]:.0f} rows: x{hi['seconds'] / lo['seconds']:.2f} seconds, "
                  f"x{hi['maxrss_mb'] / lo['maxrss_mb']:.2f} peak RSS")


if __name__ == "__main__":
    main()
