"""UrlFetcher against a real loopback HTTP server (http.server in a thread on 127.0.0.1)."""

from __future__ import annotations

import io
import ipaddress
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixscribe.io import plan_shards
from pixscribe.io.fetch import UrlFetcher, blocked_reason
from pixscribe.record import FetchError, format_error
from pixscribe.testing import sample_photo


def _jpeg(name: str) -> bytes:
    im = sample_photo(name)
    im.thumbnail((160, 160))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body in one write (no Nagle/delayed-ACK stalls)
    images: dict[str, bytes] = {}
    hits: dict[str, int] = {}
    hosts: list[str] = []

    def log_message(self, *a):  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", headers: dict | None = None, length=True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        _Handler.hosts.append(self.headers.get("Host", ""))
        if path.startswith("/img/"):
            name = path[5:].rsplit(".", 1)[0]
            if name in self.images:
                return self._send(200, self.images[name])
            return self._send(404, b"not found", "text/plain")
        if path == "/big":  # honest Content-Length over the cap
            return self._send(200, b"x" * 20000)
        if path == "/big-stream":  # no Content-Length: the cap must cut the stream
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
            self.close_connection = True
            return
        if path == "/slow":
            time.sleep(30)  # far past the client's timeout, however loaded the machine
            return self._send(200, b"late")
        if path == "/flaky":  # 503 twice, then the image
            if _Handler.hits[path] <= 2:
                return self._send(503, b"busy", "text/plain")
            return self._send(200, self.images["chelsea"])
        if path == "/always-500":
            return self._send(500, b"boom", "text/plain")
        if path.startswith("/redirect-to/"):
            target = path[len("/redirect-to/"):]
            return self._send(302, b"", headers={"Location": target.replace("__", "/")})
        return self._send(404, b"no route", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients hang up on purpose (size cap, timeout)
        pass


@pytest.fixture(scope="module")
def server():
    _Handler.images = {"astronaut": _jpeg("astronaut"), "chelsea": _jpeg("chelsea"), "coffee": _jpeg("coffee")}
    httpd = _Server(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fetcher():
    f = UrlFetcher(allow_private=True, timeout=5.0, retries=0, backoff=0.05)
    yield f
    f.close()


# ---- the address guard (classification only: no traffic) ----------------------------------
@pytest.mark.parametrize(
    "addr, word",
    [
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a globally routable"),
    ],
)
def test_guard_refuses_non_public(addr, word):
    reason = blocked_reason(addr)
    assert reason is not None and word in reason


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "172.32.0.1"])
def test_guard_allows_public(addr):
    assert blocked_reason(addr) is None
    assert blocked_reason(ipaddress.ip_address(addr)) is None


# ---- fetching from the loopback server ---------------------------------------------------------
def test_loopback_refused_by_default_with_hint(server):
    base, h = server
    before = h.hits.get("/img/astronaut.jpg", 0)
    with UrlFetcher(retries=0) as f:
        with pytest.raises(FetchError) as ei:
            f.fetch(f"{base}/img/astronaut.jpg")
    msg = format_error(ei.value)
    assert msg.startswith(f"fetch: {base}/img/astronaut.jpg: refusing to connect")
    assert "loopback" in msg and "--allow-private-urls" in msg
    assert "UrlFetcher(" not in msg  # users read the flag's name, not the Python API's
    assert h.hits.get("/img/astronaut.jpg", 0) == before  # never connected


def test_allowed_with_allow_private_bytes_match(server, fetcher):
    base, h = server
    assert fetcher.fetch(f"{base}/img/astronaut.jpg") == h.images["astronaut"]
    assert h.hosts[-1] == base.split("//")[1]  # Host header is the URL's host
    # many threads share one fetcher
    urls = [f"{base}/img/{n}.jpg" for n in ("astronaut", "chelsea", "coffee")] * 8
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(fetcher.fetch, urls))
    assert got == [h.images[u.rsplit("/", 1)[1][:-4]] for u in urls]
    assert fetcher.stats["fetched"] == 1 + len(urls) and fetcher.stats["errors"] == 0


def test_size_cap_content_length_and_streamed(server):
    base, _ = server
    with UrlFetcher(allow_private=True, max_bytes=10000, retries=0) as f:
        with pytest.raises(FetchError, match=r"/big: response is 20000 bytes, over the limit of 10000 bytes.*--url-max-bytes"):
            f.fetch(f"{base}/big")
        with pytest.raises(FetchError, match=r"/big-stream: response grew past the limit of 10000 bytes"):
            f.fetch(f"{base}/big-stream")
        assert f.fetch(f"{base}/img/coffee.jpg")[:2] == b"\xff\xd8"  # under the cap: fine


def test_timeout_on_slow_handler(server):
    base, _ = server
    with UrlFetcher(allow_private=True, timeout=0.3, retries=0) as f:
        t0 = time.perf_counter()
        with pytest.raises(FetchError, match=r"/slow: timed out after 0.3 s"):
            f.fetch(f"{base}/slow")
        assert time.perf_counter() - t0 < 15  # the 0.3 s timeout, not the 30 s answer


def test_404_reports_status(server, fetcher):
    base, _ = server
    with pytest.raises(FetchError) as ei:
        fetcher.fetch(f"{base}/img/nothing.jpg")
    assert format_error(ei.value) == f"fetch: {base}/img/nothing.jpg: HTTP 404 Not Found"


def test_retries_on_5xx_then_success_and_give_up(server):
    base, h = server
    h.hits.pop("/flaky", None)
    with UrlFetcher(allow_private=True, retries=2, backoff=0.01) as f:
        assert f.fetch(f"{base}/flaky") == h.images["chelsea"]
        assert h.hits["/flaky"] == 3 and f.stats["retries"] == 2
        with pytest.raises(FetchError, match=r"HTTP 500 Internal Server Error \(after 3 attempts\)"):
            f.fetch(f"{base}/always-500")
    with UrlFetcher(allow_private=True, retries=0) as f:
        n = h.hits.get("/always-500", 0)
        with pytest.raises(FetchError, match="HTTP 500"):
            f.fetch(f"{base}/always-500")
        assert h.hits["/always-500"] == n + 1


def test_redirects_followed_and_rechecked(server):
    base, h = server
    port = base.rsplit(":", 1)[1]
    with UrlFetcher(allow_private=True, retries=0) as f:
        assert f.fetch(f"{base}/redirect-to/__img__coffee.jpg") == h.images["coffee"]
    # Treat 127.0.0.1 as if it were public, keep the default guard for everything else:
    # redirects to other private addresses are refused before any connection is made.
    only_this = lambda ip: None if str(ip) == "127.0.0.1" else blocked_reason(ip)  # noqa: E731
    with UrlFetcher(retries=0, address_policy=only_this) as f:
        assert f.fetch(f"{base}/img/chelsea.jpg") == h.images["chelsea"]
        for target, word in [
            (f"http:____127.0.0.2:{port}__img__coffee.jpg", "loopback"),
            ("http:____10.20.30.40__x.jpg", "private"),
            ("http:____169.254.169.254__latest__meta-data", "link-local"),
            ("http:____[::1]:9__x", "loopback"),
        ]:
            url = f"{base}/redirect-to/{target}"
            with pytest.raises(FetchError, match=rf"refusing to connect to .*{word}.*--allow-private-urls"):
                f.fetch(url)
        with pytest.raises(FetchError, match="unsupported protocol"):
            f.fetch(f"{base}/redirect-to/file:______etc__passwd")


def test_bad_urls():
    with UrlFetcher() as f:
        with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
            f.fetch("ftp://example.com/x.jpg")
        with pytest.raises(FetchError, match="has no host"):
            f.fetch("http:///x.jpg")


# ---- readers + fetcher ---------------------------------------------------------------------------
def test_tables_with_url_column_read_through_fetcher(server, tmp_path):
    base, h = server
    names = ["astronaut", "chelsea", "coffee"]
    urls = [f"{base}/img/{n}.jpg" for n in names] + [f"{base}/img/missing.jpg"]
    pq.write_table(pa.table({"url": urls, "caption": names + ["gone"]}), tmp_path / "u.parquet")
    (tmp_path / "u.jsonl").write_text("\n".join(json.dumps({"url": u, "key": i}) for i, u in enumerate(urls)) + "\n")
    (tmp_path / "list.txt").write_text(f"{urls[0]}\n{urls[1]}\n")
    with UrlFetcher(allow_private=True, retries=0) as f:
        shards = plan_shards([str(tmp_path / "u.parquet"), str(tmp_path / "u.jsonl"), str(tmp_path / "list.txt"), urls[2]],
                             shard_size=10, fetcher=f)
        assert [s.count for s in shards] == [3, 4, 4]  # loose URLs (list + direct) first
        recs = [r for s in shards for r in s.records()]
        loose, par, jsl = recs[:3], recs[3:7], recs[7:]
        assert [r.source for r in loose] == [urls[0], urls[1], urls[2]]
        assert [r.load() for r in loose] == [h.images[n] for n in names]
        assert [r.source for r in par] == urls and [r.columns["caption"] for r in par] == names + ["gone"]
        assert [r.load() for r in par[:3]] == [h.images[n] for n in names]
        assert [r.key for r in jsl] == ["0", "1", "2", "3"]
        assert jsl[1].load() == h.images["chelsea"]
        with pytest.raises(FetchError, match="missing.jpg: HTTP 404"):
            jsl[3].load()
    # without a fetcher the default one refuses the loopback server
    (rec,) = [r for s in plan_shards([urls[0]]) for r in s.records()]
    with pytest.raises(FetchError, match="--allow-private-urls"):
        rec.load()


def test_connects_to_the_checked_address_with_original_host(server, monkeypatch):
    """DNS-rebinding defence: the address the guard checked is the one connected to,
    and the request still carries the URL's own host name."""
    import pixscribe.io.fetch as fetch_mod

    base, h = server
    port = int(base.rsplit(":", 1)[1])
    answers = {"images.example": "127.0.0.1", "evil.example": "10.9.8.7"}
    lookups: list[str] = []

    def fake_resolve(host, p):
        lookups.append(host)
        return [(2, 1, 6, "", (answers.get(host, host), p))]  # IP literals resolve to themselves

    monkeypatch.setattr(fetch_mod, "_resolve", fake_resolve)
    seen: list[str] = []

    def policy(ip):
        seen.append(str(ip))
        return None if str(ip) == "127.0.0.1" else blocked_reason(ip)

    with UrlFetcher(retries=0, address_policy=policy) as f:
        assert f.fetch(f"http://images.example:{port}/img/coffee.jpg") == h.images["coffee"]
        assert h.hosts[-1] == f"images.example:{port}"
        assert lookups == ["images.example"] and seen == ["127.0.0.1"]
        with pytest.raises(FetchError, match=r"refusing to connect to evil.example \(10.9.8.7 is a private address\)"):
            f.fetch(f"http://evil.example:{port}/img/coffee.jpg")
        # a redirect to a name is resolved and checked again at connect time
        with pytest.raises(FetchError, match="evil.example"):
            f.fetch(f"{base}/redirect-to/http:____evil.example:{port}__img__coffee.jpg")
