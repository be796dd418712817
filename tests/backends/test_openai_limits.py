"""OpenAIBackend's truthfulness and bounds against the loopback server (a subprocess on
127.0.0.1): finish_reason and truncation, structured-output modes as real vLLM treats
them, the response size cap, the request deadline, and a server killed mid-run (RunStop)
or coming back (used again within seconds)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fixtures_openai import MODEL, SCHEMA, backend, reqs
from pixscribe.backends.base import Sampling
from pixscribe.backends.openai_backend import response_cap
from pixscribe.record import RunStop
from pixscribe.testing.openai_server import ServerProcess, free_port


@pytest.fixture
def echo():
    with ServerProcess("--mode", "echo", "--retry-after", "0.02", "--huge-bytes", "20000000") as srv:
        yield srv


# ---- finish_reason and truncation ------------------------------------------------------------


def test_finish_reason_recorded_and_a_reply_cut_at_the_limit_is_flagged(echo):
    b = backend(echo.url)
    short, cut = b.generate(
        reqs(["tell me"], sampling=Sampling(max_new_tokens=50))
        + reqs(["one two three four five six seven eight"], sampling=Sampling(max_new_tokens=3))
    )
    assert short.ok and short.finish_reason == "stop" and not short.truncated
    # a plain-text reply cut at the limit stays a result, flagged
    assert cut.ok and cut.text == "echo: one two" and cut.finish_reason == "length" and cut.truncated
    assert cut.tokens_out == 3
    b.close()


def test_a_truncated_json_reply_is_a_truncated_error_and_is_not_resent(echo):
    b = backend(echo.url)
    (r,) = b.generate(reqs(["json please"], json_schema=SCHEMA, sampling=Sampling(max_new_tokens=2)))
    assert not r.ok and r.truncated and r.finish_reason == "length" and r.parsed is None
    assert r.text == '{"caption": "x",'  # json-repair would make {"caption": "x"} of it: never read as data
    assert r.error.startswith("truncated: the reply was cut at max_new_tokens=2 (finish_reason=length) before its "
                              "JSON was complete")
    assert "raise the token limit" in r.error and "stricter retry" not in r.error
    assert echo.stats()["chat_requests"] == 1  # a stricter prompt cannot fix a token budget
    (ok,) = b.generate(reqs(["json please"], json_schema=SCHEMA, sampling=Sampling(max_new_tokens=20)))
    assert ok.ok and ok.parsed == {"caption": "x", "objects": []} and not ok.truncated
    b.close()


# ---- structured-output modes, as real vLLM >= 0.12 treats them ---------------------------------


def test_vllm_legacy_mode_is_refused_with_the_mode_to_use():
    with pytest.raises(ValueError, match=r"vllm-legacy.*ignores guided_json.*use response_format"):
        backend("http://127.0.0.1:1/v1", structured="vllm-legacy")


def test_test_server_ignores_guided_json_like_vllm(echo):
    """response_format and structured_outputs constrain the reply; guided_json is ignored
    with a 200 and a warning in the server's log, as vLLM 0.32 does."""
    base = {"model": MODEL, "messages": [{"role": "user", "content": "describe"}], "max_tokens": 50}
    fields = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
        "structured_outputs": {"json": SCHEMA},
        "guided_json": SCHEMA,
    }
    out = {}
    for name, value in fields.items():
        r = httpx.post(echo.url + "/chat/completions", json={**base, name: value}, timeout=10)
        assert r.status_code == 200
        out[name] = r.json()["choices"][0]["message"]["content"]
    assert out["response_format"] == out["structured_outputs"] == '{"caption": "x", "objects": []}'
    assert out["guided_json"] == "echo: describe"  # unconstrained
    assert echo.stats()["ignored_fields"] == ["guided_json"]
    assert "guided_json" in echo.log() and "NOT be constrained" in echo.log()


def test_unconstrained_answer_names_the_mode_to_try(echo):
    b = backend(echo.url)
    (r,) = b.generate(reqs(["[[always:garbage]]"], json_schema=SCHEMA))
    assert r.error.startswith("schema: ") and "is not JSON" in r.error
    assert "did not constrain decoding with --structured-output response_format" in r.error
    assert "try --structured-output vllm" in r.error
    b.close()


# ---- the response size cap ------------------------------------------------------------------------


def test_a_20mb_reply_is_an_error_row_read_no_further_than_the_cap(echo):
    b = backend(echo.url)
    cap = response_cap(128)
    assert cap < 1_000_000
    huge, stream, fine = b.generate(reqs(["[[always:huge]]", "[[always:huge_stream]]", "normal"]))
    assert huge.error.startswith("http: ") and f"over the {cap}-byte limit" in huge.error
    assert "declares 200" in huge.error and huge.text is None and huge.retries == 0
    assert stream.error.startswith("http: ") and f"grew past {cap} bytes" in stream.error and stream.text is None
    assert "not retried" in huge.error and "not retried" in stream.error
    assert fine.ok and fine.text == "echo: normal"
    st = echo.stats()
    assert st["by_fault"]["huge"] == 1 and st["by_fault"]["huge_stream"] == 1  # never resent
    b.close()


# ---- the request deadline -------------------------------------------------------------------------


def test_request_deadline_bounds_retry_after_waits():
    with ServerProcess("--mode", "echo", "--retry-after", "30") as srv:
        b = backend(srv.url, request_deadline=1.0, max_retries=5)
        t = time.perf_counter()
        (r,) = b.generate(reqs(["[[always:429]]"]))
        elapsed = time.perf_counter() - t
        assert 0.9 <= elapsed < 20  # not 30 s: the Retry-After wait counts against the deadline
        assert r.error.startswith("timeout: no answer within the request deadline of 1 s (--request-deadline)")
        assert "429" in r.error and r.status == 429
        b.close()


def test_request_deadline_counts_slot_waits():
    # the second request gets the slot after one 2.5 s answer and cannot be answered before 5 s,
    # past its 4 s deadline whatever the load; the first has 1.5 s of slack for a loaded machine
    with ServerProcess("--mode", "echo", "--latency", "2.5") as srv:
        b = backend(srv.url, concurrency=1, request_deadline=4.0, request_timeout=10.0)
        res = b.generate(reqs([f"queued {i}" for i in range(4)]))
        assert res[0].ok  # the first one had the slot
        late = [r for r in res if not r.ok]
        assert late and all("request deadline of 4 s" in r.error for r in late)
        assert any("no endpoint was free" in r.error or "0 attempt(s)" in r.error for r in late)
        b.close()


# ---- a server killed mid-run, and one that comes back ------------------------------------------------


def _kill_when_asked(srv: ServerProcess, n: int) -> threading.Thread:
    """Kill the server once it has seen ``n`` chat requests (it holds them unanswered: started
    with ``--hold``), so the batch meets the outage however slow the machine is."""
    def go():
        deadline = time.monotonic() + 120
        while srv.stats()["chat_requests"] < n and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.proc.kill()
        srv.proc.wait()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_server_killed_mid_run_stops_the_run_within_the_down_timeout():
    with ServerProcess("--mode", "echo", "--hold", "1") as srv:  # answers "warm", then holds everything
        b = backend(srv.url, concurrency=4, endpoint_down_timeout=1.5, cooldown=0.5)
        assert b.generate(reqs(["warm"]))[0].ok
        killer = _kill_when_asked(srv, 2)
        t = time.perf_counter()
        with pytest.raises(RunStop) as ei:
            b.generate(reqs([f"item {i}" for i in range(64)]))
        elapsed = time.perf_counter() - t
        killer.join()
        assert elapsed < 60  # the down timeout (1.5 s) after the kill, not the requests' 60 s deadline
        msg = str(ei.value)
        assert srv.url in msg and "--endpoint-down-timeout" in msg and "rerun the same command to resume" in msg
        with pytest.raises(RunStop):  # the stop is sticky: later batches stop at once
            b.generate(reqs(["after the stop"]))
        b.close()


def test_server_killed_mid_run_without_a_run_stop_gives_error_rows_in_bounded_time():
    with ServerProcess("--mode", "echo", "--hold", "4") as srv:  # answers 4 requests, then holds
        b = backend(srv.url, concurrency=4, endpoint_down_timeout=None, request_deadline=1.5, cooldown=0.5,
                    request_timeout=30)
        killer = _kill_when_asked(srv, 5)
        t = time.perf_counter()
        res = b.generate(reqs([f"item {i}" for i in range(32)]))
        elapsed = time.perf_counter() - t
        killer.join()
        assert elapsed < 25  # every request's life is bounded by its 1.5 s deadline, not the 30 s timeout
        done = [r for r in res if r.ok]
        failed = [r for r in res if not r.ok]
        assert len(failed) >= 28 and len(done) + len(failed) == 32
        assert all(r.error.startswith("timeout: no answer within the request deadline") for r in failed)
        b.close()


def test_server_that_comes_back_is_used_again_within_seconds():
    port = free_port()
    args = ("--mode", "echo", "--latency", "0.05", "--port", str(port))
    srv = ServerProcess(*args)
    b = backend(srv.url, concurrency=4, endpoint_down_timeout=600, cooldown=0.5, request_deadline=600)
    try:
        assert b.generate(reqs(["warm"]))[0].ok
        srv.close()  # down
        fut = ThreadPoolExecutor(1).submit(b.generate, reqs([f"during the outage {i}" for i in range(20)]))
        time.sleep(2.0)
        assert not fut.done()  # waiting (no attempts spent, no error rows)
        srv = ServerProcess(*args)  # back, on the same port
        back = time.perf_counter()
        res = fut.result(120)
        # probed every <= 0.5 s, then everyone goes at once (was: up to the down timeout, here 600 s)
        assert time.perf_counter() - back < 60
        assert all(r.ok for r in res), [r.error for r in res if not r.ok]
        assert srv.stats()["ok"] == 20
        ep = b.stats()["endpoints"][0]
        assert ep["down"] is False and ep["failures"] == 0
    finally:
        b.close()
        srv.close()
