"""P3: OpenAIBackend throughput against the loopback server at fixed latency.

For C in {8, 32, 128}: the echo server (a subprocess, so its CPU is not the client's)
answers after L = 200 ms; N = per_c * C requests go through OpenAIBackend(concurrency=C).
Ideal throughput is C/L; the target is achieved / ideal >= 0.9.

Three workloads per C, side by side in one run:

- ``text``: text-only requests;
- ``jpeg re-encode``: one distinct 512x512 JPEG per request, decoded by
  ``pixscribe.imaging.decode`` as the engine does, with the pass-through switched off
  (every image resized-to-budget and re-encoded, the behaviour before it);
- ``jpeg pass-through``: the same decoded images as the engine hands them to stages, so
  a JPEG within the budget is sent as its own bytes.

Client CPU ms per request is this process's CPU time (``time.process_time``: all its
threads, user + system) over the timed batch, divided by N; the server's CPU per request
(from /proc) is printed beside it, measured over the same batch. On a shared machine the
throughput ratio depends on the load; the CPU figures much less.

    python bench/p3_http.py [--latency 0.2] [--per-c 10] [--cs 8,32,128] [--no-text] [--no-images]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pixscribe.backends.base import GenerationRequest, Sampling  # noqa: E402
from pixscribe.backends.openai_backend import OpenAIBackend  # noqa: E402
from pixscribe.testing.openai_server import ServerProcess  # noqa: E402

BUDGET = 512 * 512  # the backend's --max-pixels: a 512 px image is within it


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc (Linux); 0 elsewhere."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decoded_jpegs(n: int) -> list:
    """n distinct 512x512 JPEG photos, decoded as the engine decodes them."""
    from _util import generate_jpegs

    from pixscribe.imaging import decode

    paths = generate_jpegs(Path(tempfile.gettempdir()) / "pixscribe_p3_512", n, (512, 512), quality=90)
    out = []
    for p in paths:
        dec = decode(p.read_bytes(), max_pixels=1_000_000)
        assert dec.passthrough, f"{p} should qualify for the pass-through"
        out.append(dec.image)
    return out


def run_one(srv: ServerProcess, c: int, n: int, latency: float, images: list | None) -> dict:
    b = OpenAIBackend("pixscribe-test", [srv.url], concurrency=c, request_timeout=30, max_pixels=BUDGET)

    def mk(tag: str, k: int, offset: int = 0) -> list[GenerationRequest]:
        return [
            GenerationRequest.simple(
                f"{tag} {i}", [images[(offset + i) % len(images)]] if images else [],
                sampling=Sampling(max_new_tokens=16),
            )
            for i in range(k)
        ]

    b.generate(mk("warm", c))  # open the keep-alive connections
    srv.reset()
    batch = mk("run", n, offset=c)
    cpu0, scpu0, t0 = time.process_time(), proc_cpu(srv.proc.pid), time.perf_counter()
    res = b.generate(batch)
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    scpu = proc_cpu(srv.proc.pid) - scpu0
    ok = sum(r.ok for r in res)
    st = srv.stats()
    b.close()
    return {
        "seconds": dt,
        "ratio": (ok / dt) / (c / latency),
        "cpu_ms": 1000 * cpu / n,
        "server_cpu_ms": 1000 * scpu / n,
        "inflight": f"{b.limiter.max_inflight}/{st['max_inflight']}",
        "failed": n - ok,
        "error": next((r.error for r in res if not r.ok), None),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--per-c", type=int, default=10, help="N = per_c * C requests per run")
    ap.add_argument("--cs", default="8,32,128")
    ap.add_argument("--no-text", action="store_true")
    ap.add_argument("--no-images", action="store_true")
    a = ap.parse_args()
    cs = [int(x) for x in a.cs.split(",")]
    L = a.latency
    passthrough = [] if a.no_images else decoded_jpegs(a.per_c * max(cs) + max(cs))
    # the same pixels without the kept bytes (copy() does not carry them): the old path
    reencode = [im.copy() for im in passthrough]
    workloads = ([] if a.no_text else [("text", None)]) + (
        [] if a.no_images else [("jpeg re-encode", reencode), ("jpeg pass-through", passthrough)]
    )
    print(f"P3 loopback OpenAI-compatible server (subprocess), latency L = {L * 1000:.0f} ms, N = {a.per_c} x C")
    print(f"{'C':>5} {'workload':>18} {'N':>6} {'seconds':>8} {'achieved/(C/L)':>15} {'client CPU ms/req':>18} "
          f"{'server CPU ms/req':>18} {'inflight max (client/server)':>29}")
    with ServerProcess("--mode", "echo", "--latency", str(L)) as srv:
        for c in cs:
            n = a.per_c * c
            for name, imgs in workloads:
                r = run_one(srv, c, n, L, imgs)
                print(
                    f"{c:>5} {name:>18} {n:>6} {r['seconds']:>8.2f} {r['ratio']:>15.3f} {r['cpu_ms']:>18.2f} "
                    f"{r['server_cpu_ms']:>18.2f} {r['inflight']:>29}" + (f"  ({r['failed']} failed: {r['error']})" if r["failed"] else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
