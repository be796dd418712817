"""P3: OpenAIBackend throughput against the loopback server at fixed latency.

For C in {8, 32, 128}: the echo server (a subprocess, so its CPU is not the client's)
answers after L = 200 ms; N = per_c * C requests go through OpenAIBackend(concurrency=C).
Ideal throughput is C/L; the target is achieved / ideal >= 0.9.

Two sizes per C (``--per-c 10,40``): N = 10 C is ten round trips, of which the ramp (C
first requests sent one after another) and the drain (the last round trip's stragglers)
take a visible share; N = 40 C is closer to a long run's steady state, which is what the
engine sees (it keeps two batches in flight, so the pipe does not drain between batches).

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

Two placements, side by side in one run (``--placements``):

- ``shared``: client and server on every core (on a 2-core machine they compete for both);
- ``pinned``: the client on core 0, the server on core 1 (every thread of each, set by
  ``sched_setaffinity``), as when the server is another machine (the GPU box) and the client
  has its own core. Linux only; needs at least two cores.

And two servers (``--servers``), both answering after L:

- ``threaded``: pixscribe's test server (``pixscribe.testing.openai_server``, a thread per
  connection): at C = 128 its 128 threads take turns at one GIL, which adds latency of its own;
- ``async``: bench/_echo_async.py, one asyncio loop for every connection, as a model
  server's front end is (vLLM's is asyncio); it parses each body and reads each image's header.

    python bench/p3_http.py [--latency 0.2] [--per-c 10,40] [--cs 8,32,128] [--no-text] [--no-images]
                            [--placements shared,pinned] [--servers threaded,async]
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


def place(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` (0: this one) on ``cpus``; threads made later inherit it."""
    import os

    for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


class AsyncServer:
    """bench/_echo_async.py in a subprocess, with ServerProcess's url / proc / reset / stats."""

    def __init__(self, latency: float):
        self.latency = latency

    def __enter__(self) -> "AsyncServer":
        import subprocess

        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_echo_async.py")), "--latency",
                                      str(self.latency)], stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()

    def reset(self) -> None:
        import httpx

        httpx.post(self.base + "/stats/reset", timeout=10)

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.base + "/stats", timeout=10).json()


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
    ap.add_argument("--per-c", default="10,40", help="N = per_c * C requests per run (a list: each size)")
    ap.add_argument("--cs", default="8,32,128")
    ap.add_argument("--no-text", action="store_true")
    ap.add_argument("--no-images", action="store_true")
    ap.add_argument("--placements", default="shared,pinned", help="shared, pinned or both (see the docstring)")
    ap.add_argument("--servers", default="threaded,async", help="threaded, async or both (see the docstring)")
    a = ap.parse_args()
    cs = [int(x) for x in a.cs.split(",")]
    L = a.latency
    sizes = [int(x) for x in a.per_c.split(",")]
    # distinct images for the 10 C size; a longer run cycles through them (the backend's JPEG memo
    # holds 16, so a cycle of 11 C never hits it)
    passthrough = [] if a.no_images else decoded_jpegs(10 * max(cs) + max(cs))
    # the same pixels without the kept bytes (copy() does not carry them): the old path
    reencode = [im.copy() for im in passthrough]
    workloads = ([] if a.no_text else [("text", None)]) + (
        [] if a.no_images else [("jpeg re-encode", reencode), ("jpeg pass-through", passthrough)]
    )
    placements = a.placements.split(",")
    import os

    every = set(range(os.cpu_count() or 1))
    if "pinned" in placements and len(every) < 2:
        placements.remove("pinned")
        print("pinned placement skipped: one core")
    print(f"P3 loopback OpenAI-compatible servers (subprocesses), latency L = {L * 1000:.0f} ms, N = {a.per_c} x C")
    print(f"{'C':>5} {'server':>8} {'placement':>9} {'workload':>18} {'N':>6} {'seconds':>8} {'achieved/(C/L)':>15} "
          f"{'client CPU ms/req':>18} {'server CPU ms/req':>18} {'inflight max (client/server)':>29}")
    servers = {"threaded": lambda: ServerProcess("--mode", "echo", "--latency", str(L)), "async": lambda: AsyncServer(L)}
    for kind in a.servers.split(","):
        with servers[kind]() as srv:
            for c, per in ((c, per) for c in cs for per in sizes):
                n = per * c
                for name, imgs in workloads:
                    for where in placements:
                        place(0, {0} if where == "pinned" else every)
                        place(srv.proc.pid, {1} if where == "pinned" else every)
                        r = run_one(srv, c, n, L, imgs)
                        print(
                            f"{c:>5} {kind:>8} {where:>9} {name:>18} {n:>6} {r['seconds']:>8.2f} {r['ratio']:>15.3f} "
                            f"{r['cpu_ms']:>18.2f} {r['server_cpu_ms']:>18.2f} {r['inflight']:>29}"
                            + (f"  ({r['failed']} failed: {r['error']})" if r["failed"] else ""),
                            flush=True,
                        )
        place(0, every)


if __name__ == "__main__":
    main()
