"""Several captions per image in one pass: every prompt (``recap.prompts``) times ``recap.n``
samples, all of an image's requests in one call to the backend.

The image is decoded once (the engine decodes a record once, whatever its stages ask of it)
and each request is ``GenerationRequest.simple(prompt, [image])``: the same image object
first, no system message, the prompt's text last. So every backend sees a shared prefix: an
OpenAI-compatible server gets one JPEG encoded once per image (``JpegMemo``) and a prefix
cache (vLLM's) serves the image part of the later requests; vLLM offline hashes the image
the same way; transformers runs them in one padded batch (one sampling group).

Requests go image by image (an image's prompts and samples next to each other), so a server
sees an image's requests together.

Errors: a request that fails (a server error, a refused input) leaves its column (or its
sample) null and its error in ``re_caption_errors`` (``{"long": "generate: ..."}``, a
sample as ``"long#2"``; the one default prompt's as ``"re_caption#2"``), counted in the stage's summary; the row fails only when every
request of it failed. A cut reply is kept, flagged ``truncated`` in its provenance, as the
single-prompt stage keeps it.
"""

from __future__ import annotations

from typing import Any

from ...backends.base import GenerationRequest, GenerationResult
from ...record import Record, prompt_sha
from ...stages import GenerateStage
from ...stages.replies import row_error
from .prompts import column

ERRORS = "re_caption_errors"


def samples_column(name: str) -> str:
    return column(name) + "_samples"


def provided(prompts: dict[str, str], n: int) -> list[str]:
    """The fields the stage sets: each prompt's caption (n = 1) or samples (n > 1), then the errors."""
    return [samples_column(p) if n > 1 else column(p) for p in prompts] + [ERRORS]


class CaptionsStage(GenerateStage):
    """The recap stage asking ``prompts`` (name -> prompt) ``n`` times each of every image."""

    def __init__(self, name: str, backend: Any, options: dict[str, Any], prompts: dict[str, str], n: int,
                 identity: dict[str, Any] | None = None):
        super().__init__(name, backend, options, provides=tuple(provided(prompts, n)), identity=identity)
        self.prompts, self.n = dict(prompts), int(n)
        self.shas = {p: prompt_sha(text, self.sampling.max_new_tokens, self.sampling.temperature, self.sampling.top_p)
                     for p, text in self.prompts.items()}
        self.counts = {"requests": 0, "failed_requests": 0, "rows_with_errors": 0}

    def requests_of(self, rec: Record) -> list[GenerationRequest]:
        """An image's requests: each prompt, each sample; the same image object first in each."""
        return [GenerationRequest.simple(text, [rec.image], sampling=self.sampling, id=rec.id)
                for text in self.prompts.values() for _ in range(self.n)]

    def __call__(self, records: list[Record]) -> list[Record]:
        per = len(self.prompts) * self.n
        reqs = [q for r in records for q in self.requests_of(r)]
        results = self.backend.generate(reqs)
        info = self.backend.describe()
        for i, r in enumerate(records):
            self._keep_all(r, results[i * per:(i + 1) * per], info)
        return records

    def _keep_all(self, r: Record, results: list[GenerationResult], info: dict[str, Any]) -> None:
        errors: dict[str, str] = {}
        values: dict[str, list[str | None]] = {}
        for j, res in enumerate(results):
            name, k = list(self.prompts)[j // self.n], j % self.n
            self.counts["requests"] += 1
            if res.ok:
                values.setdefault(name, []).append(res.text.strip())
            else:
                self.counts["failed_requests"] += 1
                values.setdefault(name, []).append(None)
                key = name or column(name)  # the one default prompt: "re_caption#2"
                errors[key if self.n == 1 else f"{key}#{k + 1}"] = row_error(res.error)
        if len(errors) == len(results):
            r.model = r.model or info.get("model")
            r.error = r.error or next(iter(errors.values()))
            return
        share = sum(res.seconds for res in results)
        for name, got in values.items():
            mine = results[list(self.prompts).index(name) * self.n:][: self.n]
            field = samples_column(name) if self.n > 1 else column(name)
            cut = [k + 1 for k, res in enumerate(mine) if res.ok and res.truncated]
            r.set(field, got if self.n > 1 else got[0], stage=self.name, model=info.get("model"),
                  revision=info.get("revision"), prompt_sha=self.shas[name],
                  seconds=share if name == next(iter(self.prompts)) else None,
                  tokens_out=sum(res.tokens_out for res in mine),
                  truncated=(cut if self.n > 1 else True) if cut else None)
        self.counts["rows_with_errors"] += 1 if errors else 0
        r.set(ERRORS, errors or None, stage=self.name)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prompts": self.prompts, "n": self.n, "prompt_shas": self.shas}

    def summary(self) -> dict[str, Any]:
        return dict(self.counts)


__all__ = ["ERRORS", "CaptionsStage", "provided", "samples_column"]
