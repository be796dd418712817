"""An LLM judge for model-based metrics: any pixscribe backend, its answers cached on disk.

A judge request's *key* is the sha256 of the judge's identity (backend, model, revision),
the chat messages and the sampling settings. Answers are kept in one SQLite file
(:class:`JudgeCache`), so rerunning a metric, or scoring a new candidate against
references the judge has already read, costs no generation for what was asked before.
Failed requests are never cached. On a rerun whose requests are all cached the model is
not even loaded.

The judge reads text only: a request with images is refused.

An answer cut at the token limit (``finish_reason: length``) is never read as the judge's
answer: its lines stop mid-list, so entities or answers would be missing without a word. It is
asked once more at ``cut_retry`` times its ``max_new_tokens`` (2; 1 or less: never), and if
cut again it fails as ``truncated: ...`` (not cached; PancapScore leaves that image out of its
means and names it among its errors).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..backends.base import Backend, GenerationRequest, GenerationResult
from ..backends.structured import redo_cut

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


def request_key(identity: dict[str, Any], req: GenerationRequest) -> str:
    if req.images:
        raise ValueError("the judge reads text only; this request carries images")
    blob = {"judge": identity, "messages": req.messages, "sampling": asdict(req.sampling), "schema": req.json_schema}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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
                 cut_retry: float = 2.0):
        self.backend = backend
        self.cut_retry = float(cut_retry)  # a cut answer is asked again at this many times its limit
        self.cache = cache
        self.identity = judge_identity(backend)
        self.chunk = int(chunk or getattr(backend, "preferred_batch_size", 0) or 32)
        self.asked = 0  # requests asked
        self.hits = 0  # ... answered from the cache
        self.misses = 0  # distinct requests generated
        self.failures = 0
        self._ready = False

    def ask(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        keys = [request_key(self.identity, r) for r in requests]
        self.asked += len(keys)
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        out: list[GenerationResult | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in cached:
                out[i] = GenerationResult(text=cached[k])
                self.hits += 1
            else:
                todo.setdefault(k, []).append(i)  # identical requests are generated once
        order = list(todo)
        for s in range(0, len(order), self.chunk):
            self._generate_chunk(order[s:s + self.chunk], todo, requests, out)
        return [r for r in out if r is not None]

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
                r.error = (f"truncated: the judge's answer was cut at max_new_tokens={q.sampling.max_new_tokens}"
                           + (f", and again at {int(q.sampling.max_new_tokens * self.cut_retry)} on the retry"
                              if self.cut_retry > 1 else "") + " (finish_reason=length); raise its token limit")
            self.misses += 1
            if r.ok:
                fresh[k] = r.text  # type: ignore[assignment]
            else:
                self.failures += 1
            for i in todo[k]:
                out[i] = r
        if fresh and self.cache is not None:
            self.cache.put_many(fresh)

    def _retry_limit(self, reqs: Sequence[GenerationRequest]) -> Any:
        if self.cut_retry <= 1:
            return lambda i: None
        return lambda i: int(reqs[i].sampling.max_new_tokens * self.cut_retry)

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "cache": str(self.cache.path) if self.cache else None,
                "asked": self.asked, "cache_hits": self.hits, "generated": self.misses, "failed": self.failures}

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.backend.close()


def make_judge(model: str, *, backend: str | None = None, base_urls: Sequence[str] = (),
               api_key_env: str | None = None, cache: str | Path | None = DEFAULT_CACHE,
               device: str = "auto", dtype: str = "auto") -> CachedJudge:
    """A cached judge from command-line style options: an OpenAI-compatible server when
    ``base_urls`` are given (unless ``backend`` says otherwise), else local transformers."""
    from ..backends import make_backend
    from ..config import RunConfig

    name = backend or ("openai" if base_urls else "transformers")
    cfg = RunConfig(backend=name, vlm=model, base_url=list(base_urls), api_key_env=api_key_env,
                    device=device, dtype=dtype)
    return CachedJudge(make_backend(cfg, role="vlm"), JudgeCache(cache) if cache else None)


__all__ = ["DEFAULT_CACHE", "CachedJudge", "JudgeCache", "judge_identity", "make_judge", "request_key"]
