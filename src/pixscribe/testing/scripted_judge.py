"""A scripted PancapScore judge: a real :class:`~pixscribe.backends.base.Backend` whose
answers are known in advance, for tests with hand-computed scores and for the benchmark
(the metric's own cost without an LLM).

- An extraction request is answered with ``extractions[caption]`` (``NONE`` for a caption
  it was not given).
- A statement is answered by ``truth(description, statement)``; the default,
  :func:`keyword_truth`, says yes when every word of the statement (boxes and the
  ``the image:`` prefix removed) occurs in the description.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Mapping

from ..backends.base import Backend, GenerationRequest, GenerationResult
from ..metrics import pancap_prompts as P

_WORD = re.compile(r"[a-z0-9]+")
_STATEMENT = re.compile(r"^(\d+)\. (\".*\")$")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def keyword_truth(description: str, statement: str) -> bool:
    text = re.sub(r"\[\[.*?\]\]", " ", statement)
    text = text.removeprefix("the image:")
    return _words(text) <= _words(description)


def _text(req: GenerationRequest, role: str) -> str:
    for m in req.messages:
        if m["role"] == role:
            c = m["content"]
            return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
    return ""


def _description(user: str) -> str:
    first = user.split("\n", 1)[0]
    return json.loads(first.removeprefix("Description: "))


class ScriptedJudge(Backend):
    name = "scripted"

    def __init__(self, extractions: Mapping[str, str], truth: Callable[[str, str], bool] = keyword_truth,
                 model: str = "scripted-judge"):
        super().__init__()
        self.extractions = dict(extractions)
        self.truth = truth
        self.model = model
        self.calls = 0  # generate() calls
        self.requests: list[GenerationRequest] = []

    def _answer(self, req: GenerationRequest) -> str:
        user = _text(req, "user")
        description = _description(user)
        if _text(req, "system") == P.EXTRACT_SYSTEM:
            return self.extractions.get(description, "NONE")
        lines = []
        for line in user.split("Statements:\n", 1)[1].splitlines():
            m = _STATEMENT.match(line)
            if m:
                lines.append(f"{m.group(1)} | {'yes' if self.truth(description, json.loads(m.group(2))) else 'no'}")
        return "\n".join(lines)

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        self.requests.extend(requests)
        return [GenerationResult(text=self._answer(r)) for r in requests]


__all__ = ["ScriptedJudge", "keyword_truth"]
