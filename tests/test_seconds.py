"""``seconds`` means the same on every backend: a row's share of model time, so the rows'
seconds add up to the time the model was busy. ``latency`` (the summary's p50/p95) is how
long each request took to answer."""

from __future__ import annotations

import pytest

from pixscribe.backends.base import GenerationRequest, ShareClock


def test_share_clock_splits_time_among_requests_in_flight():
    t = [0.0]
    c = ShareClock()
    c._now = lambda: t[0]
    c._last = 0.0
    a = c.start()          # t=0: a alone
    t[0] = 1.0
    b = c.start()          # t=1: a and b share
    t[0] = 3.0
    sa = c.stop(a)         # a: 1 + 2/2 = 2
    t[0] = 4.0
    sb = c.stop(b)         # b: 2/2 + 1 = 2
    t[0] = 10.0            # idle time belongs to nobody
    d = c.start()
    t[0] = 10.5
    sd = c.stop(d)
    assert (sa, sb, sd) == (2.0, 2.0, 0.5) and sa + sb + sd == 4.5  # busy from 0 to 4, and 10 to 10.5


def test_http_rows_share_the_servers_time(tmp_path):
    from pixscribe.backends.openai_backend import OpenAIBackend
    from pixscribe.testing.openai_server import ServerProcess

    with ServerProcess("--mode", "echo", "--model", "m", "--latency", "0.3") as srv:
        b = OpenAIBackend("m", [srv.url], concurrency=4)
        try:
            res = b.generate([GenerationRequest.simple(f"say {i}") for i in range(8)])
        finally:
            b.close()
    assert all(r.ok for r in res)
    assert all(0.25 <= r.latency < 3.0 for r in res)  # each waited about one server round trip
    total = sum(r.seconds for r in res)
    rounds = sum(r.latency for r in res)
    # 8 requests, 4 at a time: the server was busy about 2 x 0.3 s, not 8 x 0.3 s
    assert total == pytest.approx(rounds / 4, rel=0.35) and total < rounds / 2
    assert b.usage.summary()["latency_p50"] >= 0.25


def test_a_local_batch_is_shared_by_its_requests(tiny_vlms):
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.testing import sample_photo

    b = TransformersBackend(str(tiny_vlms["llava"]), device="cpu")
    im = sample_photo("coffee").resize((64, 48))
    reqs = [GenerationRequest.simple("Describe.", [im]) for _ in range(3)]
    for r in reqs:
        r.sampling.max_new_tokens = 3
    res = b.generate(reqs)
    assert all(r.ok for r in res)
    assert len({r.latency for r in res}) == 1  # every request waited for the whole batch...
    assert sum(r.seconds for r in res) == pytest.approx(res[0].latency)  # ...and the batch is shared
