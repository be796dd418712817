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

Cloud metadata services (169.254.0.0/16 and every other link-local address, fe80::/10,
AWS's fd00:ec2::254, Alibaba's 100.100.100.200, Oracle's 192.0.0.192, Azure's
168.63.129.16, and host names such as ``metadata.google.internal``) are refused even with
``allow_private=True`` (``--allow-private-urls``): a redirect from an allowed server to
them would hand out the machine's cloud credentials. Only a host named in
``allow_hosts`` (``--allow-url-host``) is fetched from anyway; naming one also allows it
when it is private, without opening every private address.

Deadline
--------
Every fetch attempt has a whole-fetch deadline (``deadline``, by default 4 x ``timeout``)
that covers DNS, connect, TLS, the request, the response headers and the body, across
redirects: every socket read and write of the attempt is given at most the time left, so
a server that trickles its headers a byte at a time is cut off at the deadline.

Error messages name the URL and the reason; they never quote the response (no body, no
reason phrase or header value chosen by the server).

Everything here is thread-safe: one :class:`httpx.Client` (its pool has its own
locks) is shared by all threads, and the fetcher itself keeps no mutable state other
than lock-protected counters and the per-thread deadline of the fetch in progress.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import httpcore
import httpx

from ..record import FetchError

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

__all__ = [
    "ALLOW_PRIVATE_HINT",
    "BlockedAddressError",
    "METADATA_HOSTS",
    "METADATA_NETWORKS",
    "UrlFetcher",
    "blocked_reason",
    "metadata_reason",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_PRIVATE_HINT = "pass --allow-private-urls to fetch from private networks"

ALLOW_HOST_HINT = (
    "cloud metadata addresses are refused even with --allow-private-urls; "
    "name the host with --allow-url-host HOST if it really must be fetched"
)

# NAT64 well-known prefix: 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OCI, DigitalOcean... at 169.254.169.254; ECS 169.254.170.2
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
        "192.0.0.192/32",  # Oracle Cloud (legacy)
        "168.63.129.16/32",  # Azure wire server
    )
)
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (IPv4-mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def metadata_reason(address: str | IPAddress, host: str | None = None) -> str | None:
    """Why ``address`` (or the host name) is a cloud metadata endpoint, or None."""
    if host and host.lower().rstrip(".") in METADATA_HOSTS:
        return f"{host} is a cloud metadata host name"
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "a scoped (link-local) IPv6 address"
    for cand in (ip, _embedded_v4(ip)):
        if cand is not None and any(cand in net for net in METADATA_NETWORKS if net.version == cand.version):
            return "a link-local or cloud metadata address"
    return None


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
        embedded = _embedded_v4(ip)
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


# ---- the whole-fetch deadline ------------------------------------------------------------
_deadline = threading.local()  # .at: monotonic deadline of the fetch this thread is doing
_resolver = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pixscribe-dns")


def _time_left(timeout: float | None) -> float | None:
    """``timeout`` clipped to what is left of this thread's fetch deadline; raises
    ReadTimeout once it has passed (so trickled headers cannot outlive it)."""
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the whole-fetch deadline passed")
    return left if timeout is None else min(timeout, left)


def _resolve_in_time(host: str, port: int) -> list[tuple]:
    left = _time_left(None)
    if left is None:
        return _resolve(host, port)
    fut = _resolver.submit(_resolve, host, port)
    try:
        return fut.result(timeout=left)
    except concurrent.futures.TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host!r} took longer than the whole-fetch deadline") from None


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake gets at most the time left."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore network backend that resolves, checks and pins the connection address,
    within the fetch's deadline."""

    def __init__(self, policy: Callable[[str, IPAddress], str | None], hint: Callable[[str], str]):
        super().__init__()
        self._policy = policy
        self._hint = hint

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[override]
        reason = self._policy(host, None)  # by name first: a metadata host name is refused unresolved
        if reason:
            raise BlockedAddressError(f"refusing to connect to {host} ({reason}); {self._hint(reason)}")
        try:
            infos = _resolve_in_time(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
        allowed: list[str] = []
        refused: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip_text = sockaddr[0]
            ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
            reason = self._policy(host, ip)
            if reason:
                refused.append(f"{ip_text} is {reason}")
            elif ip_text not in allowed:
                allowed.append(ip_text)
        if not allowed:
            shown = "; ".join(dict.fromkeys(refused)) or "no addresses"
            raise BlockedAddressError(f"refusing to connect to {host} ({shown}); {self._hint(shown)}")
        last: Exception | None = None
        for ip_text in allowed:  # connect to exactly the address that was checked
            try:
                stream = super().connect_tcp(ip_text, port, _time_left(timeout), local_address, socket_options)
                return _DeadlineStream(stream)
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

    ``timeout`` applies to connecting and to each read; ``deadline`` (default
    ``4 * timeout``) bounds each whole attempt: DNS, connect, TLS, headers, body and
    redirects. ``max_bytes`` caps the (decoded) body: a larger ``Content-Length`` is
    refused before reading, and a body without one is aborted as soon as it grows past the
    cap. Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with
    exponential backoff (``backoff * 2**attempt`` seconds, or ``Retry-After`` when given,
    capped at 30 s). ``address_policy`` replaces :func:`blocked_reason` (it returns a
    reason to refuse an address, or None); it is ignored when ``allow_private=True``.
    Cloud metadata addresses (:func:`metadata_reason`) are refused whatever the policy,
    unless the host is in ``allow_hosts`` (host names, IP addresses or networks), which are
    fetched from even when private.
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
        deadline: float | None = None,
        allow_hosts: list[str] | tuple[str, ...] = (),
    ):
        if timeout <= 0:
            raise ValueError("UrlFetcher: timeout must be > 0 seconds")
        if max_bytes < 1:
            raise ValueError("UrlFetcher: max_bytes must be >= 1")
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else 4 * self.timeout
        self.max_bytes = int(max_bytes)
        self.allow_private = bool(allow_private)
        self.user_agent = user_agent
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self._address_policy = (lambda ip: None) if allow_private else (address_policy or blocked_reason)
        self._allowed_names, self._allowed_nets = _parse_allowed(allow_hosts)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.Client(
            transport=_GuardedTransport(_GuardedBackend(self._policy, _hint_for), limits),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=True,
            max_redirects=max_redirects,
            headers={"User-Agent": user_agent, "Accept": "image/*,*/*;q=0.8"},
            trust_env=False,
        )
        self._lock = threading.Lock()
        self.stats = {"fetched": 0, "bytes": 0, "errors": 0, "retries": 0}
        self._closed = False

    @classmethod
    def from_config(cls, config: "RunConfig") -> "UrlFetcher":
        """The fetcher a run uses: ``--url-timeout``, ``--url-max-bytes``,
        ``--allow-private-urls`` and ``--allow-url-host`` from a RunConfig."""
        return cls(
            timeout=config.url_timeout,
            max_bytes=config.url_max_bytes,
            allow_private=config.allow_private_urls,
            allow_hosts=list(config.allow_url_hosts),
        )

    def _policy(self, host: str, ip: IPAddress | None) -> str | None:
        """Why a connection to ``host`` at ``ip`` is refused (``ip`` None: by name only)."""
        name = host.lower().rstrip(".")
        if ip is None:  # before resolving: refuse metadata names, and IP literals as they are
            try:
                ip = ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
            except ValueError:
                return None if name in self._allowed_names else metadata_reason("", host)
        if name in self._allowed_names or any(ip in n for n in self._allowed_nets if n.version == ip.version):
            return None
        return metadata_reason(ip, host) or self._address_policy(ip)

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
        """One attempt (redirects included) within the whole-fetch deadline."""
        _deadline.at = time.monotonic() + self.deadline
        try:
            with self._client.stream("GET", url) as resp:
                return self._read(url, resp)
        except BlockedAddressError as exc:
            raise self._fail(url, str(exc)) from None
        except httpx.TooManyRedirects:
            raise self._fail(url, "too many redirects") from None
        except (httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            if time.monotonic() >= _deadline.at:
                raise _Retryable(
                    f"took longer than the whole-fetch deadline of {self.deadline:g} s "
                    "(4 x --url-timeout: connect, headers and body)"
                ) from None
            raise _Retryable(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:  # the OS's words (refused, unreachable), not the server's
            raise _Retryable(f"cannot connect ({exc})") from None
        except _RETRY_EXC as exc:
            raise _Retryable(f"the connection failed ({type(exc).__name__})") from None
        except httpx.UnsupportedProtocol:
            raise self._fail(url, "unsupported protocol in a redirect (only http and https are fetched)") from None
        except httpx.HTTPError as exc:
            raise self._fail(url, f"the request failed ({type(exc).__name__})") from None
        finally:
            _deadline.at = None

    def _read(self, url: str, resp: httpx.Response) -> bytes:
        status = resp.status_code
        if status in _RETRY_STATUS:
            raise _Retryable(_status_text(status), _retry_after(resp))
        if status >= 400 or status < 200:
            raise self._fail(url, _status_text(status))
        if status >= 300:
            raise self._fail(url, f"HTTP {status} redirect without a usable Location")
        where = _where(url, str(resp.url))
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
                    f"response grew past the limit of {self.max_bytes} bytes{where}; raise --url-max-bytes to allow it",
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _parse_allowed(hosts: list[str] | tuple[str, ...]) -> tuple[set[str], list[Any]]:
    names: set[str] = set()
    nets: list[Any] = []
    for h in hosts:
        h = str(h).strip().strip("[]")
        if not h:
            continue
        try:
            nets.append(ipaddress.ip_network(h, strict=False))
        except ValueError:
            names.add(h.lower().rstrip("."))
    return names, nets


def _hint_for(reason: str) -> str:
    return ALLOW_HOST_HINT if "metadata" in reason or "scoped" in reason else ALLOW_PRIVATE_HINT


def _status_text(status: int) -> str:
    """``HTTP 404 Not Found``, with the standard phrase (never the server's own)."""
    return f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".strip()


def _where(url: str, final: str) -> str:
    """Where a redirect ended (scheme and host only: the Location is the server's text)."""
    if final == url:
        return ""
    parts = urlsplit(final)
    return f" (redirected to {parts.scheme}://{parts.netloc}/...)"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
