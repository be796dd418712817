"""One interface for every generation backend (transformers, OpenAI-compatible HTTP, vLLM).

A method builds :class:`GenerationRequest` objects (chat messages, the images they
refer to, sampling, maybe a JSON schema) and gets one :class:`GenerationResult` per
request back, in order. A failure is per request (``result.error``), never an
exception out of :meth:`Backend.generate`.

Messages use the Hugging Face chat format. An image placeholder is
``{"type": "image"}``; the i-th placeholder of a request refers to ``images[i]``::

    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]

Text-only requests (LLM rewriting, fusion) simply have no images.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BackendUnavailable  # noqa: F401 (the backends raise it; re-exported)


@dataclass
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    # repetition penalties, None = the model's own; set by the loop guard's retry
    # (backends/loops.py): transformers and vLLM send ``repetition_penalty`` (multiplicative),
    # an OpenAI-compatible server ``frequency_penalty`` (vLLM's server: ``repetition_penalty``)
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields, less the penalties when unset: what caches, transcripts and reports
        record (so the keys made before the penalties existed stay the same)."""
        d = dataclasses.asdict(self)
        for k in ("repetition_penalty", "frequency_penalty"):
            if d[k] is None:
                del d[k]
        return d


@dataclass
class GenerationRequest:
    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # PIL images, in placeholder order
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None  # ask for JSON matching this schema
    id: str | None = None  # the record id, for logs and errors

    @classmethod
    def simple(
        cls,
        prompt: str,
        images: list[Any] | None = None,
        *,
        system: str | None = None,
        sampling: Sampling | None = None,
        json_schema: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> "GenerationRequest":
        """One user turn: every image first, then the prompt text."""
        images = list(images or [])
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append({"role": "user", "content": content})
        return cls(messages=messages, images=images, sampling=sampling or Sampling(), json_schema=json_schema, id=id)


@dataclass
class GenerationResult:
    text: str | None = None
    error: str | None = None  # "kind: message", as in the error column
    parsed: Any = None  # the validated JSON object when a schema was asked for
    tokens_in: int = 0
    tokens_out: int = 0
    # this request's share of model time: a local batch's time divided by its requests; for a
    # server, the round trip shared among the requests in flight at each moment (ShareClock),
    # so the seconds of a run's rows add up to the time the model was busy on every backend
    seconds: float = 0.0
    latency: float | None = None  # how long this request took to answer (a whole local batch)
    retries: int = 0
    status: int | None = None  # last HTTP status for HTTP backends
    # why generation ended, in the OpenAI vocabulary: "stop" (a stop token), "length" (cut at
    # max_new_tokens), or whatever else the server said; None when the backend cannot tell
    finish_reason: str | None = None
    truncated: bool = False  # the reply was cut at the token limit (finish_reason == "length")
    # the loop guard (backends/loops.py): the loop a reply still ends in after its retries, and
    # which retry ("penalty", "sampling") got a reply that does not loop
    degenerate: Any = None
    loop_retry: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class LatencyHistogram:
    """Latencies in log-spaced buckets 1 % wide: percentiles to within 1 %, in memory that
    does not grow with the number of requests (a list of every latency grew by 32 bytes a
    request: 32 MB per million). Buckets are keyed by integer, so replicas' histograms merge
    by adding counts (the Ray executor sends ``buckets``)."""

    RATIO = 1.01
    FLOOR = 1e-6  # seconds; anything faster counts as this

    def __init__(self) -> None:
        import math

        self._log = math.log
        self._step = math.log(self.RATIO)
        self.buckets: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        b = int(round(self._log(max(float(seconds), self.FLOOR)) / self._step))
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1

    def merge(self, buckets: dict[Any, int]) -> None:
        for b, n in buckets.items():
            self.buckets[int(b)] = self.buckets.get(int(b), 0) + int(n)
            self.count += int(n)

    def percentile(self, p: float) -> float | None:
        """The latency at rank ``round(p * (count - 1))`` (as a sorted list would give), to 1 %."""
        if not self.count:
            return None
        rank = min(self.count - 1, max(0, int(round(p * (self.count - 1)))))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen > rank:
                return self.RATIO ** b
        return self.RATIO ** max(self.buckets)  # pragma: no cover - ranks are below count


@dataclass
class BackendUsage:
    """Counters a backend keeps for the end-of-run summary (bounded: no per-request list)."""

    requests: int = 0
    failures: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def __post_init__(self) -> None:
        import threading

        self._lock = threading.Lock()

    def add(self, r: GenerationResult) -> None:
        with self._lock:
            self._add(r)

    def _add(self, r: GenerationResult) -> None:
        self.requests += 1
        self.failures += 0 if r.ok else 1
        self.retries += r.retries
        self.tokens_in += r.tokens_in
        self.tokens_out += r.tokens_out
        self.latency.add(r.latency if r.latency is not None else r.seconds)

    def summary(self) -> dict[str, Any]:
        def pct(p: float) -> float | None:
            v = self.latency.percentile(p)
            return None if v is None else round(v, 4)

        return {
            "requests": self.requests,
            "failures": self.failures,
            "retries": self.retries,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "latency_p50": pct(0.50),
            "latency_p95": pct(0.95),
        }


class ShareClock:
    """Processor-sharing accounting: every moment is split equally among the requests in
    flight then. ``start()`` returns a token, ``stop(token)`` that request's share in
    seconds; the shares of all requests add up to the time at least one was in flight."""

    def __init__(self) -> None:
        import threading
        import time

        self._now = time.perf_counter
        self._lock = threading.Lock()
        self._n = 0
        self._s = 0.0
        self._last = self._now()

    def _advance(self) -> None:
        t = self._now()
        if self._n:
            self._s += (t - self._last) / self._n
        self._last = t

    def start(self) -> float:
        with self._lock:
            self._advance()
            self._n += 1
            return self._s

    def stop(self, token: float) -> float:
        with self._lock:
            self._advance()
            self._n -= 1
            return self._s - token


class Backend(abc.ABC):
    """A model that answers chat requests. Subclasses implement :meth:`_generate`; what the
    engine reads and calls besides is declared here with its default:

    - :meth:`load`: get ready before the first batch (a stage's ``setup`` calls it): load the
      weights, or check that the server answers; raises :class:`BackendUnavailable`;
    - :meth:`check`: that the model can be reached (``load`` calls it unless overridden);
    - ``preferred_batch_size``: requests per call it works best with (None: the engine's);
    - ``max_inflight_batches``: its batches that may be in flight at once (a server, vLLM: 2);
    - ``device_request``: the device a local model was asked for (None: not a local model).
    """

    name: str = "backend"
    model: str = ""
    revision: str | None = None
    preferred_batch_size: int | None = None
    max_inflight_batches: int = 1
    device_request: str | None = None

    def __init__(self) -> None:
        self.usage = BackendUsage()

    def load(self) -> Any:
        """Get ready before the first batch (idempotent): here, :meth:`check`."""
        return self.check()

    def check(self) -> Any:
        """Check that the model can be reached; raise :class:`BackendUnavailable` if not."""
        return None

    def _load(self) -> None:
        """A local backend's weight loading, called at most once by its :meth:`load` (the
        model pool counts its calls). Nothing to load here."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        from ..record import RunStop

        try:
            results = self._generate(requests)
        except RunStop:  # the run cannot go on (e.g. every endpoint down): the executor stops
            raise
        except Exception as exc:  # a backend bug must not kill the run
            from ..record import format_error

            results = [GenerationResult(error=format_error(exc, "backend")) for _ in requests]
        if len(results) != len(requests):
            raise AssertionError(f"{self.name} returned {len(results)} results for {len(requests)} requests")
        for r in results:
            self.usage.add(r)
        return results

    @abc.abstractmethod
    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        ...

    def describe(self) -> dict[str, Any]:
        """Model name and revision, for run.json and provenance."""
        return {"backend": self.name, "model": self.model, "revision": self.revision}

    def close(self) -> None:
        pass


def map_messages(
    messages: list[dict[str, Any]],
    images: list[Any],
    image_part: Callable[[Any], dict[str, Any]],
    passthrough: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """HF chat messages with ``{"type": "image"}`` placeholders -> a server's chat messages.

    The i-th placeholder becomes ``image_part(images[i])`` (a placeholder may also carry its
    own ``"image"``); parts whose type is in ``passthrough`` are kept as they are. Messages
    whose parts are all text become plain strings, which every server accepts. The number of
    placeholders must match the number of images."""
    out: list[dict[str, Any]] = []
    k = 0
    for m in messages:
        content = m.get("content")
        role = m.get("role", "user")
        if isinstance(content, str) or content is None:
            out.append({"role": role, "content": content or ""})
            continue
        parts: list[dict[str, Any]] = []
        for p in content:
            t = p.get("type")
            if t == "text":
                parts.append({"type": "text", "text": p.get("text", "")})
            elif t == "image":
                img = p.get("image")
                if img is None:
                    if k >= len(images):
                        raise ValueError(f"the messages have more image placeholders than the {len(images)} image(s) given")
                    img = images[k]
                    k += 1
                parts.append(image_part(img))
            elif t in passthrough:
                parts.append(p)
            else:
                raise ValueError(f"unsupported content part type {t!r}")
        if all(p["type"] == "text" for p in parts):
            out.append({"role": role, "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": role, "content": parts})
    if k != len(images):
        raise ValueError(f"{len(images)} image(s) given but the messages have {k} image placeholder(s)")
    return out
