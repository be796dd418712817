"""The two pieces of state the HTTP backend shares between its requests: how many may be in
flight (:class:`AdaptiveLimiter`) and which server to send to (:class:`EndpointPool`).

Both live on the backend's event loop and are touched by its coroutines only.

Down endpoints and waiting
--------------------------
An endpoint that cannot be reached (connection refused, connect timeout) is *down*: it is
skipped, and probed by a single request after a pause that starts at ``PROBE_FIRST`` and
doubles up to ``cooldown`` (5 s by default), so a server that comes back is found within
seconds. Requests that find every endpoint down wait on :meth:`EndpointPool.wait`, which
returns as soon as an endpoint answers again (or at the next probe time). ``down_since``
records when each endpoint's current outage began; :meth:`EndpointPool.all_down_for` says
how long *every* endpoint has been down, which the backend compares with
``--endpoint-down-timeout`` to stop the run.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

PROBE_FIRST = 0.25  # seconds before the first probe of an endpoint that just went down


class AdaptiveLimiter:
    """AIMD limit on requests in flight (used on the backend's event loop only).

    ``samples`` holds ``(t, inflight, limit)`` after every change, for tests and plots.
    """

    def __init__(self, max_limit: int, initial: int | None = None, max_samples: int = 200_000):
        if max_limit < 1:
            raise ValueError("concurrency must be >= 1")
        self.max_limit = int(max_limit)
        self.limit = float(min(self.max_limit, initial or self.max_limit))
        self.inflight = 0
        self.max_inflight = 0
        self.epoch = 0  # bumped on every decrease: one decrease per round trip
        self.streak = 0
        self.decreases = 0
        self.increases = 0
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=max_samples)
        self._waiters: deque[asyncio.Future] = deque()  # FIFO; woken one slot at a time
        self._t0 = time.monotonic()
        self._sample()

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def _sample(self) -> None:
        self.samples.append((round(time.monotonic() - self._t0, 4), self.inflight, self.current))

    def _take(self) -> None:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self._sample()

    def _wake(self) -> None:
        # hand free slots to the oldest waiters (no thundering herd: O(1) per slot)
        while self._waiters and self.inflight < self.current:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._take()
            fut.set_result(None)

    async def acquire(self) -> int:
        """Wait for a slot; returns the decrease epoch the request was sent in."""
        if self.inflight < self.current and not self._waiters:
            self._take()
            return self.epoch
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just before the cancel
            raise
        return self.epoch

    def release(self) -> None:
        self.inflight -= 1
        self._sample()
        self._wake()

    def on_success(self) -> None:
        self.streak += 1
        if self.streak >= self.current and self.limit < self.max_limit:
            self.limit = min(float(self.max_limit), self.limit + 1.0)
            self.streak = 0
            self.increases += 1
            self._sample()
            self._wake()

    def on_overload(self, epoch: int) -> bool:
        """Halve the limit, once per round trip (answers to requests sent before the last
        decrease do not decrease it again). Returns whether it decreased."""
        self.streak = 0
        if epoch != self.epoch:
            return False
        self.limit = max(1.0, math.floor(self.limit / 2))
        self.epoch += 1
        self.decreases += 1
        self._sample()
        return True


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is kept as given."""
    u = url.strip().rstrip("/")
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--base-url {url!r}: expected http(s)://host[:port][/v1]")
    if parts.path in ("", "/"):
        u += "/v1"
    return u


def env_proxy(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` /
    ``ALL_PROXY``, lower case too, unless ``NO_PROXY`` covers the host) without its
    credentials, and those credentials as a ``Proxy-Authorization`` header.

    Read once per endpoint rather than per request: aiohttp's ``trust_env`` looks the proxy and
    ~/.netrc up in a worker thread for every request, two thread hops that were a third of the
    client's event-loop time at 128 requests in flight (``python bench/p3_http.py``). Only
    http(s) proxies are supported, as by aiohttp; another scheme (socks) is ignored."""
    import urllib.request
    from urllib.parse import unquote, urlunsplit

    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None, None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None, None
    if "://" not in proxy:
        proxy = "http://" + proxy
    p = urlsplit(proxy)
    if p.scheme not in ("http", "https"):
        return None, None
    headers = None
    if p.username is not None:
        login = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        headers = {"Proxy-Authorization": "Basic " + base64.b64encode(login).decode("ascii")}
    host = p.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{p.port}" if p.port else "")
    return urlunsplit((p.scheme, netloc, p.path, "", "")), headers


@dataclass
class Endpoint:
    base: str
    cooldown: float = 5.0  # the longest pause between probes of a down endpoint
    failures: int = 0  # consecutive
    down_count: int = 0  # consecutive failed connects
    down_since: float | None = None  # monotonic time the current outage began
    down_until: float = 0.0  # no request before this (a probe is due then)
    paused_until: float = 0.0  # Retry-After
    last_problem: str = ""
    disabled: str | None = None
    current: float = 0.0  # smooth weighted round-robin state
    sent: int = 0
    succeeded: int = 0
    proxy: str | None = None  # from the environment, read once (see env_proxy)
    proxy_headers: dict[str, str] | None = None  # Proxy-Authorization from the proxy URL's credentials

    @property
    def route(self) -> str:
        """The endpoint for messages, with the proxy it is reached through (a refused connect
        may be the proxy's)."""
        if self.proxy is None:
            return self.base
        host = urlsplit(self.base).hostname
        return f"{self.base} via proxy {self.proxy} (from the environment; NO_PROXY={host} goes direct)"

    @property
    def chat_url(self) -> str:
        return self.base + "/chat/completions"

    @property
    def models_url(self) -> str:
        return self.base + "/models"

    @property
    def weight(self) -> float:
        return 1.0 / (1.0 + self.failures)

    def ready_at(self) -> float:
        return max(self.down_until, self.paused_until)

    def probe_pause(self) -> float:
        """Seconds from a failed connect to the next probe: PROBE_FIRST, doubling, at most ``cooldown``."""
        return min(max(self.cooldown, PROBE_FIRST), PROBE_FIRST * 2 ** max(0, self.down_count - 1))

    def on_success(self) -> bool:
        """Record an answer; returns whether the endpoint was down until now."""
        was_down = self.down_since is not None
        self.failures = 0
        self.down_count = 0
        self.down_since = None
        self.down_until = 0.0
        self.succeeded += 1
        return was_down

    def on_failure(self) -> None:
        self.failures += 1

    def on_unreachable(self, now: float, problem: str) -> None:
        self.failures += 1
        self.down_count += 1
        if self.down_since is None:
            self.down_since = now
        self.last_problem = problem
        self.down_until = now + self.probe_pause()


class AllEndpointsDisabled(Exception):
    pass


class EndpointPool:
    def __init__(self, urls: list[str], cooldown: float = 5.0):
        if not urls:
            raise ValueError("the openai backend needs at least one --base-url")
        seen: dict[str, Endpoint] = {}
        for u in urls:
            b = normalize_base_url(u)
            if b not in seen:
                proxy, headers = env_proxy(b)
                seen[b] = Endpoint(b, cooldown=cooldown, proxy=proxy, proxy_headers=headers)
        self.endpoints = list(seen.values())
        self._changed: asyncio.Event | None = None

    def live(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.disabled is None]

    def pick(self, now: float) -> Endpoint | float:
        """An endpoint to send to, or how long to wait until one is ready."""
        live = self.live()
        if not live:
            raise AllEndpointsDisabled("; ".join(e.disabled or "" for e in self.endpoints))
        ready = [e for e in live if e.ready_at() <= now]
        if not ready:
            return max(0.001, min(e.ready_at() for e in live) - now)
        total = sum(e.weight for e in ready)
        for e in ready:
            e.current += e.weight
        best = max(ready, key=lambda e: e.current)
        best.current -= total
        if best.down_count:  # a probe: keep others off it until this one answers
            best.down_until = now + best.probe_pause()
        best.sent += 1
        return best

    def all_down_for(self, now: float) -> float | None:
        """Seconds for which every live endpoint has been down, or None if one is up."""
        live = self.live()
        since = [e.down_since for e in live]
        if not live or any(s is None for s in since):
            return None
        return now - max(s for s in since if s is not None)

    def notify(self) -> None:
        """Wake every request waiting in :meth:`wait` (an endpoint came back)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait(self, timeout: float) -> None:
        """Sleep until :meth:`notify` or ``timeout`` seconds, whichever comes first."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
        except (TimeoutError, asyncio.TimeoutError):
            pass


__all__ = [
    "AdaptiveLimiter",
    "AllEndpointsDisabled",
    "Endpoint",
    "EndpointPool",
    "PROBE_FIRST",
    "normalize_base_url",
]
