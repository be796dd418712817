"""P3: OpenAIBackend throughput against the loopback server at fixed latency.

For C in {8, 32, 128}: the echo server answers after L = 200 ms; N = 10*C requests go
through OpenAIBackend(concurrency=C). Ideal throughput is C/L; the target is
achieved / ideal >= 0.9.

    python bench/p3_http.py [--latency 0.2] [--per-c 10] [--cs 8,32,128] [--image]
"""

from __future__ import annotations

import argparse
import time

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.testing.openai_server import ServerProcess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--per-c", type=int, default=10, help="N = per_c * C requests per run")
    ap.add_argument("--cs", default="8,32,128")
    ap.add_argument("--image", action="store_true", help="send a 512x512 photo with each request")
    a = ap.parse_args()
    images = []
    if a.image:
        from pixscribe.testing import sample_photo

        images = [sample_photo("astronaut")]
    L = a.latency
    print(f"P3 loopback OpenAI-compatible server, latency L = {L * 1000:.0f} ms, images/request = {len(images)}")
    print(f"{'C':>5} {'N':>6} {'seconds':>8} {'achieved/s':>11} {'C/L':>8} {'ratio':>6} {'inflight max (client/server)':>30}")
    with ServerProcess("--mode", "echo", "--latency", str(L)) as srv:
        for c in [int(x) for x in a.cs.split(",")]:
            n = a.per_c * c
            b = OpenAIBackend("pixscribe-test", [srv.url], concurrency=c, request_timeout=30, max_pixels=262_144)
            mk = lambda tag, k: [  # noqa: E731
                GenerationRequest.simple(f"{tag} {i}", images, sampling=Sampling(max_new_tokens=16)) for i in range(k)
            ]
            b.generate(mk("warm", c))  # open the keep-alive connections
            srv.reset()
            t = time.perf_counter()
            res = b.generate(mk("run", n))
            dt = time.perf_counter() - t
            ok = sum(r.ok for r in res)
            thr = ok / dt
            ideal = c / L
            st = srv.stats()
            print(
                f"{c:>5} {n:>6} {dt:>8.2f} {thr:>11.1f} {ideal:>8.1f} {thr / ideal:>6.2f} "
                f"{b.limiter.max_inflight:>14}/{st['max_inflight']:<15}"
                + ("" if ok == n else f"  ({n - ok} failed: {next(r.error for r in res if not r.ok)})")
            )
            u = b.usage.summary()
            print(f"      latency p50 {u['latency_p50']} s  p95 {u['latency_p95']} s  retries {u['retries']}")
            b.close()


if __name__ == "__main__":
    main()
