"""What the OpenAI-backend tests share: the served model's name, a small JSON schema, a backend
with short retries against loopback servers, and requests from prompts."""

from __future__ import annotations

from pixscribe.backends.base import GenerationRequest
from pixscribe.backends.openai_backend import OpenAIBackend

MODEL = "pixscribe-test"
SCHEMA = {
    "title": "Caption",
    "type": "object",
    "properties": {"caption": {"type": "string"}, "objects": {"type": "array", "items": {"type": "string"}}},
    "required": ["caption", "objects"],
    "additionalProperties": False,
}


def backend(urls, **kw) -> OpenAIBackend:
    kw.setdefault("concurrency", 8)
    kw.setdefault("backoff_base", 0.005)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("request_timeout", 5.0)
    return OpenAIBackend(MODEL, urls if isinstance(urls, list) else [urls], **kw)


def reqs(prompts, **kw) -> list[GenerationRequest]:
    return [GenerationRequest.simple(p, id=str(i), **kw) for i, p in enumerate(prompts)]
