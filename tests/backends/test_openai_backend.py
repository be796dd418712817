"""OpenAIBackend against the loopback server (pixscribe.testing.openai_server) running in a
subprocess on 127.0.0.1: real HTTP, real faults, real timing."""

from __future__ import annotations

import email.utils
import time

import pytest

from fixtures_openai import MODEL, SCHEMA, backend, reqs
from pixscribe.backends.base import BackendUnavailable, GenerationRequest, Sampling
from pixscribe.backends.openai_backend import (
    AdaptiveLimiter,
    EndpointPool,
    OpenAIBackend,
    normalize_base_url,
    parse_retry_after,
    to_openai_messages,
)
from pixscribe.config import RunConfig
from pixscribe.testing import sample_photo
from pixscribe.testing.openai_server import ServerProcess, free_port


@pytest.fixture
def echo():
    # a "slow" fault answers after 60 s: far past any timeout a test sets, however loaded the machine
    with ServerProcess("--mode", "echo", "--retry-after", "0.02", "--slow", "60") as srv:
        yield srv


def _wait_until(what, check, timeout: float = 120.0) -> None:
    """Wait for a state (not for a time): however slow the machine, the test sees it happen."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never saw {what} in {timeout:.0f} s"
        time.sleep(0.02)


def test_test_server_admin_rejects_an_unknown_option_and_keeps_serving(echo):
    import httpx

    r = httpx.post(echo.base + "/admin", json={"no_such_option": 1}, timeout=5)
    assert r.status_code == 400 and "no_such_option" in r.text
    assert echo.stats()["by_status"]["400"] == 1  # the server did not lock itself up
    echo.admin(latency=0.0)  # known options still apply


# ---- pure helpers --------------------------------------------------------------------------


def test_normalize_base_url_and_errors():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    with pytest.raises(ValueError, match="--base-url"):
        normalize_base_url("localhost:8000")


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after("100000") == 300.0  # capped


def test_messages_conversion_images_and_text_only():
    img = sample_photo("coffee")
    seen = []
    msgs = GenerationRequest.simple("Describe.", [img, img], system="Be brief.").messages
    out = to_openai_messages(msgs, [img, img], lambda im: seen.append(im) or b"\xff\xd8jpeg")
    assert out[0] == {"role": "system", "content": "Be brief."}
    parts = out[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert len(seen) == 2
    text_only = to_openai_messages(GenerationRequest.simple("Rewrite this.").messages, [], lambda im: b"")
    assert text_only == [{"role": "user", "content": "Rewrite this."}]
    with pytest.raises(ValueError, match="placeholder"):
        to_openai_messages(msgs, [img], lambda im: b"")


def test_limiter_halves_once_per_round_trip_and_grows_additively():
    lim = AdaptiveLimiter(16)
    assert lim.current == 16
    epochs = [lim.epoch] * 5  # five requests sent before the storm answers
    assert lim.on_overload(epochs[0]) is True
    assert lim.current == 8
    assert not any(lim.on_overload(e) for e in epochs[1:])  # same round trip: no further halving
    assert lim.current == 8
    assert lim.on_overload(lim.epoch) and lim.current == 4
    for _ in range(4):
        lim.on_success()
    assert lim.current == 5  # +1 after `limit` successes in a row
    lim2 = AdaptiveLimiter(3)
    for _ in range(100):
        lim2.on_success()
    assert lim2.current == 3  # never above the cap


def test_pool_weights_prefer_healthy_endpoints():
    pool = EndpointPool(["http://a:1/v1", "http://b:1/v1"])
    a, b = pool.endpoints
    a.failures = 3  # weight 1/4 vs 1
    picks = [pool.pick(0.0) for _ in range(50)]
    assert picks.count(b) == 40 and picks.count(a) == 10
    b.disabled = "b: 401"
    assert all(pool.pick(0.0) is a for _ in range(5))


# ---- against the loopback server --------------------------------------------------------


def test_check_lists_served_models_and_names_dead_urls(echo):
    b = backend(echo.url)
    assert b.check() == [echo.url]
    wrong = OpenAIBackend("no-such-model", [echo.url])
    with pytest.raises(BackendUnavailable, match="pixscribe-test"):
        wrong.check()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnavailable, match=dead.replace(".", r"\.")):
        backend(dead).check()


def test_images_are_resized_jpeg_data_urls_and_text_only_works(echo):
    b = backend(echo.url, max_pixels=4096)
    img = sample_photo("astronaut")  # 512x512
    res = b.generate(reqs(["one image"], images=[img]) + reqs(["no image"]))
    assert res[0].ok and res[0].text.startswith("echo: one image [1 image(s) 64x64]")
    assert res[1].ok and res[1].text == "echo: no image"
    st = echo.stats()
    assert st["max_image_pixels"] <= 4096 and st["image_formats"] == ["JPEG"]
    assert res[0].tokens_in > 0 and res[0].tokens_out > 0
    b.close()


def test_transient_faults_all_recover_in_order(echo):
    faults = ["429", "500", "503", "502", "drop", "overloaded", "408", "slow"]
    prompts = [f"item {i} [[faults:{faults[i % len(faults)]},{faults[(i + 3) % len(faults)]}]]" for i in range(24)]
    b = backend(echo.url, request_timeout=5.0)  # a loopback answer takes ms; only "slow" (60 s) times out
    res = b.generate(reqs(prompts))
    assert [r.ok for r in res] == [True] * 24, [r.error for r in res if not r.ok]
    assert [r.text for r in res] == [f"echo: {p}" for p in prompts]
    assert all(r.retries == 2 for r in res)
    st = echo.stats()
    assert st["chat_requests"] == 24 * 3 and st["ok"] >= 24  # (slow replies may still finish late)
    for f in faults:
        assert st["by_fault"][f] == 6
    u = b.usage.summary()
    assert u["requests"] == 24 and u["retries"] == 48 and u["failures"] == 0
    assert u["latency_p50"] is not None
    b.close()


def test_permanent_faults_become_error_rows_with_last_status(echo):
    prompts = [
        "ok one",
        "flaky [[faults:500,429]]",
        "dead [[always:500]]",
        "bad request [[always:400]]",
        "gone [[always:404]]",
        "slowpoke [[always:slow]]",
        "dropper [[always:drop]]",
        "timeout-ish [[always:408]]",
        "ok two",
    ]
    b = backend(echo.url, max_retries=2, request_timeout=2.0)  # only "slow" (60 s) outlasts it
    res = b.generate(reqs(prompts))
    assert len(res) == len(prompts)
    by = dict(zip(prompts, res))
    assert by["ok one"].ok and by["ok two"].ok and by["flaky [[faults:500,429]]"].ok
    dead = by["dead [[always:500]]"]
    assert dead.status == 500 and dead.error.startswith("http: 500") and "gave up after 3 attempt(s)" in dead.error
    assert dead.retries == 2
    bad = by["bad request [[always:400]]"]
    assert bad.status == 400 and "not retried" in bad.error and bad.retries == 0
    assert by["gone [[always:404]]"].status == 404 and by["gone [[always:404]]"].retries == 0
    slow = by["slowpoke [[always:slow]]"]
    assert slow.error.startswith("timeout: ") and "2 s" in slow.error and slow.retries == 2
    assert by["dropper [[always:drop]]"].error.startswith("connection: ")
    assert by["timeout-ish [[always:408]]"].status == 408 and by["timeout-ish [[always:408]]"].retries == 2
    st = echo.stats()
    assert st["by_fault"]["400"] == 1 and st["by_fault"]["404"] == 1  # never retried
    assert st["by_fault"]["500"] == 3 + 1  # dead: 3 attempts; flaky: 1
    b.close()


def test_retry_after_is_honoured():
    with ServerProcess("--mode", "echo", "--retry-after", "0.6") as srv:
        b = backend(srv.url, backoff_base=0.001)
        t = time.perf_counter()
        (r,) = b.generate(reqs(["wait [[faults:429]]"]))
        assert r.ok and r.retries == 1
        assert time.perf_counter() - t >= 0.6
        b.close()


def test_concurrency_drops_under_429_storm_and_recovers():
    # 0.2 s answers: 32 requests sent at once overlap at the server however slowly the client sends
    with ServerProcess("--mode", "echo", "--latency", "0.2", "--capacity", "4", "--retry-after", "0") as srv:
        b = backend(srv.url, concurrency=32, max_retries=50)
        res = b.generate(reqs([f"storm {i}" for i in range(80)]))
        assert all(r.ok for r in res)
        storm = list(b.limiter.samples)
        assert storm[0][2] == 32
        storm_min = min(s[2] for s in storm)
        assert storm_min <= 8  # halved repeatedly by the 429s
        assert b.limiter.decreases >= 2
        assert srv.stats()["by_fault"]["capacity"] > 0
        srv.admin(capacity=None, latency=0.02)  # the storm is over
        n0 = len(b.limiter.samples)
        res = b.generate(reqs([f"calm {i}" for i in range(400)]))
        assert all(r.ok for r in res)
        calm = list(b.limiter.samples)[n0:]
        assert max(s[2] for s in calm) >= storm_min + 8  # additive increase on success streaks
        assert max(s[1] for s in calm) > 8  # and more requests really are in flight
        assert max(s[1] for s in storm + calm) <= 32  # never above --concurrency
        b.close()


def test_two_base_urls_one_down_all_work_goes_to_the_live_one(echo):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    b = backend([dead, echo.url], max_retries=0, cooldown=30.0)
    res = b.generate(reqs([f"pool {i}" for i in range(40)]))
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    st = echo.stats()
    assert st["chat_requests"] == 40 and st["ok"] == 40
    down, live = b.stats()["endpoints"]
    assert down["succeeded"] == 0 and down["sent"] <= 1 + 8  # at most one round of probes
    assert live["succeeded"] == 40
    b.close()


def test_unauthorized_endpoint_is_disabled_with_a_clear_message(monkeypatch):
    with ServerProcess("--mode", "echo", "--api-key", "right") as srv:
        monkeypatch.setenv("PIXSCRIBE_TEST_KEY", "wrong")
        b = backend(srv.url, api_key_env="PIXSCRIBE_TEST_KEY")
        res = b.generate(reqs([f"auth {i}" for i in range(30)]))
        assert all(not r.ok for r in res)
        for r in res:
            assert r.error.startswith("auth: ") and "401" in r.error and "endpoint disabled" in r.error
            assert "$PIXSCRIBE_TEST_KEY" in r.error
        assert srv.stats()["chat_requests"] <= 8  # fails fast: no retry storm
        assert "right" not in res[0].error and "wrong" not in res[0].error  # the key is never echoed
        b.close()
        monkeypatch.setenv("PIXSCRIBE_TEST_KEY", "right")
        good = backend(srv.url, api_key_env="PIXSCRIBE_TEST_KEY")
        assert good.check() == [srv.url]
        assert all(r.ok for r in good.generate(reqs(["authorised"])))
        good.close()
    monkeypatch.delenv("PIXSCRIBE_TEST_KEY")
    with pytest.raises(BackendUnavailable, match="PIXSCRIBE_TEST_KEY"):
        backend("http://127.0.0.1:1/v1", api_key_env="PIXSCRIBE_TEST_KEY")


def test_401_on_one_endpoint_moves_work_to_the_other(monkeypatch):
    monkeypatch.setenv("PIXSCRIBE_TEST_KEY", "k1")
    with ServerProcess("--mode", "echo", "--api-key", "k2") as locked, ServerProcess("--mode", "echo", "--api-key", "k1") as open_:
        b = backend([locked.url, open_.url], api_key_env="PIXSCRIBE_TEST_KEY", max_retries=0)
        res = b.generate(reqs([f"r {i}" for i in range(20)]))
        assert all(r.ok for r in res)
        eps = b.stats()["endpoints"]
        assert eps[0]["disabled"] and "401" in eps[0]["disabled"] and eps[1]["succeeded"] == 20
        b.close()


def test_structured_output_repaired_retried_stricter_then_failed(echo):
    prompts = [
        "fine",
        "broken [[faults:malformed]]",
        "wrong once [[faults:wrong_schema]]",
        "wrong always [[always:wrong_schema]]",
        "prose always [[always:garbage]]",
    ]
    b = backend(echo.url)
    res = b.generate(reqs(prompts, json_schema=SCHEMA, sampling=Sampling(temperature=0.7)))
    by = dict(zip(prompts, res))
    assert by["fine"].parsed == {"caption": "x", "objects": []} and by["fine"].retries == 0
    fixed = by["broken [[faults:malformed]]"]
    assert fixed.ok and fixed.parsed == {"caption": "x", "objects": []} and fixed.retries == 0
    again = by["wrong once [[faults:wrong_schema]]"]
    assert again.ok and again.parsed == {"caption": "x", "objects": []} and again.retries == 1
    for p in ("wrong always [[always:wrong_schema]]", "prose always [[always:garbage]]"):
        r = by[p]
        assert not r.ok and r.error.startswith("schema: ") and "stricter retry" in r.error and r.parsed is None
    st = echo.stats()
    assert st["structured_fields"] == ["response_format"]
    assert st["chat_requests"] == 1 + 1 + 2 + 2 + 2  # exactly one stricter retry each
    b.close()


@pytest.mark.parametrize("mode,field", [("vllm", "structured_outputs"), ("sglang", "response_format")])
def test_structured_modes_send_server_specific_fields(echo, mode, field):
    b = backend(echo.url, structured=mode)
    (r,) = b.generate(reqs(["json please"], json_schema=SCHEMA))
    assert r.ok and r.parsed == {"caption": "x", "objects": []}
    assert echo.stats()["structured_fields"] == [field]
    b.close()


def test_two_batches_in_flight_from_two_threads(echo):
    from concurrent.futures import ThreadPoolExecutor

    echo.admin(hold=0)  # the server holds every request: both batches must reach it before either ends
    b = backend(echo.url, concurrency=16, request_timeout=120)
    assert b.preferred_batch_size == 64 and b.max_inflight_batches == 2
    with ThreadPoolExecutor(2) as pool:  # as the engine keeps max_inflight_batches in flight
        futs = [pool.submit(b.generate, reqs([f"batch {k} item {i}" for i in range(8)])) for k in range(2)]
        _wait_until("both batches in flight together", lambda: echo.stats()["max_inflight"] == 16)
        echo.admin(hold=None)
        out = [f.result(120) for f in futs]
    assert [r.text for r in out[1]] == [f"echo: batch 1 item {i}" for i in range(8)]
    assert b.usage.requests == 16
    b.close()


def test_from_config_reads_run_config(monkeypatch, echo):
    monkeypatch.setenv("PIXSCRIBE_TEST_KEY", "sk-secret-123")
    cfg = RunConfig(
        backend="openai", vlm=MODEL, base_url=[echo.base], api_key_env="PIXSCRIBE_TEST_KEY", concurrency=5,
        request_timeout=7, max_retries=2, max_pixels=1024,
    )
    b = OpenAIBackend.from_config(cfg)
    assert (b.concurrency, b.request_timeout, b.max_retries, b.max_pixels) == (5, 7.0, 2, 1024)
    assert b.pool.endpoints[0].base == echo.url
    assert b.describe()["base_urls"] == [echo.url] and "sk-secret" not in str(b.describe())
    with pytest.raises(BackendUnavailable, match="--base-url"):
        OpenAIBackend.from_config(RunConfig(backend="openai"))


def test_tiny_mode_real_generation_round_trip(tiny_vlms):
    """The server answers with a real tiny LLaVA; the reply equals generating in-process
    on the same resized JPEG, so images and text survive the HTTP round trip intact."""
    import io

    from PIL import Image

    from pixscribe.backends.openai_backend import encode_image
    from pixscribe.backends.transformers_backend import TransformersBackend

    model_dir = str(tiny_vlms["llava"])
    img = sample_photo("chelsea")
    sampling = Sampling(max_new_tokens=8)
    with ServerProcess("--mode", "tiny", "--model-dir", model_dir) as srv:
        b = OpenAIBackend(model_dir, [srv.url], concurrency=2, max_pixels=50_000, request_timeout=60)
        assert b.check() == [srv.url]
        res = b.generate(
            [
                GenerationRequest.simple("Describe this image.", [img], sampling=sampling),
                GenerationRequest.simple("Rewrite: a cat on a table.", sampling=sampling),
            ]
        )
        assert all(r.ok for r in res), [r.error for r in res]
        assert srv.stats()["images"] == 1 and srv.stats()["max_image_pixels"] <= 50_000
        b.close()
    local = TransformersBackend.from_config(RunConfig(vlm=model_dir, device="cpu", dtype="fp32"))
    sent = Image.open(io.BytesIO(encode_image(img, 50_000, None))).convert("RGB")
    want = local.generate(
        [
            GenerationRequest.simple("Describe this image.", [sent], sampling=sampling),
            GenerationRequest.simple("Rewrite: a cat on a table.", sampling=sampling),
        ]
    )
    assert [r.text for r in res] == [w.text for w in want]
    assert [r.tokens_in for r in res] == [w.tokens_in for w in want]
    assert all(r.tokens_out > 0 for r in res)


def test_an_image_sent_in_several_requests_is_encoded_once(echo):
    """Region prompts put the same full image beside every close-up: it is encoded once, the
    close-ups each once, and every request still carries both images."""
    import gc

    from pixscribe.backends.openai_backend import JpegMemo

    full = sample_photo("astronaut")
    crops = [full.crop((i * 40, 0, i * 40 + 64, 64)) for i in range(6)]
    b = backend(echo.url)
    try:
        res = b.generate([GenerationRequest.simple(f"region {i}", [full, c], id=str(i)) for i, c in enumerate(crops)])
    finally:
        b.close()
    assert all(r.ok and "2 image(s)" in r.text for r in res), [r.text or r.error for r in res]
    assert b.jpegs.encodes == 7 and b.jpegs.hits == 5
    memo = JpegMemo(lambda im: bytes(im.tobytes()[:8]) + bytes([len(memo._items)]))
    a = sample_photo("coffee")
    first = memo(a)
    del a
    gc.collect()
    other = sample_photo("chelsea")  # may reuse the freed object's id: must not get its bytes
    assert memo(other) != first and memo.encodes == 2


def test_bodies_are_built_as_slots_free_up_and_a_bad_one_is_its_rows_error(echo):
    """A body is built once its request holds a slot (a batch of thousands starts sending at once
    and holds only the bodies in flight); a body that cannot be built is that request's input
    error, and its slot goes back (the rest of the batch does not wait for it)."""
    b = backend(echo.url, concurrency=2)
    built: list[tuple[str, int]] = []
    body = b._body

    def counting(req):
        prompt = req.messages[-1]["content"][-1]["text"]
        built.append((prompt, b.limiter.inflight))
        if prompt == "bad":
            raise ValueError("this body cannot be built")
        return body(req)

    b._body = counting
    try:
        res = b.generate(reqs(["a", "bad", "c", "d", "e", "f"]))
    finally:
        b.close()
    assert [r.ok for r in res] == [True, False, True, True, True, True]
    assert res[1].error == "input: ValueError: this body cannot be built"
    assert sorted(p for p, _ in built) == ["a", "bad", "c", "d", "e", "f"]
    assert all(1 <= inflight <= 2 for _, inflight in built), built  # under a held slot, never ahead
    assert b.limiter.inflight == 0


class _ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 (absolute-form request lines, as clients send
    to a proxy), forwarding with httpx and recording each request line and Proxy-Authorization."""

    def __init__(self):
        import http.server
        import threading

        import httpx

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                self.do_POST()

            def do_POST(self):  # noqa: N802
                seen.append((self.path, self.headers.get("Proxy-Authorization")))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                r = httpx.request(self.command, self.path, content=body or None, timeout=10, trust_env=False,
                                  headers={"Content-Type": "application/json"} if body else {})
                self.send_response(r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_env_proxy(monkeypatch):
    """No proxy variable of this machine's environment reaches the test."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)


def test_proxies_come_from_the_environment_with_credentials_and_no_proxy(echo, monkeypatch, no_env_proxy):
    """HTTP_PROXY (credentials in its URL sent as Proxy-Authorization) carries every request;
    NO_PROXY naming the host sends them straight. Read once, when the backend is made."""
    import base64

    proxy = _ForwardProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
        b = backend(echo.url)
        monkeypatch.delenv("HTTP_PROXY")  # read when the backend was made, not per request
        try:
            assert b.check() == [echo.url]  # the check before a run goes the same way
            res = b.generate(reqs(["a", "b", "c"]))
        finally:
            b.close()
        assert all(r.ok for r in res), [r.error for r in res]
        login = "Basic " + base64.b64encode(b"user:p@ss").decode()
        assert proxy.seen == [(echo.url + "/models", login)] + [(echo.url + "/chat/completions", login)] * 3
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        b = backend(echo.url)
        try:
            assert all(r.ok for r in b.generate(reqs(["d", "e"])))
        finally:
            b.close()
        assert len(proxy.seen) == 4  # nothing more went through the proxy
    finally:
        proxy.close()


def test_a_dead_proxy_is_named_as_the_way_to_the_server_without_its_credentials(echo, monkeypatch, no_env_proxy):
    """A refused connect through a proxy says so (the server itself may be fine), and how to go direct."""
    monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{free_port()}")
    b = backend(echo.url, request_timeout=2.0, max_retries=0)
    try:
        with pytest.raises(BackendUnavailable) as info:
            b.check()
        (res,) = b.generate(reqs(["a"]))
    finally:
        b.close()
    for msg in (str(info.value), res.error):
        assert f"{echo.url} via proxy http://127.0.0.1:" in msg and "NO_PROXY=127.0.0.1 goes direct" in msg, msg
        assert "secret" not in msg and "user" not in msg, msg


def test_env_proxy_picks_by_scheme_falls_back_to_all_proxy_and_ignores_socks(monkeypatch, no_env_proxy):
    from pixscribe.backends.http_pool import env_proxy

    assert env_proxy("https://api.example.com/v1") == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")  # no scheme: http://
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:8080")
    assert env_proxy("https://api.example.com/v1") == ("http://proxy.corp:3128", None)
    assert env_proxy("http://gpu-box:8000/v1") == ("http://all.corp:8080", None)
    monkeypatch.setenv("ALL_PROXY", "socks5://s.corp:1080")
    assert env_proxy("http://gpu-box:8000/v1") == (None, None)
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert env_proxy("https://api.example.com/v1") == (None, None)
