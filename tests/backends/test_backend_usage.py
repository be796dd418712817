"""The usage counters behind the run summary stay bounded and their percentiles stay true."""

from __future__ import annotations

import random

from pixscribe.backends.base import BackendUsage, GenerationResult, LatencyHistogram


def _sorted_pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p * (len(s) - 1)))))]


def test_percentiles_are_within_one_percent_of_the_sorted_list():
    rng = random.Random(7)
    values = [rng.lognormvariate(-1.0, 1.2) for _ in range(20_000)] + [0.0, 3600.0]
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    for p in (0.0, 0.5, 0.95, 0.99):
        want = max(_sorted_pct(values, p), LatencyHistogram.FLOOR)
        assert abs(h.percentile(p) - want) <= 0.0051 * want, (p, h.percentile(p), want)
    assert h.count == len(values)


def test_memory_does_not_grow_with_requests():
    u = BackendUsage()
    for i in range(100_000):
        u.add(GenerationResult(text="x", latency=0.2 + (i % 50) * 0.001))
    assert u.requests == 100_000
    assert len(u.latency.buckets) <= 30  # 0.200-0.249 s spans ~22 buckets of 1 %
    assert not hasattr(u, "latencies")
    s = u.summary()
    assert 0.2 <= s["latency_p50"] <= 0.25 and s["latency_p95"] >= s["latency_p50"]


def test_replica_histograms_merge_to_the_histogram_of_all_requests():
    a, b, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, v in enumerate(x / 100 for x in range(1, 500)):
        (a if i % 3 else b).add(v)
        whole.add(v)
    merged = LatencyHistogram()
    merged.merge({str(k): n for k, n in a.buckets.items()})  # as it arrives from a replica (JSON keys)
    merged.merge(b.buckets)
    assert merged.buckets == whole.buckets and merged.count == whole.count
    assert merged.percentile(0.95) == whole.percentile(0.95)


def test_no_latency_means_no_percentile():
    assert BackendUsage().summary()["latency_p50"] is None
