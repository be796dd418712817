"""Fetch image bytes over HTTP(S) with an address guard, a size cap, timeouts and retries.

Address guard and DNS rebinding
-------------------------------
The guard does not look at the URL once and then let the HTTP library resolve the
name again (an attacker's DNS server could answer with a public address the first
time and ``127.0.0.1`` the second). Instead :class:`UrlFetcher` plugs a network
backend into httpx's connection pool (:class:`_GuardedBackend`): every TCP connection
the client opens -- the first request, every redirect hop, every retry -- resolves
the host itself with :func:`socket.getaddrinfo`, checks each resolved address with
:func:`blocked_reason`, and then connects to *that checked IP address*. The URL is
left untouched, so the ``Host`` header and the TLS SNI / certificate check still use
the original host name. Environment proxies are ignored (``trust_env=False``), since
a proxy would make the connection go somewhere other than the checked address.

Everything here is thread-safe: one :class:`httpx.Client` (its pool has its own
locks) is shared by all threads, and the fetcher itself keeps no mutable state other
than lock-protected counters.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

import httpcore
import httpx

from ..record import FetchError

__all__ = ["UrlFetcher", "blocked_reason", "BlockedAddressError", "ALLOW_PRIVATE_HINT"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_PRIVATE_HINT = "pass --allow-private-urls (UrlFetcher(allow_private=True)) to fetch from private networks"

# NAT64 well-known prefix: 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why ``address`` must not be fetched from by default, or None if it is public.

    Refuses private, loopback, link-local, multicast, reserved, unspecified and any
    other not-globally-routable address (e.g. 100.64.0.0/10 shared space). IPv6
    addresses that embed an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64, 6to4,
    Teredo) are judged by the embedded IPv4 address as well.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (link-local) IPv6 address"
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.sixtofour is not None:
            embedded = ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            inner = blocked_reason(embedded)
            if inner:
                return f"{inner} (embedded in {ip})"
            if ip.ipv4_mapped is not None:
                return None  # ::ffff:a.b.c.d connects to a.b.c.d, which is public
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


class BlockedAddressError(Exception):
    """Raised from inside the transport when a connection target is refused."""


def _resolve(host: str, port: int) -> list[tuple]:
    """The one DNS lookup per connection (a module function so tests can stand in a resolver)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore network backend that resolves, checks and pins the connection address."""

    def __init__(self, policy: Callable[[IPAddress], str | None]):
        super().__init__()
        self._policy = policy

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[override]
        try:
            infos = _resolve(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
        allowed: list[str] = []
        refused: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip_text = sockaddr[0]
            ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
            reason = self._policy(ip)
            if reason:
                refused.append(f"{ip_text} is {reason}")
            elif ip_text not in allowed:
                allowed.append(ip_text)
        if not allowed:
            shown = "; ".join(dict.fromkeys(refused)) or "no addresses"
            raise BlockedAddressError(f"refusing to connect to {host} ({shown}); {ALLOW_PRIVATE_HINT}")
        last: Exception | None = None
        for ip_text in allowed:  # connect to exactly the address that was checked
            try:
                return super().connect_tcp(ip_text, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool rebuilt around :class:`_GuardedBackend`."""

    def __init__(self, backend: _GuardedBackend, limits: httpx.Limits):
        # one SSL context (loading the CA bundle takes ~20 ms), given to httpx and to our pool
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        old = self._pool
        # Same pool httpx builds (see httpx/_transports/default.py), plus our backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )
        old.close()


_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_EXC = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class UrlFetcher:
    """Thread-safe HTTP(S) fetcher used for URL inputs and ``url`` columns.

    ``timeout`` applies to connecting and to each read; the whole fetch (with
    redirects, not retries) is also bounded by ``4 * timeout``. ``max_bytes`` caps the
    (decoded) body: a larger ``Content-Length`` is refused before reading, and a body
    without one is aborted as soon as it grows past the cap. Connection errors,
    timeouts, 429 and 5xx are retried ``retries`` times with exponential backoff
    (``backoff * 2**attempt`` seconds, or ``Retry-After`` when given, capped at 30 s).
    ``address_policy`` replaces :func:`blocked_reason` (it returns a reason to refuse
    an address, or None); it is ignored when ``allow_private=True``.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_bytes: int = 50 * 1024 * 1024,
        allow_private: bool = False,
        user_agent: str = "pixscribe/0.1",
        retries: int = 2,
        backoff: float = 0.5,
        max_redirects: int = 5,
        max_connections: int = 64,
        address_policy: Callable[[IPAddress], str | None] | None = None,
    ):
        if timeout <= 0:
            raise ValueError("UrlFetcher: timeout must be > 0 seconds")
        if max_bytes < 1:
            raise ValueError("UrlFetcher: max_bytes must be >= 1")
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self.allow_private = bool(allow_private)
        self.user_agent = user_agent
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        policy: Callable[[IPAddress], str | None] = (
            (lambda ip: None) if allow_private else (address_policy or blocked_reason)
        )
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.Client(
            transport=_GuardedTransport(_GuardedBackend(policy), limits),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=True,
            max_redirects=max_redirects,
            headers={"User-Agent": user_agent, "Accept": "image/*,*/*;q=0.8"},
            trust_env=False,
        )
        self._lock = threading.Lock()
        self.stats = {"fetched": 0, "bytes": 0, "errors": 0, "retries": 0}
        self._closed = False

    # -- public --------------------------------------------------------------------
    def fetch(self, url: str) -> bytes:
        """The body of ``url`` as bytes; raises :class:`FetchError` ``"<url>: <reason>"``."""
        try:
            data = self._fetch(url)
        except FetchError:
            self._count("errors")
            raise
        self._count("fetched")
        self._count("bytes", len(data))
        return data

    def close(self) -> None:
        self._closed = True
        self._client.close()

    def __enter__(self) -> "UrlFetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _fail(self, url: str, reason: str) -> FetchError:
        return FetchError(f"{url}: {reason}")

    def _fetch(self, url: str) -> bytes:
        if self._closed:
            raise self._fail(url, "the fetcher is closed")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise self._fail(url, f"unsupported URL scheme {parts.scheme or '(none)'!r}; only http and https are fetched")
        if not parts.hostname:
            raise self._fail(url, "the URL has no host")
        attempt = 0
        while True:
            try:
                return self._once(url)
            except _Retryable as exc:
                if attempt >= self.retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise self._fail(url, f"{exc}{suffix}") from None
                delay = exc.retry_after if exc.retry_after is not None else self.backoff * (2**attempt)
                self._count("retries")
                time.sleep(min(max(delay, 0.0), 30.0))
                attempt += 1

    def _once(self, url: str) -> bytes:
        deadline = time.monotonic() + 4 * self.timeout
        try:
            with self._client.stream("GET", url) as resp:
                if resp.status_code in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {resp.status_code} {resp.reason_phrase}".strip(), _retry_after(resp))
                if resp.status_code >= 400 or resp.status_code < 200:
                    raise self._fail(url, f"HTTP {resp.status_code} {resp.reason_phrase}".strip())
                if resp.status_code >= 300:
                    raise self._fail(url, f"HTTP {resp.status_code} redirect without a usable Location")
                final = str(resp.url)
                where = "" if final == url else f" (redirected to {final})"
                length = resp.headers.get("content-length")
                if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
                    raise self._fail(
                        url,
                        f"response is {int(length)} bytes, over the limit of {self.max_bytes} bytes{where}; "
                        "raise --url-max-bytes to allow it",
                    )
                chunks: list[bytes] = []
                total = 0
                for chunk in resp.iter_bytes():
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise self._fail(
                            url,
                            f"response grew past the limit of {self.max_bytes} bytes{where}; "
                            "raise --url-max-bytes to allow it",
                        )
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise _Retryable(f"download took longer than {4 * self.timeout:g} s")
                return b"".join(chunks)
        except BlockedAddressError as exc:
            raise self._fail(url, str(exc)) from None
        except httpx.TooManyRedirects:
            raise self._fail(url, "too many redirects") from None
        except (httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            raise _Retryable(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from None
        except _RETRY_EXC as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except httpx.UnsupportedProtocol as exc:
            raise self._fail(url, f"unsupported protocol in a redirect: {exc}") from None
        except httpx.HTTPError as exc:
            raise self._fail(url, f"{type(exc).__name__}: {exc}") from None


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
