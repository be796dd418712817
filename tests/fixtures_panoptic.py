"""Fixtures for the panoptic method: a scripted VLM that answers each PancapChain stage with
known text (duplicates, "none" variants, malformed items) and logs every request, and a
wrapper that records what a real backend was asked."""

from __future__ import annotations

import json
from typing import Any

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.methods.panoptic import prompts as P

# stage 1: a duplicate box, a box wholly in the top padding of a wide image's square (inside a
# square or tall one), a malformed item
LOCALIZE = ("<box>[[100, 200, 400, 700]]</box>, <box>[[100, 200, 400, 700]]</box>, "
            "<box>[[500, 300, 900, 800]]</box>, <box>[[0, 0, 999, 100]]</box>, <box>[[1, 2, three, 4]]</box>")
TOP_STRIP = (0, 0, 999, 100)
# stage 2: the same pair twice (and once more in capitals), an untagged item, a moved box
TAG = ("dog <box>[[100, 200, 400, 700]]</box>, dog <box>[[100, 200, 400, 700]]</box>, "
       "sofa <box>[[500, 300, 900, 800]]</box>, DOG <box>[[100, 200, 400, 700]]</box>, "
       "<box>[[5, 5, 9, 9]]</box>, lamp <box>[[610, 260, 660, 330]]</box>")
TAGGED = [("dog", (100, 200, 400, 700)), ("sofa", (500, 300, 900, 800)), ("lamp", (610, 260, 660, 330))]
# stage 3, in turn: a list (with a known pair and a repeat), "None", a "none" sentence, a list
DISCOVER = [
    "cup <box>[[620, 500, 680, 560]]</box>, sofa <box>[[500, 300, 900, 800]]</box>, "
    "cup <box>[[620, 500, 680, 560]]</box>",
    "None.",
    "There are no more entities in this image.",
    "None of them, but also cat <box>[[1, 1, 50, 50]]</box>",
]
MISSING = [("cup", (620, 500, 680, 560))]
CAPTION = ("A brown dog <box>[[100, 200, 400, 700]]</box> lies beside a grey sofa [[500, 300, 900, 800]] "
           "under a lamp <box>[[610, 260, 660, 330]]</box>, <box>[[1, x]]</box> in warm light.")
STAGE_PROMPTS = {"localize": P.LOCALIZE, "tag": P.TAG, "discover": P.DISCOVER, "caption": P.CAPTION,
                 "engine": P.ENGINE_CAPTION, "structured": P.STRUCTURED, "consistency": P.CONSISTENCY}


def request_text(req: GenerationRequest) -> str:
    content = req.messages[-1]["content"]
    return content if isinstance(content, str) else "\n".join(p["text"] for p in content if p["type"] == "text")


def stage_of(req: GenerationRequest) -> str:
    text = request_text(req)
    return next((s for s, p in STAGE_PROMPTS.items() if p in text), "other")


class PancapScript(Backend):
    """Answers by stage. ``discover`` answers cycle through :data:`DISCOVER` in request order
    (``self.discover_answer[record id]`` says which one a record got). Every request is kept:
    ``self.log[(record id, stage)]``. ``answers`` overrides a stage's text (str or callable)."""

    name = "scripted"

    def __init__(self, answers: dict[str, Any] | None = None, model: str = "scripted-vlm"):
        super().__init__()
        self.model = model
        self.answers = dict(answers or {})
        self.log: dict[tuple[str, str], GenerationRequest] = {}
        self.discover_answer: dict[str, str] = {}
        self.calls: dict[str, int] = {}

    def _answer(self, stage: str, req: GenerationRequest) -> GenerationResult:
        if stage in self.answers:
            a = self.answers[stage]
            a = a(req) if callable(a) else a
            if isinstance(a, GenerationResult):
                return a
            parsed = json.loads(a) if req.json_schema is not None else None
            return GenerationResult(text=a, parsed=parsed, tokens_out=len(a.split()))
        if stage == "discover":
            text = DISCOVER[len(self.discover_answer) % len(DISCOVER)]
            self.discover_answer[req.id] = text
        else:
            text = {"localize": LOCALIZE, "tag": TAG}.get(stage, CAPTION)
        return GenerationResult(text=text, tokens_out=len(text.split()))

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            stage = stage_of(r)
            self.log[(r.id, stage)] = r
            self.calls[stage] = self.calls.get(stage, 0) + 1
            out.append(self._answer(stage, r))
        return out


class Recording(Backend):
    """A real backend, with every request it was asked kept (``self.requests``)."""

    def __init__(self, inner: Backend):
        super().__init__()
        self.inner, self.name, self.model = inner, inner.name, inner.model
        self.requests: list[GenerationRequest] = []

    def load(self) -> None:
        getattr(self.inner, "load", lambda: None)()

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.requests.extend(requests)
        return self.inner.generate(requests)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def panoptic_method(cfg, backend: Backend | None = None, consistency: Backend | None = None):
    """``--method panoptic`` for ``cfg`` with ``backend`` as the VLM (and ``consistency`` as
    the consistency role's model), through the real method context."""
    from pixscribe.engine.context import BuildContext

    ctx = BuildContext(cfg)
    if backend is not None:
        ctx.pool.put(ctx.spec("vlm"), backend)
    if consistency is not None:
        ctx.pool.put(ctx.spec("consistency"), consistency)
    return ctx.build("panoptic")
