"""An OpenAI-compatible chat-completions client pool (vLLM serve, SGLang, Ollama /v1,
llama.cpp's server, cloud APIs).

- One ``httpx.AsyncClient`` (keep-alive) on an asyncio loop that runs on a dedicated
  background thread, so the engine's thread calls plain :meth:`Backend.generate`; callers
  that want several batches in flight use :meth:`OpenAIBackend.submit` (a
  ``concurrent.futures.Future``) or ``await`` :meth:`OpenAIBackend.agenerate`.
- Images go as base64 JPEG data URLs, resized to the pixel budget first (in a worker
  thread, so encoding overlaps the network).
- A pool of base URLs, picked by smooth weighted round-robin; an endpoint's weight falls
  with its consecutive failures; an endpoint that refuses connections is skipped for a
  cool-down and then probed by a single request; 401/403 disable an endpoint.
- AIMD concurrency (:class:`AdaptiveLimiter`): +1 after ``limit`` successes in a row,
  halved on 429, 503 or an "overloaded" reply (at most once per round trip), never above
  ``concurrency``; Retry-After (seconds or an HTTP date) pauses that endpoint.
- Retries with exponential backoff and jitter on 429, 408, 5xx, timeouts and dropped
  connections; other 4xx fail the request at once. A request that fails for good is a
  result with ``error`` (last status and message), never an exception.
- JSON schema requests: see :mod:`pixscribe.backends.structured`.

The API key is read from the environment variable named by ``api_key_env``; it is never
taken from the command line and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email.utils
import json
import math
import os
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult, map_messages
from .structured import STRUCTURED_MODES, agenerate_one_with_schema, request_fields

RETRY_AFTER_CAP = 300.0  # never sleep longer than this on a server's say-so
CONNS_PER_CLIENT = 8  # keep-alive connections per httpx.AsyncClient shard (see _ensure_loop)


# ---- images ---------------------------------------------------------------------------


def encode_image(img: Any, max_pixels: int | None, max_side: int | None, quality: int = 90) -> bytes:
    """``img`` resized to the pixel budget and encoded as JPEG bytes."""
    from ..imaging import encode_jpeg, resize_to_budget  # lazily: importing the backend needs no numpy/PIL

    return encode_jpeg(resize_to_budget(img, max_pixels, max_side), quality=quality)


class JpegMemo:
    """An image object sent in several requests is encoded once: region prompts put the same
    unmodified full image beside every region's close-up (focal without outline) or box text.

    Keyed by the object itself through a weak reference (an image that is gone is forgotten,
    and a new object that reuses its id is not mistaken for it); the last ``size`` encodes are
    kept. Images are not modified once built (pixscribe's stages draw on copies)."""

    def __init__(self, encode: Callable[[Any], bytes], size: int = 16):
        self._encode = encode
        self.size = size
        self.encodes = 0
        self.hits = 0
        self._items: OrderedDict[int, tuple[Any, bytes]] = OrderedDict()
        self._busy: dict[int, threading.Event] = {}  # encodes under way: the same image waits for them
        self._lock = threading.Lock()

    def __call__(self, img: Any) -> bytes:
        key = id(img)
        while True:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None and hit[0]() is img:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return hit[1]
                busy = self._busy.get(key)
                if busy is None:
                    busy = self._busy[key] = threading.Event()
                    break
            busy.wait()  # another request's thread is encoding this image (or it failed: try again)
        try:
            data = self._encode(img)
            try:
                ref = weakref.ref(img)
            except TypeError:  # not weakly referenceable: not kept
                return data
            with self._lock:
                self.encodes += 1
                self._items[key] = (ref, data)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return data
        finally:
            with self._lock:
                del self._busy[key]
            busy.set()


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def to_openai_messages(
    messages: list[dict[str, Any]], images: list[Any], encode: Callable[[Any], bytes]
) -> list[dict[str, Any]]:
    """HF chat messages (``{"type": "image"}`` placeholders) to OpenAI messages: the i-th
    placeholder becomes ``images[i]`` as a JPEG data URL; ``image_url`` parts pass through."""
    return map_messages(
        messages, images, lambda img: {"type": "image_url", "image_url": {"url": data_url(encode(img))}},
        passthrough=("image_url",),
    )


# ---- adaptive concurrency ---------------------------------------------------------------


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


# ---- endpoints ------------------------------------------------------------------------


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is kept as given."""
    u = url.strip().rstrip("/")
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--base-url {url!r}: expected http(s)://host[:port][/v1]")
    if parts.path in ("", "/"):
        u += "/v1"
    return u


@dataclass
class Endpoint:
    base: str
    cooldown: float = 5.0
    failures: int = 0  # consecutive
    down_count: int = 0  # consecutive refused connections
    down_until: float = 0.0
    paused_until: float = 0.0  # Retry-After
    disabled: str | None = None
    current: float = 0.0  # smooth weighted round-robin state
    sent: int = 0
    succeeded: int = 0

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

    def on_success(self) -> None:
        self.failures = 0
        self.down_count = 0
        self.down_until = 0.0
        self.succeeded += 1

    def on_failure(self) -> None:
        self.failures += 1

    def on_refused(self, now: float) -> None:
        self.failures += 1
        self.down_count += 1
        self.down_until = now + min(60.0, self.cooldown * 2 ** (self.down_count - 1))


class AllEndpointsDisabled(Exception):
    pass


class EndpointPool:
    def __init__(self, urls: list[str], cooldown: float = 5.0):
        if not urls:
            raise ValueError("the openai backend needs at least one --base-url")
        seen: dict[str, Endpoint] = {}
        for u in urls:
            b = normalize_base_url(u)
            seen.setdefault(b, Endpoint(b, cooldown=cooldown))
        self.endpoints = list(seen.values())

    def pick(self, now: float) -> Endpoint | float:
        """An endpoint to send to, or how long to wait until one is ready."""
        live = [e for e in self.endpoints if e.disabled is None]
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
            best.down_until = now + best.cooldown
        best.sent += 1
        return best

    def others_ready(self, ep: Endpoint, now: float) -> bool:
        return any(e is not ep and e.disabled is None and e.ready_at() <= now for e in self.endpoints)


# ---- the backend ------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retryable = retryable


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if dt is None:
            return None
        secs = dt.timestamp() - (now if now is not None else time.time())
    return max(0.0, min(RETRY_AFTER_CAP, secs))


def _error_message(resp: Any) -> str:
    try:
        data = resp.json()
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])[:300]
    except Exception:  # noqa: BLE001
        pass
    return " ".join(resp.text.split())[:300] or resp.reason_phrase


class OpenAIBackend(Backend):
    """Chat completions against one or more OpenAI-compatible servers."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: list[str] | str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 32,
        initial_concurrency: int | None = None,
        request_timeout: float = 120.0,
        max_retries: int = 5,
        max_pixels: int | None = 1_000_000,
        max_side: int | None = None,
        jpeg_quality: int = 90,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        cooldown: float = 5.0,
        structured: str = "response_format",
        extra_body: dict[str, Any] | None = None,
        schema_model: Any = None,
    ) -> None:
        super().__init__()
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured={structured!r}; use one of {', '.join(STRUCTURED_MODES)}")
        self.model = model
        self.pool = EndpointPool([base_urls] if isinstance(base_urls, str) else list(base_urls), cooldown=cooldown)
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendUnavailable(
                    f"--api-key-env {api_key_env}: the environment variable {api_key_env} is not set or empty; "
                    f"export {api_key_env}=... before the run"
                )
        self._api_key = api_key
        self.concurrency = int(concurrency)
        # Start at the configured cap: --concurrency is the user's statement of what the
        # servers can take, vLLM/SGLang queue rather than reject, and a 429 storm halves
        # the limit within one round trip, whereas a slow start from a small window costs
        # log2(C/8) round trips of an under-used server at every batch start.
        self.limiter = AdaptiveLimiter(self.concurrency, initial_concurrency)
        self.request_timeout = float(request_timeout)
        self.max_retries = int(max_retries)
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.jpeg_quality = jpeg_quality
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.structured = structured
        self.extra_body = dict(extra_body or {})
        self.schema_model = schema_model
        self.preferred_batch_size = 4 * self.concurrency
        # the engine keeps this many batches in flight, so the pipe never drains between batches
        self.max_inflight_batches = 2
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[Any] = []
        self._next_client = 0
        self._start_lock = threading.Lock()
        self.jpegs = JpegMemo(lambda img: encode_image(img, self.max_pixels, self.max_side, self.jpeg_quality))

    @classmethod
    def from_config(cls, config: Any, *, model: str | None = None, **overrides: Any) -> "OpenAIBackend":
        """From a :class:`~pixscribe.config.RunConfig` (``model`` overrides ``config.vlm``)."""
        if not config.base_url:
            raise BackendUnavailable("--backend openai needs at least one --base-url (e.g. http://localhost:8000/v1)")
        kw: dict[str, Any] = dict(
            api_key_env=config.api_key_env,
            concurrency=config.concurrency,
            request_timeout=config.request_timeout,
            max_retries=config.max_retries,
            max_pixels=config.max_pixels,
            max_side=config.max_side,
            structured=config.structured_output,
        )
        kw.update(overrides)
        return cls(model or config.vlm, list(config.base_url), **kw)

    # ---- the background loop ------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is not None:
                return self._loop
            import httpx

            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                ready.set()
                loop.run_forever()

            self._thread = threading.Thread(target=run, name="pixscribe-openai", daemon=True)
            self._thread.start()
            ready.wait()
            headers = {"User-Agent": "pixscribe"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"

            # httpcore's pool scans its connections for every request and event, which is
            # superlinear: one client with 128 connections spends ~15 s of CPU per 1280
            # requests. Shards of at most CONNS_PER_CLIENT connections keep that flat.
            total = self.concurrency * len(self.pool.endpoints)
            per = min(total, CONNS_PER_CLIENT)
            n_clients = max(1, math.ceil(total / per))

            async def make_clients() -> list[Any]:
                return [
                    httpx.AsyncClient(
                        headers=headers,
                        timeout=httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout)),
                        limits=httpx.Limits(max_connections=per + 2, max_keepalive_connections=per + 2),
                        follow_redirects=False,
                    )
                    for _ in range(n_clients)
                ]

            self._clients = asyncio.run_coroutine_threadsafe(make_clients(), loop).result()
            self._loop = loop
            return loop

    def _client(self) -> Any:
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    def close(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            return  # (garbage-collected on its own loop: the daemon thread dies with the process)
        with self._start_lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        clients, self._clients = self._clients, []

        async def close_all() -> None:
            for c in clients:
                await c.aclose()

        asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ---- public entry points ------------------------------------------------------
    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(self._run_all(requests), loop).result()

    def submit(self, requests: list[GenerationRequest]) -> concurrent.futures.Future:
        """Start a batch and return at once; the future's result is the list of results
        (usage is counted when it completes). Keep several in flight to fill the pipe."""
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(self._run_all(requests), loop)
        fut.add_done_callback(self._account)
        return fut

    async def agenerate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Awaitable from any event loop (the work runs on the backend's own loop)."""
        loop = self._ensure_loop()
        if asyncio.get_running_loop() is loop:
            results = await self._run_all(requests)
        else:
            results = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run_all(requests), loop))
        self._add_usage(results)
        return results

    def _account(self, fut: concurrent.futures.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._add_usage(fut.result())

    def _add_usage(self, results: list[GenerationResult]) -> None:
        for r in results:  # BackendUsage.add takes its own lock
            self.usage.add(r)

    def check(self) -> list[str]:
        """GET /models on every endpoint before a run. Returns the endpoints that serve the
        model; raises BackendUnavailable naming the URLs (or listing the served models)."""
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        answered: dict[str, list[str]] = {}
        problems: list[str] = []
        for ep in self.pool.endpoints:
            try:
                r = httpx.get(ep.models_url, headers=headers, timeout=min(10.0, self.request_timeout))
            except httpx.HTTPError as exc:
                problems.append(f"{ep.base}: {type(exc).__name__}: {exc}")
                continue
            if r.status_code in (401, 403):
                ep.disabled = self._auth_message(ep, r.status_code, _error_message(r))
                problems.append(ep.disabled)
                continue
            if r.status_code != 200:
                problems.append(f"{ep.base}: GET /models answered {r.status_code}: {_error_message(r)}")
                continue
            try:
                ids = [str(m.get("id")) for m in r.json().get("data", [])]
            except Exception:  # noqa: BLE001
                problems.append(f"{ep.base}: GET /models did not return a model list")
                continue
            answered[ep.base] = ids
        if not answered:
            raise BackendUnavailable(
                "no OpenAI-compatible server answered at "
                + ", ".join(e.base for e in self.pool.endpoints)
                + " ("
                + "; ".join(problems)
                + "). Start the server (e.g. `vllm serve MODEL`) or fix --base-url."
            )
        serving = [b for b, ids in answered.items() if self.model in ids]
        if not serving:
            listing = "; ".join(f"{b} serves {', '.join(ids) or 'nothing'}" for b, ids in answered.items())
            raise BackendUnavailable(f"model {self.model!r} is not served: {listing}. Pass one of these with --vlm.")
        for ep in self.pool.endpoints:
            if ep.base in answered and ep.base not in serving:
                ep.disabled = f"{ep.base} does not serve {self.model!r} (serves {', '.join(answered[ep.base])})"
        return serving

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["base_urls"] = [e.base for e in self.pool.endpoints]
        d["structured"] = self.structured
        return d

    def stats(self) -> dict[str, Any]:
        """Limiter and endpoint state (for logs and tests)."""
        return {
            "limit": self.limiter.current,
            "max_inflight": self.limiter.max_inflight,
            "decreases": self.limiter.decreases,
            "increases": self.limiter.increases,
            "endpoints": [
                {"base": e.base, "sent": e.sent, "succeeded": e.succeeded, "failures": e.failures, "disabled": e.disabled}
                for e in self.pool.endpoints
            ],
        }

    # ---- the work -------------------------------------------------------------------
    async def _run_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        t0 = time.perf_counter()
        try:
            if req.json_schema is not None:
                res = await agenerate_one_with_schema(req, self._request, self.schema_model)
            else:
                res = await self._request(req)
        except Exception as exc:  # noqa: BLE001 - a bug must become a row, not kill the batch
            from ..record import format_error

            res = GenerationResult(error=format_error(exc, "backend"))
        if not res.seconds:  # failures: the whole time spent on the request
            res.seconds = time.perf_counter() - t0
        return res

    def _body(self, req: GenerationRequest) -> bytes:
        s = req.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(req.messages, req.images, self.jpegs),
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(request_fields(req.json_schema, self.structured))
        body.update(self.extra_body)
        return json.dumps(body, ensure_ascii=False).encode()

    def _backoff(self, attempt: int) -> float:
        d = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return d / 2 + self._rng.uniform(0, d / 2)  # "equal jitter"

    def _auth_message(self, ep: Endpoint, status: int, msg: str) -> str:
        where = f"the key in ${self.api_key_env}" if self.api_key_env else "no API key (set --api-key-env VAR)"
        return (
            f"{ep.base} answered {status} ({msg}); endpoint disabled. "
            f"Check {where} and that it may use model {self.model!r}."
        )

    async def _request(self, req: GenerationRequest) -> GenerationResult:
        loop = asyncio.get_running_loop()
        try:
            # image resizing/encoding runs in worker threads, overlapping the network;
            # a text-only body is cheaper to build here than a thread hop
            body = await loop.run_in_executor(None, self._body, req) if req.images else self._body(req)
        except Exception as exc:  # noqa: BLE001
            return GenerationResult(error=f"input: {type(exc).__name__}: {exc}")
        attempt = 0  # failures that count against --max-retries
        sends = 0
        last: _Failure | None = None
        where = ""
        while True:
            # a slot, then an endpoint (waiting for one without holding a slot)
            epoch = await self.limiter.acquire()
            now = time.monotonic()
            try:
                picked = self.pool.pick(now)
            except AllEndpointsDisabled as exc:
                self.limiter.release()
                return GenerationResult(
                    error=f"auth: {exc}", status=last.status if last else None, retries=max(0, sends - 1)
                )
            if not isinstance(picked, Endpoint):
                self.limiter.release()
                await asyncio.sleep(picked)
                continue
            ep = picked
            where = ep.base
            sends += 1
            retry_after: float | None = None
            t_send = time.perf_counter()
            try:
                try:
                    async with asyncio.timeout(self.request_timeout):
                        resp = await self._client().post(
                            ep.chat_url, content=body, headers={"Content-Type": "application/json"}
                        )
                finally:
                    self.limiter.release()
                result = self._handle(resp, ep, epoch)
                if isinstance(result, GenerationResult):
                    result.retries = sends - 1
                    result.seconds = time.perf_counter() - t_send  # the server's time, not the queue's
                    return result
                last = result
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            except Exception as exc:  # noqa: BLE001
                last = self._transport_failure(exc, ep)
            if not last.retryable:
                return self._give_up(last, where, sends)
            now = time.monotonic()
            if last.kind == "auth" or (last.kind == "connection refused" and self.pool.others_ready(ep, now)):
                continue  # that endpoint is out of the rotation; another one takes it now
            attempt += 1
            if attempt > self.max_retries:
                return self._give_up(last, where, sends)
            delay = self._backoff(attempt)
            if retry_after is not None:
                ep.paused_until = max(ep.paused_until, now + retry_after)
                delay = max(delay, retry_after)
            await asyncio.sleep(delay)

    def _handle(self, resp: Any, ep: Endpoint, epoch: int) -> GenerationResult | _Failure:
        status = resp.status_code
        if status == 200:
            try:
                data = resp.json()
                choice = data["choices"][0]
                text = choice["message"].get("content")
                usage = data.get("usage") or {}
            except Exception as exc:  # noqa: BLE001
                ep.on_failure()
                return _Failure("http", f"200 with an unreadable body ({type(exc).__name__}: {exc})", status)
            if text is None:
                ep.on_failure()
                return _Failure("http", f"200 without message content (finish_reason={choice.get('finish_reason')})", status)
            ep.on_success()
            self.limiter.on_success()
            return GenerationResult(
                text=text,
                tokens_in=int(usage.get("prompt_tokens") or 0),
                tokens_out=int(usage.get("completion_tokens") or 0),
                status=status,
            )
        msg = _error_message(resp)
        overloaded = status in (429, 503, 529) or "overloaded" in msg.lower()
        if overloaded:
            self.limiter.on_overload(epoch)
        if status in (401, 403):
            ep.disabled = self._auth_message(ep, status, msg)
            return _Failure("auth", ep.disabled, status, retryable=True)
        ep.on_failure()
        retryable = overloaded or status in (408, 429) or status >= 500
        return _Failure("http", f"{status} {resp.reason_phrase}: {msg}", status, retryable)

    def _transport_failure(self, exc: BaseException, ep: Endpoint) -> _Failure:
        import httpx

        if isinstance(exc, httpx.ConnectError):
            ep.on_refused(time.monotonic())
            return _Failure("connection refused", f"cannot connect to {ep.base}: {exc or type(exc).__name__}")
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
            ep.on_failure()
            return _Failure("timeout", f"no answer from {ep.base} within {self.request_timeout:g} s (--request-timeout)")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.NetworkError)):
            ep.on_failure()
            return _Failure("connection", f"{ep.base} dropped the connection ({type(exc).__name__}: {exc})")
        ep.on_failure()
        return _Failure("http", f"{type(exc).__name__}: {exc}", retryable=False)

    def _give_up(self, f: _Failure, where: str, sends: int) -> GenerationResult:
        kind = "http" if f.status else f.kind.split()[0]
        tries = f"gave up after {sends} attempt(s)" if f.retryable else "not retried"
        msg = f"{f} (from {where}, {tries})"
        return GenerationResult(error=f"{kind}: {msg}", status=f.status, retries=max(0, sends - 1))


__all__ = [
    "AdaptiveLimiter",
    "Endpoint",
    "EndpointPool",
    "OpenAIBackend",
    "encode_image",
    "normalize_base_url",
    "parse_retry_after",
    "to_openai_messages",
]
