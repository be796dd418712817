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
    import concurrent.futures
    import time

    from pixscribe.backends.openai_backend import OpenAIBackend
    from pixscribe.testing.openai_server import ServerProcess

    held = 2.0
    with ServerProcess("--mode", "echo", "--model", "m", "--hold", "0") as srv:  # holds every request
        b = OpenAIBackend("m", [srv.url], concurrency=4)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            fut = pool.submit(b.generate, [GenerationRequest.simple(f"say {i}") for i in range(8)])
            deadline = time.monotonic() + 120
            while srv.stats()["max_inflight"] < 4:  # a state, not a time: however slow the machine
                assert time.monotonic() < deadline, "the first four requests never reached the server"
                time.sleep(0.02)
            time.sleep(held)  # four requests in flight together for at least this long
            srv.admin(hold=None)
            res = fut.result(120)
        finally:
            pool.shutdown()
            b.close()
    assert all(r.ok for r in res)
    total = sum(r.seconds for r in res)
    rounds = sum(r.latency for r in res)
    # while four were in flight together each got a quarter of the time: the shares add up to
    # at least 3 x `held` less than the latencies, however long anything else took
    assert total <= rounds - 3 * held * 0.999
    assert sorted(r.latency for r in res)[-4] >= held and b.usage.summary()["latency_p95"] >= held


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
