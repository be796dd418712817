"""The judged-metric engine: any pixscribe backend as a metric's judge, its answers cached,
every exchange written to a transcript that replays the run exactly.

A judge request's *key* is the sha256 of the judge's identity (backend, model, revision),
the chat messages, the sha256 of each image, the sampling settings and the JSON schema.
An answer is looked up, in order, in

1. a **transcript** being replayed (``--judge-replay``): the answers of an earlier run,
   so the rerun is exact and free; with no ``--judge`` the transcript's own judge is the
   judge (:class:`ReplayBackend`), and a request it does not hold fails as a request;
2. the **cache** (:class:`JudgeCache`, one SQLite file), so rerunning a metric, or scoring
   a new candidate against references the judge has already read, costs nothing for what
   was asked before;
3. the judge itself (loaded or checked only before the first request that needs it).

Every answer a run used is kept and written with :meth:`CachedJudge.write_transcript`
(:class:`Transcript`'s format: JSON lines, a header naming the judge, then one exchange
per line sorted by key); its sha256 goes into the report. Failed requests are never
cached nor written. Images (a VLM judge, CapArena) are hashed into the key; the transcript
keeps their hashes, not the pixels.

An answer cut at the token limit (``finish_reason: length``) is never read as the judge's
answer: its lines stop mid-list, so entities or answers would be missing without a word. It is
asked once more at ``cut_retry`` times its ``max_new_tokens`` (2; 1 or less: never), and if
cut again it fails as ``truncated: ...`` (not cached nor written; PancapScore leaves that image
out of its means and names it among its errors).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..backends.base import Backend, GenerationRequest, GenerationResult
from ..backends.structured import redo_cut
from ..errors import ConfigError, InputFileError

DEFAULT_CACHE = Path("~/.cache/pixscribe/judge.sqlite3")


class JudgeCache:
    """``key -> answer text`` in a SQLite file (created with its folder on first use)."""

    def __init__(self, path: str | Path = DEFAULT_CACHE):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path))
        # a cache: write-ahead log without an fsync per commit (a crash may lose the last answers, never the file)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, created REAL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        ks = list(dict.fromkeys(keys))
        for s in range(0, len(ks), 500):  # SQLite's bound on query parameters
            chunk = ks[s:s + 500]
            q = f"SELECT key, text FROM answers WHERE key IN ({','.join('?' * len(chunk))})"
            out.update(self._db.execute(q, chunk).fetchall())
        return out

    def put_many(self, items: dict[str, str]) -> None:
        now = time.time()
        with self._db:  # one transaction
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                                 [(k, v, now) for k, v in items.items()])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def judge_identity(backend: Backend) -> dict[str, Any]:
    """What names the judge in a cache key: backend, model and the revision asked for."""
    rev = getattr(backend, "requested_revision", None) or backend.revision
    return {"backend": backend.name, "model": backend.model, "revision": rev}


def image_hash(image: Any) -> str:
    """sha256 of an image's pixels (mode, size and raw bytes of a PIL image), or of raw bytes."""
    h = hashlib.sha256()
    if isinstance(image, (bytes, bytearray)):
        h.update(bytes(image))
    else:
        h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def exchange_of(req: GenerationRequest) -> dict[str, Any]:
    """What a request asks, as the transcript writes it (images as their hashes)."""
    return {"messages": req.messages, "images": [image_hash(i) for i in req.images],
            "sampling": req.sampling.to_dict(), "schema": req.json_schema}


def request_key(identity: dict[str, Any], req: GenerationRequest) -> str:
    blob = {"judge": identity, "messages": req.messages, "sampling": req.sampling.to_dict(), "schema": req.json_schema}
    if req.images:  # text-only keys are unchanged, so caches written before images were allowed stay valid
        blob["images"] = [image_hash(i) for i in req.images]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


TRANSCRIPT_FORMAT = "pixscribe-judge-transcript"


class TranscriptError(InputFileError):
    kind = "TranscriptError"  # as error rows and messages named it before it joined the family


class Transcript:
    """The judge exchanges of a run: ``judge`` (identity) and ``answers`` (key -> exchange with ``answer``)."""

    def __init__(self, judge: dict[str, Any], exchanges: dict[str, dict[str, Any]] | None = None):
        self.judge = dict(judge)
        self.exchanges = dict(exchanges or {})

    @classmethod
    def read(cls, path: str | Path) -> "Transcript":
        p = Path(path)
        try:
            lines = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        except FileNotFoundError:
            raise TranscriptError(f"--judge-replay {p}: no such file") from None
        except json.JSONDecodeError as exc:
            raise TranscriptError(f"--judge-replay {p}: not a judge transcript (line {exc.lineno}: {exc.msg})") from exc
        if not lines or lines[0].get("format") != TRANSCRIPT_FORMAT:
            raise TranscriptError(f"--judge-replay {p}: not a judge transcript (no {TRANSCRIPT_FORMAT!r} header)")
        ex = {}
        for n, e in enumerate(lines[1:], 2):
            if not isinstance(e.get("key"), str) or not isinstance(e.get("answer"), str):
                raise TranscriptError(f"--judge-replay {p}:{n}: an exchange needs 'key' and 'answer'")
            ex[e["key"]] = e
        return cls(lines[0]["judge"], ex)

    def to_bytes(self) -> bytes:
        head = {"format": TRANSCRIPT_FORMAT, "version": 1, "judge": self.judge}
        rows = [head] + [{"key": k, **{f: v for f, v in self.exchanges[k].items() if f != "key"}}
                         for k in sorted(self.exchanges)]
        return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()

    def write(self, path: str | Path) -> dict[str, Any]:
        """Write atomically; returns ``{"path", "sha256", "exchanges"}`` for the report."""
        from ..io.writers import atomic_write_bytes

        data = self.to_bytes()
        atomic_write_bytes(Path(path), data)
        return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "exchanges": len(self.exchanges)}


class ReplayBackend(Backend):
    """A judge that only answers from a transcript: the recorded judge's identity, no model."""

    def __init__(self, transcript: Transcript):
        super().__init__()
        self.transcript = transcript
        self.name = str(transcript.judge.get("backend"))
        self.model = str(transcript.judge.get("model"))
        self.revision = transcript.judge.get("revision")

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        ident = judge_identity(self)
        out = []
        for r in requests:
            e = self.transcript.exchanges.get(request_key(ident, r))
            out.append(GenerationResult(text=e["answer"]) if e else GenerationResult(
                error="replay: this request is not in the transcript (its prompt, sampling or inputs changed)"))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "revision": self.revision, "replay_only": True}


def _ensure_ready(backend: Backend) -> None:
    """Load a local model or check a server before the first uncached request, so an
    unreachable judge stops the metric with its reason instead of failing every request."""
    for name in ("load", "check"):
        fn = getattr(backend, name, None)
        if callable(fn):
            fn()
            return


class CachedJudge:
    """A backend behind the cache: :meth:`ask` answers from the cache and generates the rest."""

    def __init__(self, backend: Backend, cache: JudgeCache | None = None, chunk: int | None = None,
                 replay: Transcript | None = None, cut_retry: float = 2.0):
        self.backend = backend
        self.cut_retry = float(cut_retry)  # a cut answer is asked again at this many times its limit
        self.cache = cache
        self.identity = judge_identity(backend)
        self.replay = replay if replay is not None and replay.judge == self.identity else None
        self.replay_judge = replay.judge if replay is not None else None
        self.chunk = int(chunk or getattr(backend, "preferred_batch_size", 0) or 32)
        self.asked = 0  # requests asked
        self.replayed = 0  # ... answered from the transcript being replayed
        self.hits = 0  # ... answered from the cache
        self.misses = 0  # distinct requests generated
        self.failures = 0
        self.used = Transcript(self.identity)  # every answer this run used: what write_transcript writes
        self._ready = isinstance(backend, ReplayBackend)

    def ask(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        keys = [request_key(self.identity, r) for r in requests]
        self.asked += len(keys)
        replayed = {k: e["answer"] for k in keys if (e := self._replayed(k)) is not None}
        cached = self.cache.get_many([k for k in keys if k not in replayed]) if self.cache is not None else {}
        out: list[GenerationResult | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in replayed or k in cached:
                out[i] = GenerationResult(text=replayed.get(k, cached.get(k)))
                self.replayed += k in replayed
                self.hits += k not in replayed
                self._keep(k, requests[i], out[i].text)  # type: ignore[union-attr]
            else:
                todo.setdefault(k, []).append(i)  # identical requests are generated once
        order = list(todo)
        for s in range(0, len(order), self.chunk):
            self._generate_chunk(order[s:s + self.chunk], todo, requests, out)
        return [r for r in out if r is not None]

    def _replayed(self, key: str) -> dict[str, Any] | None:
        return self.replay.exchanges.get(key) if self.replay is not None else None

    def _keep(self, key: str, req: GenerationRequest, answer: str) -> None:
        if key not in self.used.exchanges:
            self.used.exchanges[key] = {**exchange_of(req), "answer": answer}

    def write_transcript(self, path: str | Path) -> dict[str, Any]:
        """Write every exchange this judge answered (from the transcript, the cache or the model)."""
        return self.used.write(path)

    def _generate_chunk(self, ks: list[str], todo: dict[str, list[int]], requests: Sequence[GenerationRequest],
                        out: list[GenerationResult | None]) -> None:
        if not self._ready:
            _ensure_ready(self.backend)
            self._ready = True
        reqs = [requests[todo[k][0]] for k in ks]
        results = self.backend.generate(reqs)
        redo_cut(self.backend.generate, reqs, results, self._retry_limit(reqs))
        fresh: dict[str, str] = {}
        for k, q, r in zip(ks, reqs, results):
            if r.ok and r.truncated:  # cut again: never read as the whole answer
                r.error = self._cut_message(q)
            self.misses += 1
            if r.ok:
                fresh[k] = r.text  # type: ignore[assignment]
                self._keep(k, requests[todo[k][0]], r.text)  # type: ignore[arg-type]
            else:
                self.failures += 1
            for i in todo[k]:
                out[i] = r
        if fresh and self.cache is not None and not isinstance(self.backend, ReplayBackend):
            self.cache.put_many(fresh)

    def _retry_limit(self, reqs: Sequence[GenerationRequest]) -> Any:
        if self.cut_retry <= 1:
            return lambda i: None
        return lambda i: int(reqs[i].sampling.max_new_tokens * self.cut_retry)

    def _cut_message(self, q: GenerationRequest) -> str:
        n = q.sampling.max_new_tokens
        again = f", and again at {int(n * self.cut_retry)} on the retry" if self.cut_retry > 1 else ""
        return f"truncated: the judge's answer was cut at max_new_tokens={n}{again} (finish_reason=length); raise its token limit"

    def describe(self) -> dict[str, Any]:
        d = {**self.backend.describe(), "cache": str(self.cache.path) if self.cache else None,
             "asked": self.asked, "replayed": self.replayed, "cache_hits": self.hits, "generated": self.misses,
             "failed": self.failures}
        if self.replay_judge is not None and self.replay is None:
            d["replay_ignored"] = f"the transcript's judge {self.replay_judge} is not this judge"
        return d

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.backend.close()


def make_judge(model: str | None, *, backend: str | None = None, base_urls: Sequence[str] = (),
               api_key_env: str | None = None, cache: str | Path | None = DEFAULT_CACHE,
               device: str = "auto", dtype: str = "auto", replay: str | Path | None = None) -> CachedJudge:
    """A cached judge from command-line style options: an OpenAI-compatible server when
    ``base_urls`` are given (unless ``backend`` says otherwise), else local transformers.
    ``replay``: a transcript answered from first; with no ``model``, it is the only judge."""
    transcript = Transcript.read(replay) if replay else None
    if not model:
        if transcript is None:
            raise ConfigError("a judged metric needs a judge: --judge MODEL (a local model, or a served one with "
                              "--judge-base-url URL), or --judge-replay TRANSCRIPT")
        return CachedJudge(ReplayBackend(transcript), None, replay=transcript)
    from ..api.models import resolve_spec
    from ..backends import make_backend
    from ..config import RunConfig

    name = backend or ("openai" if base_urls else "transformers")
    cfg = RunConfig(backend=name, vlm=model, base_url=list(base_urls), api_key_env=api_key_env,
                    device=device, dtype=dtype)
    judge = make_backend(resolve_spec(cfg, "vlm"), cfg)
    return CachedJudge(judge, JudgeCache(cache) if cache else None, replay=transcript)


__all__ = ["DEFAULT_CACHE", "CachedJudge", "JudgeCache", "ReplayBackend", "Transcript", "TranscriptError",
           "exchange_of", "image_hash", "judge_identity", "make_judge", "request_key"]
