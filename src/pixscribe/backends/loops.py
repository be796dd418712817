"""Replies stuck in a repetition loop (``a cat on a mat a cat on a mat ...``): how one is
found, and the two retries that get a model out of it. Shared by every backend; the stages
call :func:`guard_loops` on their results (:mod:`pixscribe.stages.replies`).

**The rule** (:func:`find_loop`). The reply is split into tokens: a word (``\\w+``), one
CJK/kana character, or a run of one punctuation mark. It loops when its *tail* is one unit
of ``p`` tokens repeated back to back, the last copy maybe cut short (and the last token of a
reply cut at the token limit left out: it may be a word cut short), and the unit holds a
word, with the repeated tail at least :data:`MIN_SPAN` tokens long and either

- at least :data:`MIN_REPEATS` copies (any reply), or
- for a reply cut at the token limit, at least two copies covering at least half the reply
  (a cut reply that is all repetition, whatever the unit's length).

So ``very very`` or ``ha ha ha ha`` (short), an enumeration (``1. a red car 2. a blue car``:
the numbers and the items differ), a comma list of different things, a markdown table rule
(``|---|---|``: no word in the unit) and a complete JSON list (its closing ``]}`` ends the
tail) are not loops; a phrase said three times and a cut reply that ends in one are. Only
the tail is read: a repeated passage that the model left again is not a loop.

**The retries** (:func:`guard_loops`): a looping reply is asked again once with a repetition
penalty (:func:`with_penalty`: ``repetition_penalty`` for transformers and vLLM,
``frequency_penalty`` on other OpenAI-compatible servers, see each backend); if the reply
still loops or the penalty was refused (an error), once more with sampling
(:func:`with_sampling`, a fixed seed, so a rerun asks the same). If that loops too, the
first reply is kept with ``result.degenerate`` set, and the stage decides (keep it flagged
or fail the row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from .base import GenerationRequest, GenerationResult
from .structured import merge_results

MIN_SPAN = 12  # tokens the repeated tail must cover
MIN_REPEATS = 3  # copies of the unit at the tail of any reply
REPETITION_PENALTY = 1.2  # transformers / vLLM, multiplicative (CTRL's value; 1.0 = off)
FREQUENCY_PENALTY = 1.0  # OpenAI-compatible servers, additive (0 = off, range -2..2)
LOOP_TEMPERATURE = 0.8
LOOP_TOP_P = 0.95
LOOP_SEED = 0  # the sampling retry's seed when the request has none (a rerun asks the same)

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|\w+|([^\w\s])\1*", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Loop:
    unit: str  # the repeated tokens, space-joined
    period: int  # tokens in the unit
    repeats: float  # copies at the tail (the last one maybe partial)

    def describe(self) -> str:
        unit = self.unit if len(self.unit) <= 60 else self.unit[:57] + "..."
        return f"{unit!r} repeated {self.repeats:g} times at its end"

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit[:200], "repeats": self.repeats}


def tokens(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(text.lower())]


def _is_word(tok: str) -> bool:
    return tok[0].isalnum() or tok[0] == "_" or bool(_CJK.match(tok))


def _tail_span(toks: list[str], p: int) -> int:
    """Tokens at the end of ``toks`` that repeat with period ``p`` (the unit itself included)."""
    n, m = len(toks), 0
    while m < n - p and toks[n - 1 - m] == toks[n - 1 - m - p]:
        m += 1
    return m + p


def find_loop(text: str | None, cut: bool = False) -> Loop | None:
    """The loop at the tail of ``text`` (see the module doc for the rule), or None.
    ``cut``: the reply was cut at the token limit."""
    toks = tokens(text or "")
    if cut:  # the last token of a cut reply may be a word cut short ("a cat on a ma")
        toks = toks[:-1]
    n = len(toks)
    wordless: list[int] = []  # periods whose unit holds no word: their multiples hold none either
    for p in range(1, n // 2 + 1):
        if any(p % q == 0 for q in wordless):
            continue
        span = _tail_span(toks, p)
        if span < MIN_SPAN or span < 2 * p:
            continue
        unit = toks[n - span : n - span + p]
        if not any(_is_word(t) for t in unit):
            wordless.append(p)
            continue
        if span >= MIN_REPEATS * p or (cut and 2 * span >= n):
            return Loop(" ".join(unit), p, round(span / p, 1))
    return None


def with_penalty(req: GenerationRequest) -> GenerationRequest:
    """``req`` with a repetition penalty (each backend sends the one its model honours)."""
    s = replace(req.sampling, repetition_penalty=REPETITION_PENALTY, frequency_penalty=FREQUENCY_PENALTY)
    return replace(req, sampling=s)


def with_sampling(req: GenerationRequest, penalty: bool = True) -> GenerationRequest:
    """``req`` sampled (at least :data:`LOOP_TEMPERATURE`) with a fixed seed; with the
    penalty too unless the server refused it."""
    s = req.sampling
    seed = s.seed + 1 if s.seed is not None else LOOP_SEED
    s = replace(s, temperature=max(s.temperature, LOOP_TEMPERATURE), top_p=s.top_p if not s.greedy else LOOP_TOP_P,
                seed=seed)
    sampled = replace(req, sampling=s)
    return with_penalty(sampled) if penalty else sampled


def _absorb(kept: GenerationResult, other: GenerationResult) -> GenerationResult:
    """``kept`` with the counters of ``other`` (an attempt of the same request) added."""
    return merge_results(other, kept)


def _looping(res: GenerationResult) -> Loop | None:
    return find_loop(res.text, res.truncated) if res.ok else None


def guard_loops(generate: Callable[[list[GenerationRequest]], list[GenerationResult]],
                requests: list[GenerationRequest], results: list[GenerationResult]) -> dict[int, str]:
    """Find the looping replies in ``results`` and ask them again (penalty, then sampling).

    A fixed reply replaces the old in ``results`` (counters merged, ``loop_retry`` set to
    ``"penalty"`` or ``"sampling"``) and the request that got it replaces the old in
    ``requests`` (so a later retry of a cut reply asks the same way); one that still loops
    keeps its first reply with ``degenerate`` set. Returns ``{index: "penalty" | "sampling" |
    "degenerate"}`` for the looping ones."""
    found = {i: loop for i, res in enumerate(results) if (loop := _looping(res))}
    if not found:
        return {}
    out: dict[int, str] = {}
    tries: dict[int, GenerationResult] = {}
    refused: set[int] = set()
    for step in ("penalty", "sampling"):
        todo = [i for i in found if i not in out]
        if not todo:
            break
        asks = [with_penalty(requests[i]) if step == "penalty" else with_sampling(requests[i], i not in refused)
                for i in todo]
        for i, ask, res in zip(todo, asks, generate(asks)):
            if not res.ok:
                refused.add(i)
            if res.ok and not _looping(res):
                res.loop_retry = step
                for earlier in (results[i], tries.get(i)):
                    if earlier is not None:
                        _absorb(res, earlier)
                results[i], requests[i], out[i] = res, ask, step
            else:
                tries[i] = _absorb(tries[i], res) if i in tries else res
    for i, loop in found.items():
        if i not in out:
            results[i].degenerate = loop
            _absorb(results[i], tries[i])
            out[i] = "degenerate"
    return out


def tally(outcomes: Sequence[str]) -> dict[str, int]:
    """The summary's counters for the outcomes of :func:`guard_loops` (every degenerate one
    counted as kept: a stage that fails the row moves it to ``loops_errors``)."""
    if not outcomes:
        return {}
    n = {k: sum(1 for o in outcomes if o == k) for k in ("penalty", "sampling", "degenerate")}
    return {"loops_detected": len(outcomes), "loops_fixed_by_penalty": n["penalty"],
            "loops_fixed_by_sampling": n["sampling"], "loops_kept_flagged": n["degenerate"], "loops_errors": 0}


__all__ = ["FREQUENCY_PENALTY", "Loop", "REPETITION_PENALTY", "find_loop", "guard_loops", "tally",
           "tokens", "with_penalty", "with_sampling"]
