"""An OpenAI-compatible chat-completions client pool (vLLM serve, SGLang, Ollama /v1,
llama.cpp's server, cloud APIs).

- One ``aiohttp.ClientSession`` (keep-alive) on an asyncio loop that runs on a dedicated
  background thread, so the engine's thread calls plain :meth:`Backend.generate` (aiohttp,
  not httpx, for its C HTTP parser: at 128 requests in flight with a 512 px image each,
  httpx + httpcore cost ~1.5 ms of client CPU per request; see bench/p3_http.py); the
  engine keeps ``max_inflight_batches`` batches in flight, each from its own thread.
- Images go as base64 JPEG data URLs: a JPEG that :func:`pixscribe.imaging.decode` marked
  as fit to send as it is goes as its own bytes; anything else is resized to the pixel
  budget and encoded (in a worker thread, so encoding overlaps the network).
- A pool of base URLs, picked by smooth weighted round-robin (:mod:`.http_pool`); an
  endpoint that cannot be reached is skipped and probed every few seconds; 401/403
  disable an endpoint.
- AIMD concurrency (:class:`AdaptiveLimiter`); Retry-After pauses that endpoint.
- Retries with exponential backoff and jitter on 429, 408, 5xx, timeouts and dropped
  connections; other 4xx fail the request at once.
- Every request has a deadline across its slot waits, endpoint waits, retries and
  Retry-After pauses (``request_deadline``); a request that fails for good is a result
  with ``error``, never an exception. When every endpoint has been unreachable for longer
  than ``endpoint_down_timeout`` the backend raises :class:`pixscribe.record.RunStop`.
- Replies are read streaming, with a size cap derived from ``max_new_tokens``; the reply's
  ``finish_reason`` is kept and a reply cut at the token limit is ``truncated``.
- JSON schema requests: see :mod:`pixscribe.backends.structured`.

The API key is read from the environment variable named by ``api_key_env``; it is never
taken from the command line and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import itertools
import json
import os
import random
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..record import RunStop
from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult, ShareClock, map_messages
from .http_pool import AdaptiveLimiter, AllEndpointsDisabled, Endpoint, EndpointPool, normalize_base_url
from .structured import REMOVED_MODES, STRUCTURED_MODES, agenerate_one_with_schema, request_fields

if TYPE_CHECKING:  # pragma: no cover
    from ..api.models import ModelSpec
    from ..config import RunConfig

RETRY_AFTER_CAP = 300.0  # never sleep longer than this on a server's say-so
ENDPOINT_DOWN_TIMEOUT = 300.0  # default --endpoint-down-timeout (seconds)
# Response size cap: RESPONSE_BASE_BYTES + RESPONSE_BYTES_PER_TOKEN * max_new_tokens. A token
# is at most a few dozen bytes of JSON-escaped text; the margin leaves room for usage,
# logprobs and error pages, and still refuses a 20 MB "caption" at any sane token limit.
RESPONSE_BASE_BYTES = 256 * 1024
RESPONSE_BYTES_PER_TOKEN = 256
_JSON = {"Content-Type": "application/json"}


def response_cap(max_new_tokens: int) -> int:
    """The largest reply body accepted for a request of ``max_new_tokens`` tokens."""
    return RESPONSE_BASE_BYTES + RESPONSE_BYTES_PER_TOKEN * max(1, int(max_new_tokens))


# ---- images ---------------------------------------------------------------------------


def encode_image(img: Any, max_pixels: int | None, max_side: int | None, quality: int = 90) -> bytes:
    """JPEG bytes for ``img`` within the pixel budget: the source file's own bytes when
    :func:`pixscribe.imaging.decode` kept them (a JPEG already within the budget, upright,
    RGB; see :func:`pixscribe.imaging.passthrough_jpeg`), else resized and re-encoded."""
    from ..imaging import encode_jpeg, passthrough_jpeg, resize_to_budget  # lazily: no numpy/PIL at import

    own = passthrough_jpeg(img, max_pixels, max_side)
    if own is not None:
        return own
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


def data_url_bytes(jpeg: bytes) -> bytes:
    return b"data:image/jpeg;base64," + base64.b64encode(jpeg)


def data_url(jpeg: bytes) -> str:
    return data_url_bytes(jpeg).decode("ascii")


def to_openai_messages(
    messages: list[dict[str, Any]], images: list[Any], encode: Callable[[Any], bytes]
) -> list[dict[str, Any]]:
    """HF chat messages (``{"type": "image"}`` placeholders) to OpenAI messages: the i-th
    placeholder becomes ``images[i]`` as a JPEG data URL; ``image_url`` parts pass through."""
    return map_messages(
        messages, images, lambda img: {"type": "image_url", "image_url": {"url": data_url(encode(img))}},
        passthrough=("image_url",),
    )


# ---- the backend ------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retryable = retryable


@dataclass
class _Reply:
    """A server's answer, read in full (within the size cap)."""

    status: int
    reason_phrase: str
    headers: Any
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _input_error(exc: BaseException) -> GenerationResult:
    return GenerationResult(error=f"input: {type(exc).__name__}: {exc}")


class _TooLarge(Exception):
    def __init__(self, status: int, cap: int, declared: int | None):
        super().__init__(status, cap, declared)
        self.status, self.cap, self.declared = status, cap, declared


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
    return " ".join(resp.text[:2000].split())[:300] or resp.reason_phrase


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
        request_deadline: float | None = None,
        endpoint_down_timeout: float | None = ENDPOINT_DOWN_TIMEOUT,
        max_response_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if structured in REMOVED_MODES:
            raise ValueError(REMOVED_MODES[structured])
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
        self.model_entry: dict[str, Any] | None = None  # the model's /v1/models entry, once check() ran
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
        # A request's whole life (slot waits, waits for a down endpoint, Retry-After,
        # backoff, every attempt). The default leaves room for a full queue of in-flight
        # batches ahead of the request (8 x concurrency requests) plus every attempt.
        self.request_deadline = float(
            request_deadline if request_deadline is not None else 2 * (self.max_retries + 1) * self.request_timeout
        )
        self.endpoint_down_timeout = None if endpoint_down_timeout is None else float(endpoint_down_timeout)
        self.max_response_bytes = max_response_bytes  # None: response_cap(max_new_tokens)
        self._stopped: RunStop | None = None
        self.structured = structured
        self.extra_body = dict(extra_body or {})
        self.schema_model = schema_model
        self.preferred_batch_size = 4 * self.concurrency
        self._share = ShareClock()
        # the engine keeps this many batches in flight, so the pipe never drains between batches
        self.max_inflight_batches = 2
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._post_options = {ep.base: self._via(ep) for ep in self.pool.endpoints}  # headers and proxy, once
        self._tag, self._bodies = uuid.uuid4().hex, itertools.count()  # image placeholders in _body
        self._start_lock = threading.Lock()
        self.jpegs = JpegMemo(lambda img: encode_image(img, self.max_pixels, self.max_side, self.jpeg_quality))

    @classmethod
    def from_spec(cls, spec: "ModelSpec", config: "RunConfig", **overrides: Any) -> "OpenAIBackend":
        """The servers and model of ``spec``, with the run's request settings."""
        if not spec.base_url:
            raise BackendUnavailable("--backend openai needs at least one --base-url (e.g. http://localhost:8000/v1)")
        kw: dict[str, Any] = dict(
            api_key_env=spec.api_key_env,
            concurrency=config.concurrency,
            request_timeout=config.request_timeout,
            max_retries=config.max_retries,
            max_pixels=config.max_pixels,
            max_side=config.max_side,
            structured=config.structured_output,
            request_deadline=config.request_deadline,
            endpoint_down_timeout=config.endpoint_down_timeout or None,  # 0 = never stop
        )
        kw.update(overrides)
        return cls(spec.model, list(spec.base_url), **kw)

    @classmethod
    def from_config(cls, config: "RunConfig", *, model: str | None = None, **overrides: Any) -> "OpenAIBackend":
        """From a :class:`~pixscribe.config.RunConfig`'s VLM (``model`` overrides ``config.vlm``)."""
        from ..api.models import resolve_spec

        spec = resolve_spec(config, "vlm")
        return cls.from_spec(dataclasses.replace(spec, model=model) if model else spec, config, **overrides)

    # ---- the background loop ------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is not None:
                return self._loop
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

            self._session = asyncio.run_coroutine_threadsafe(self._make_session(headers), loop).result()
            self._loop = loop
            return loop

    async def _make_session(self, headers: dict[str, str]) -> Any:
        """The session: a connection per request in flight (plus two per endpoint), certifi's
        CA bundle (as httpx used), no redirects followed. Proxies come from the environment
        once per endpoint (``Endpoint.proxy``), not through ``trust_env``, which looked them up
        in a worker thread on every request."""
        import ssl

        import aiohttp
        import certifi

        conns = (self.concurrency + 2) * len(self.pool.endpoints)
        tls = ssl.create_default_context(cafile=certifi.where())
        return aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=conns, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.request_timeout)),
        )

    def close(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            return  # (garbage-collected on its own loop: the daemon thread dies with the process)
        with self._start_lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        session, self._session = self._session, None
        if session is not None:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(10)
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

    def check(self) -> list[str]:
        """GET /models on every endpoint before a run. Returns the endpoints that serve the
        model; raises BackendUnavailable naming the URLs (or listing the served models)."""
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        answered: dict[str, list[str]] = {}
        problems: list[str] = []
        for ep in self.pool.endpoints:
            proxy = httpx.Proxy(ep.proxy, headers=ep.proxy_headers) if ep.proxy else None  # as the run's requests
            try:
                r = httpx.get(ep.models_url, headers=headers, timeout=min(10.0, self.request_timeout), proxy=proxy,
                              trust_env=False)
            except httpx.HTTPError as exc:
                problems.append(f"{ep.route}: {type(exc).__name__}: {exc}")
                continue
            if r.status_code in (401, 403):
                ep.disabled = self._auth_message(ep, r.status_code, _error_message(r))
                problems.append(ep.disabled)
                continue
            if r.status_code != 200:
                problems.append(f"{ep.base}: GET /models answered {r.status_code}: {_error_message(r)}")
                continue
            try:
                entries = [m for m in r.json().get("data", []) if isinstance(m, dict)]
                ids = [str(m.get("id")) for m in entries]
            except Exception:  # noqa: BLE001
                problems.append(f"{ep.base}: GET /models did not return a model list")
                continue
            answered[ep.base] = ids
            if self.model_entry is None and self.model in ids:  # vLLM's names the loaded path or id as "root"
                self.model_entry = {**entries[ids.index(self.model)], "from": ep.base}
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
                {
                    "base": e.base, "sent": e.sent, "succeeded": e.succeeded, "failures": e.failures,
                    "disabled": e.disabled, "down": e.down_since is not None,
                }
                for e in self.pool.endpoints
            ],
        }

    # ---- the work -------------------------------------------------------------------
    async def _run_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        tasks = [asyncio.ensure_future(self._one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except RunStop:  # the run cannot go on: stop the batch's other requests too
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        t0 = time.perf_counter()
        try:
            if req.json_schema is not None:
                res = await agenerate_one_with_schema(req, self._request, self.schema_model)
                self._hint_unconstrained(res)
            else:
                res = await self._request(req)
        except RunStop:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must become a row, not kill the batch
            from ..record import format_error

            res = GenerationResult(error=format_error(exc, "backend"))
        if res.latency is None:  # failures: the whole time spent on the request
            res.latency = time.perf_counter() - t0
        return res

    def _hint_unconstrained(self, res: GenerationResult) -> None:
        """A schema failure whose reply is not JSON at all means the server ignored the
        structured-output fields (as vLLM >= 0.12 does with guided_json): say which mode to use."""
        if not (res.error or "").startswith("schema: ") or res.truncated or self.structured == "none":
            return
        text = (res.text or "").strip().lstrip("`").removeprefix("json").strip()
        if text[:1] in ("{", "["):
            return
        other = "vllm" if self.structured in ("response_format", "sglang") else "response_format"
        res.error += (
            f"; the server answered with text that is not JSON, so it did not constrain decoding with "
            f"--structured-output {self.structured}: check that it supports it, or try --structured-output {other}"
        )

    def _body(self, req: GenerationRequest) -> bytes:
        """The request body. Images go in after ``json.dumps`` (base64 needs no escaping,
        and scanning ~100 KB of it per image was most of a pass-through body's cost)."""
        urls: dict[str, bytes] = {}
        tag = f"{self._tag}-{next(self._bodies)}"  # unguessable, so no prompt text can hold it

        def image_url(img: Any) -> str:
            key = f"pixscribe-image-{tag}-{len(urls)}"
            urls[key] = data_url_bytes(self.jpegs(img))
            return key

        s = req.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": map_messages(
                req.messages, req.images, lambda img: {"type": "image_url", "image_url": {"url": image_url(img)}},
                passthrough=("image_url",),
            ),
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(self._penalty(s))
        body.update(request_fields(req.json_schema, self.structured))
        body.update(self.extra_body)
        out = json.dumps(body, ensure_ascii=False).encode()
        for key, url in urls.items():
            out = out.replace(key.encode("ascii"), url, 1)
        return out

    def _penalty(self, s: Any) -> dict[str, Any]:
        """The loop guard's repetition penalty (backends/loops.py) in the server's own field:
        ``repetition_penalty`` (vLLM's extra sampling parameter, as transformers and vLLM
        offline take it) when the server is vLLM (``/v1/models`` says ``owned_by: vllm``, or
        ``--structured-output vllm``), else the OpenAI API's ``frequency_penalty``."""
        if s.repetition_penalty is None and s.frequency_penalty is None:
            return {}
        vllm = self.structured == "vllm" or (self.model_entry or {}).get("owned_by") == "vllm"
        if vllm and s.repetition_penalty is not None:
            return {"repetition_penalty": s.repetition_penalty}
        return {"frequency_penalty": s.frequency_penalty} if s.frequency_penalty is not None else {}

    def _cheap_images(self, req: GenerationRequest) -> bool:
        """Every image goes as its own JPEG bytes: the body is cheaper to build here than a thread hop."""
        from ..imaging import passthrough_jpeg

        return all(passthrough_jpeg(im, self.max_pixels, self.max_side) is not None for im in req.images)

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
        """One request through slots, endpoints and retries, within its deadline."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.request_deadline
        body: bytes | None = None
        try:
            # image resizing/encoding runs in worker threads, overlapping the network; a
            # text-only body or one of pass-through JPEGs is cheaper to build here than a thread
            # hop, and is built once a slot is free: built up front, a batch of 1280 held back
            # its first send by 0.26 s (and held every body in memory at once)
            if req.images and not self._cheap_images(req):
                body = await loop.run_in_executor(None, self._body, req)
        except Exception as exc:  # noqa: BLE001
            return _input_error(exc)
        cap = self.max_response_bytes or response_cap(req.sampling.max_new_tokens)
        attempt = 0  # failures that count against --max-retries
        sends = 0
        last: _Failure | None = None
        where = ""
        while True:
            got = await self._endpoint(deadline)
            if isinstance(got, _Failure):  # every endpoint disabled (auth)
                got.status = last.status if last else None
                return self._give_up(got, where, sends)
            if got is None:
                return self._expired(last, where, sends)
            ep, epoch = got
            if body is None:
                try:
                    body = self._body(req)
                except Exception as exc:  # noqa: BLE001
                    self.limiter.release()
                    return _input_error(exc)
            where = ep.base
            sends += 1
            outcome, retry_after = await self._attempt(ep, epoch, body, cap, deadline)
            if isinstance(outcome, GenerationResult):
                outcome.retries = sends - 1
                return outcome
            last = outcome
            if not last.retryable:
                return self._give_up(last, where, sends)
            if last.kind in ("auth", "unreachable"):
                continue  # that endpoint is out of the rotation; waiting for one is bounded by the deadline
            attempt += 1
            if attempt > self.max_retries:
                return self._give_up(last, where, sends)
            delay = self._backoff(attempt)
            if retry_after is not None:
                ep.paused_until = max(ep.paused_until, time.monotonic() + retry_after)
                delay = max(delay, retry_after)
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    async def _endpoint(self, deadline: float) -> tuple[Endpoint, int] | _Failure | None:
        """A slot and an endpoint (waiting for one without holding a slot); None when the
        deadline passed first. Raises RunStop when every endpoint has been down too long."""
        while True:
            if self._stopped is not None:
                raise self._stopped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:  # asyncio.timeout, not wait_for: wait_for makes a task per call, a loop pass more per request
                async with asyncio.timeout(remaining):
                    epoch = await self.limiter.acquire()
            except (TimeoutError, asyncio.TimeoutError):
                return None
            now = time.monotonic()
            try:
                picked = self.pool.pick(now)
            except AllEndpointsDisabled as exc:
                self.limiter.release()
                return _Failure("auth", str(exc), retryable=False)
            if isinstance(picked, Endpoint):
                return picked, epoch
            self.limiter.release()
            self._check_down(now)
            await self.pool.wait(min(picked, deadline - now))

    def _check_down(self, now: float) -> None:
        """Raise RunStop when every endpoint has been unreachable for endpoint_down_timeout."""
        if self.endpoint_down_timeout is None:
            return
        down = self.pool.all_down_for(now)
        if down is None or down < self.endpoint_down_timeout:
            return
        eps = "; ".join(f"{e.base} ({e.last_problem or 'unreachable'})" for e in self.pool.live())
        self._stopped = RunStop(
            f"every model endpoint has been unreachable for more than {self.endpoint_down_timeout:g} s "
            f"(--endpoint-down-timeout): {eps}. The run stopped; what was written is kept: start the server "
            "and rerun the same command to resume."
        )
        raise self._stopped

    async def _attempt(
        self, ep: Endpoint, epoch: int, body: bytes, cap: int, deadline: float
    ) -> tuple[GenerationResult | _Failure, float | None]:
        """Send once; the result, or the failure and the server's Retry-After."""
        timeout = max(0.001, min(self.request_timeout, deadline - time.monotonic()))
        t_send = time.perf_counter()
        token = self._share.start()
        try:
            try:
                reply = await self._post(ep, body, cap, timeout)
            finally:
                self.limiter.release()
                share = self._share.stop(token)
        except _TooLarge as exc:
            ep.on_failure()
            return self._too_large(exc, ep), None
        except Exception as exc:  # noqa: BLE001
            return self._transport_failure(exc, ep, timeout), None
        result = self._handle(reply, ep, epoch)
        if isinstance(result, GenerationResult):
            result.latency = time.perf_counter() - t_send  # the server's round trip, not the queue's
            result.seconds = share  # this request's share of the time the server was busy with us
            return result, None
        return result, parse_retry_after(reply.headers.get("Retry-After"))

    async def _post(self, ep: Endpoint, body: bytes, cap: int, timeout: float) -> _Reply:
        """POST the body and read the reply streaming, refusing more than ``cap`` bytes."""
        async with asyncio.timeout(timeout):
            async with self._session.post(
                ep.chat_url, data=body, allow_redirects=False, **self._post_options[ep.base]
            ) as resp:
                declared = resp.headers.get("content-length")
                if declared and declared.strip().isdigit() and int(declared) > cap:
                    raise _TooLarge(resp.status, cap, int(declared))
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_any():
                    total += len(chunk)
                    if total > cap:
                        raise _TooLarge(resp.status, cap, None)
                    chunks.append(chunk)
                return _Reply(resp.status, resp.reason or "", resp.headers, b"".join(chunks))

    @staticmethod
    def _via(ep: Endpoint) -> dict[str, Any]:
        """Headers and proxy of a POST to ``ep``. The proxy's credentials go on the CONNECT to an
        https:// server, and on the request itself to an http:// one (aiohttp copies them from
        ``proxy_headers`` only in the first case)."""
        if ep.proxy is None:
            return {"headers": _JSON}
        if ep.base.startswith("https://"):
            return {"headers": _JSON, "proxy": ep.proxy, "proxy_headers": ep.proxy_headers}
        return {"headers": {**_JSON, **(ep.proxy_headers or {})}, "proxy": ep.proxy}

    def _too_large(self, exc: _TooLarge, ep: Endpoint) -> _Failure:
        size = f"declares {exc.declared} bytes" if exc.declared is not None else f"grew past {exc.cap} bytes"
        return _Failure(
            "http",
            f"{ep.base} answered {exc.status} with a body that {size}, over the {exc.cap}-byte limit for this "
            "request (derived from --max-new-tokens); a reply that large cannot be a caption of that many tokens",
            exc.status,
            retryable=False,
        )

    def _handle(self, resp: _Reply, ep: Endpoint, epoch: int) -> GenerationResult | _Failure:
        status = resp.status
        if status == 200:
            return self._handle_ok(resp, ep)
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

    def _handle_ok(self, resp: _Reply, ep: Endpoint) -> GenerationResult | _Failure:
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
        except Exception as exc:  # noqa: BLE001
            ep.on_failure()
            return _Failure("http", f"200 with an unreadable body ({type(exc).__name__}: {exc})", 200)
        if text is None:
            ep.on_failure()
            hint = "; the token limit was reached before any content: raise --max-new-tokens" if finish == "length" else ""
            return _Failure("http", f"200 without message content (finish_reason={finish}){hint}", 200)
        if ep.on_success():
            self.pool.notify()  # it was down: wake the requests waiting for an endpoint
        self.limiter.on_success()
        return GenerationResult(
            text=text,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            status=200,
            finish_reason=str(finish) if finish is not None else None,
            truncated=finish == "length",
        )

    def _transport_failure(self, exc: BaseException, ep: Endpoint, timeout: float) -> _Failure:
        import aiohttp

        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            why = "connect timed out" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "connection refused"
            ep.on_unreachable(time.monotonic(), why)
            return _Failure("unreachable", f"cannot connect to {ep.route} ({why}: {exc or type(exc).__name__})")
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            ep.on_failure()
            return _Failure("timeout", f"no answer from {ep.base} within {timeout:g} s (--request-timeout)")
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                            aiohttp.ClientResponseError, ConnectionError)):
            ep.on_failure()
            return _Failure("connection", f"{ep.base} dropped the connection ({type(exc).__name__}: {exc})")
        ep.on_failure()
        return _Failure("http", f"{type(exc).__name__}: {exc}", retryable=False)

    def _give_up(self, f: _Failure, where: str, sends: int) -> GenerationResult:
        if f.kind == "auth":
            kind = "auth"
        else:
            kind = "http" if f.status else {"unreachable": "connection"}.get(f.kind, f.kind)
        tries = f"gave up after {sends} attempt(s)" if f.retryable else "not retried"
        msg = f"{f} (from {where}, {tries})" if where else str(f)
        return GenerationResult(error=f"{kind}: {msg}", status=f.status, retries=max(0, sends - 1))

    def _expired(self, last: _Failure | None, where: str, sends: int) -> GenerationResult:
        what = f"; last: {last}" + (f" (from {where})" if where else "") if last else "; no endpoint was free"
        return GenerationResult(
            error=f"timeout: no answer within the request deadline of {self.request_deadline:g} s "
            f"(--request-deadline) after {sends} attempt(s){what}",
            status=last.status if last else None,
            retries=max(0, sends - 1),
        )


__all__ = [
    "AdaptiveLimiter",
    "ENDPOINT_DOWN_TIMEOUT",
    "Endpoint",
    "EndpointPool",
    "OpenAIBackend",
    "encode_image",
    "response_cap",
    "normalize_base_url",
    "parse_retry_after",
    "to_openai_messages",
]
