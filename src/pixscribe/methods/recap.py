"""Recap (Recap-DataComp-1B): one VLM pass per image with a "describe in detail" prompt.

Columns: ``org_caption`` (the input's own caption, when it has one) and ``re_caption``.
"""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend, GenerationRequest, Sampling
from ..config import RECAP_PROMPT, RunConfig
from ..engine.stage import Method, Stage, register_method
from ..record import Record, prompt_sha


class RecapStage(Stage):
    """Asks the VLM to describe each image; writes ``field`` (default ``re_caption``)."""

    name = "recap"

    def __init__(
        self,
        backend: Backend,
        prompt: str = RECAP_PROMPT,
        sampling: Sampling | None = None,
        field: str = "re_caption",
    ):
        self.backend = backend
        self.prompt = prompt
        self.sampling = sampling or Sampling(max_new_tokens=128)
        self.field = field
        self.prompt_sha = prompt_sha(prompt, self.sampling.max_new_tokens, self.sampling.temperature, self.sampling.top_p)
        self.preferred_batch_size = getattr(backend, "preferred_batch_size", None)
        self.max_inflight_batches = int(getattr(backend, "max_inflight_batches", 1))

    def setup(self) -> None:
        load = getattr(self.backend, "load", None) or getattr(self.backend, "check", None)
        if load is not None:
            load()

    def __call__(self, records: list[Record]) -> list[Record]:
        reqs = [GenerationRequest.simple(self.prompt, [r.image], sampling=self.sampling, id=r.id) for r in records]
        results = self.backend.generate(reqs)
        info = self.backend.describe()
        for r, res in zip(records, results):
            if res.ok:
                r.set(
                    self.field,
                    res.text.strip(),
                    stage=self.name,
                    model=info.get("model"),
                    revision=info.get("revision"),
                    prompt_sha=self.prompt_sha,
                    seconds=res.seconds,
                    tokens_out=res.tokens_out,
                )
            else:
                r.model = r.model or info.get("model")
                r.fail(res.error or "generate: no text", "generate")
        return records

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, **self.backend.describe(), "prompt": self.prompt, "prompt_sha": self.prompt_sha,
                "max_new_tokens": self.sampling.max_new_tokens, "temperature": self.sampling.temperature}

    def summary(self) -> dict[str, Any]:
        return self.backend.usage.summary()

    def close(self) -> None:
        self.backend.close()


def sampling_from(config: RunConfig) -> Sampling:
    return Sampling(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)


def recap_method(backend: Backend, prompt: str = RECAP_PROMPT, sampling: Sampling | None = None) -> Method:
    return Method(
        name="recap",
        stages=[RecapStage(backend, prompt, sampling)],
        columns=["org_caption", "re_caption"],
        caption_field="re_caption",
        rename_inputs={"caption": "org_caption"},
    )


@register_method("recap")
def recap(config: RunConfig) -> Method:
    from ..backends import make_backend

    return recap_method(make_backend(config), config.resolved_prompt(RECAP_PROMPT), sampling_from(config))
