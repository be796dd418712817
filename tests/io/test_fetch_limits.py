"""UrlFetcher's bounds against real loopback servers: a whole-fetch deadline that covers
trickled headers, cloud metadata addresses refused even with allow_private (redirects
included) unless named with allow_hosts, and error messages that quote nothing the
server chose."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import pixscribe.io.fetch as fetch_mod
from pixscribe.io.fetch import UrlFetcher, metadata_reason
from pixscribe.record import FetchError

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


class _Trickler:
    """A raw TCP server that answers every connection with a status line and then one
    header byte every ``every`` seconds, never finishing the headers."""

    def __init__(self, every: float = 0.05):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.every = every
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.stop.is_set():
                conn.sendall(b"a")
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickler():
    t = _Trickler()
    yield t
    t.close()


def test_trickled_headers_end_at_the_whole_fetch_deadline(trickler):
    with UrlFetcher(allow_private=True, timeout=5.0, deadline=1.0, retries=0) as f:
        t = time.perf_counter()
        with pytest.raises(FetchError, match=r"whole-fetch deadline of 1 s"):
            f.fetch(f"http://127.0.0.1:{trickler.port}/x.jpg")
        elapsed = time.perf_counter() - t
    assert 0.9 <= elapsed < 30  # each byte arrives well within the 5 s read timeout: only the deadline ends it


def test_default_deadline_is_four_url_timeouts_and_retries_are_bounded(trickler):
    with UrlFetcher(allow_private=True, timeout=0.5, retries=1, backoff=0.01) as f:
        assert f.deadline == 2.0
        t = time.perf_counter()
        with pytest.raises(FetchError, match=r"deadline of 2 s.*\(after 2 attempts\)"):
            f.fetch(f"http://127.0.0.1:{trickler.port}/x.jpg")  # a byte every 0.05 s: never the read timeout
        assert time.perf_counter() - t < 60  # two deadlines, not forever


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        _Handler.hits.append(self.path)
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[4:].replace("__", "/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/secret-404":
            body = b"SECRET-BODY-TEXT"
            self.send_response(404, "SECRET-REASON-PHRASE")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(JPEG)))
        self.end_headers()
        self.wfile.write(JPEG)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "addr", ["169.254.169.254", "169.254.170.2", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254",
             "100.100.100.200", "168.63.129.16"]
)
def test_metadata_addresses_are_recognised(addr):
    assert metadata_reason(addr) is not None


def test_metadata_hosts_and_addresses_refused_even_with_allow_private(server, monkeypatch):
    looked_up: list[str] = []
    real = fetch_mod._resolve

    def resolve(host, port):
        looked_up.append(host)
        return real(host, port)

    monkeypatch.setattr(fetch_mod, "_resolve", resolve)
    port = server.rsplit(":", 1)[1]
    with UrlFetcher(allow_private=True, retries=0) as f:
        assert f.fetch(f"{server}/img.jpg") == JPEG  # private is allowed ...
        for target in ("http:____169.254.169.254__latest__meta-data", "http:____[fd00:ec2::254]__x",
                       "http:____[::ffff:169.254.169.254]__x", f"http:____metadata.google.internal:{port}__x"):
            n = len(_Handler.hits)
            with pytest.raises(FetchError, match=r"refusing to connect.*metadata.*--allow-url-host"):
                f.fetch(f"{server}/to/{target}")  # ... but not a redirect to cloud metadata
            assert len(_Handler.hits) == n + 1  # only the redirecting request reached a server
        assert "metadata.google.internal" not in looked_up  # refused by name, never resolved


def test_allow_url_host_names_one_host(server, monkeypatch):
    port = server.rsplit(":", 1)[1]
    # without --allow-private-urls, naming the host allows just that one
    with UrlFetcher(allow_hosts=["127.0.0.1"], retries=0) as f:
        assert f.fetch(f"{server}/img.jpg") == JPEG
        with pytest.raises(FetchError, match="refusing to connect to 127.0.0.2"):
            f.fetch(f"http://127.0.0.2:{port}/img.jpg")
    # a metadata host name, named explicitly, is fetched from (here it resolves to loopback)
    monkeypatch.setattr(fetch_mod, "_resolve", lambda host, p: [(2, 1, 6, "", ("127.0.0.1", p))])
    with UrlFetcher(allow_private=True, retries=0) as f:
        with pytest.raises(FetchError, match="metadata"):
            f.fetch(f"http://metadata.google.internal:{port}/img.jpg")
    with UrlFetcher(allow_private=True, allow_hosts=["metadata.google.internal"], retries=0) as f:
        assert f.fetch(f"http://metadata.google.internal:{port}/img.jpg") == JPEG


def test_errors_never_quote_what_the_server_sent(server):
    with UrlFetcher(allow_private=True, retries=0) as f:
        with pytest.raises(FetchError) as ei:
            f.fetch(f"{server}/secret-404")
        assert str(ei.value) == f"{server}/secret-404: HTTP 404 Not Found"
        with pytest.raises(FetchError) as ei:
            f.fetch(f"{server}/to/http:____169.254.169.254__SECRET-PATH")
        assert "SECRET" not in str(ei.value).split(": ", 1)[1]
