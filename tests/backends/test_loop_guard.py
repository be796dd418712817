"""The loop guard's rule and its retries (pixscribe.backends.loops), with known answers: which
replies loop and which near-misses do not, and what the two retries ask and keep. The real
code path (the CLI, a loopback server, a tiny transformers model) is in test_loop_guard_cli.py."""

from __future__ import annotations

import pytest

from pixscribe.backends.base import GenerationRequest, GenerationResult, Sampling
from pixscribe.backends.loops import (FREQUENCY_PENALTY, LOOP_SEED, LOOP_TEMPERATURE, REPETITION_PENALTY, find_loop,
                                      guard_loops, with_sampling)
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.backends.vllm_backend import sampling_params

LOOPS = {
    "a phrase three times": ("a cat on a mat a cat on a mat a cat on a mat", False, "a cat on a mat", 3.0),
    # the last token of a cut reply is left out (it may be a word cut short)
    "cut mid-phrase": ("A photo of " + "a cat on a mat " * 9 + "a cat on", True, "a cat on a mat", 9.4),
    "cut mid-word": ("A photo of " + "a cat on a mat " * 9 + "a cat on a ma", True, "a cat on a mat", 9.8),
    "one word": ("The sign says " + "stop " * 14, False, "stop", 14.0),
    "a sentence twice, cut": ("The man wears a red coat and a blue hat while he walks the dog. " * 2 + "The man",
                              True, None, 2.1),
    "a cut JSON list": ('{"objects": ["cat", "cat", "cat", "cat", "cat", "ca', True, None, None),
    "CJK": ("一只猫坐在垫子上，" * 3, False, None, 3.0),
    "punctuation between": ("a dog, a dog, a dog, a dog, a dog", False, "a dog ,", None),
}

NOT_LOOPS = {
    "numbered enumeration": (" ".join(f"{i}. a red car" for i in range(1, 60)), True),
    "enumeration of the same item": ("\n".join(f"- object {i}: chair" for i in range(1, 40)), False),
    "comma list": ("A kitchen with a table, chairs, a stove, a sink, a fridge, a kettle, mugs, plates, a window, "
                   "a clock, a plant, a towel, a bowl of apples, a radio and a cat.", False),
    "very very": ("A very very large dog and a very very small cat sit on a very very old sofa.", False),
    "laughter": ("The speech bubble says ha ha ha ha.", False),
    "repeated words in prose": ("The bus, the bus stop and the bus driver wait while the bus leaves the bus "
                                "station.", False),
    "a markdown table": ("| a | b | c | d | e | f | g | h |\n|---|---|---|---|---|---|---|---|\n| 1 | 2 | 3 | 4 | "
                         "5 | 6 | 7 | 8 |", False),
    "a complete JSON list of the same word": ('{"objects": ["cat", "cat", "cat", "cat", "cat", "cat"]}', False),
    "a loop left again": ("a cat on a mat " * 5 + "and then the cat leaves the room through the open door.", False),
    "twice, not cut": ("The man wears a red coat and a blue hat while he walks. " * 2, False),
    "a long cut description": ("A wide street at dusk with cars parked along both sides, shop signs lit in red "
                               "and green, people walking past a bakery, a cyclist waiting at the light, and a "
                               "bus pulling away from the stop while pigeons", True),
    "short repeat in a cut reply": ("The photo shows a dog. The dog", True),
    "empty": ("", True),
    "a long rule of punctuation, cut": ("|---" * 300 + "|--", True),  # no word in the unit
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_are_found(name):
    text, cut, unit, repeats = LOOPS[name]
    loop = find_loop(text, cut)
    assert loop is not None, name
    if unit is not None:
        assert loop.unit == unit
    if repeats is not None:
        assert loop.repeats == repeats


@pytest.mark.parametrize("name", sorted(NOT_LOOPS))
def test_near_misses_are_not_loops(name):
    text, cut = NOT_LOOPS[name]
    assert find_loop(text, cut) is None


def test_a_sentence_twice_is_a_loop_only_in_a_cut_reply():
    text = "The man wears a red coat and a blue hat while he walks. " * 2
    assert find_loop(text, False) is None and find_loop(text + "The", True) is not None


LOOPING = "a cat on a mat " * 10


def scripted(answer):
    """A generate function answering each request with ``answer(request)``; it keeps what it was asked."""
    asked: list[GenerationRequest] = []

    def generate(reqs):
        asked.extend(reqs)
        return [answer(q) for q in reqs]

    return generate, asked


def reply(text, cut=True, tokens=10):
    return GenerationResult(text=text, truncated=cut, finish_reason="length" if cut else "stop", tokens_out=tokens,
                            seconds=1.0)


def test_the_penalty_retry_fixes_and_replaces_the_request():
    gen, asked = scripted(lambda q: reply("A cat sits on a mat.", cut=False, tokens=6)
                          if q.sampling.repetition_penalty else reply(LOOPING))
    reqs = [GenerationRequest.simple("describe", sampling=Sampling(max_new_tokens=50)),
            GenerationRequest.simple("other", sampling=Sampling(max_new_tokens=50))]
    results = [reply(LOOPING), reply("Fine words here.", cut=False)]
    out = guard_loops(gen, reqs, results)
    assert out == {0: "penalty"} and len(asked) == 1  # only the looping one is asked again
    s = asked[0].sampling
    assert (s.repetition_penalty, s.frequency_penalty, s.temperature) == (REPETITION_PENALTY, FREQUENCY_PENALTY, 0.0)
    r = results[0]
    assert r.text == "A cat sits on a mat." and r.loop_retry == "penalty" and r.degenerate is None
    assert (r.retries, r.tokens_out, r.seconds) == (1, 16, 2.0)  # both attempts counted
    assert reqs[0] is asked[0]  # a later cut-reply retry asks with the penalty too
    assert results[1].loop_retry is None and results[1].retries == 0


def test_a_refused_penalty_is_left_out_of_the_sampling_retry():
    def answer(q):
        if q.sampling.repetition_penalty:
            return GenerationResult(error="http: 400 Unrecognized request argument supplied: frequency_penalty")
        return reply("A cat sits on a mat.", cut=False) if q.sampling.temperature > 0 else reply(LOOPING)

    gen, asked = scripted(answer)
    reqs = [GenerationRequest.simple("describe", sampling=Sampling(max_new_tokens=50))]
    results = [reply(LOOPING)]
    assert guard_loops(gen, reqs, results) == {0: "sampling"}
    sampled = asked[1].sampling
    assert sampled.repetition_penalty is None and sampled.frequency_penalty is None
    assert (sampled.temperature, sampled.seed) == (LOOP_TEMPERATURE, LOOP_SEED)
    assert results[0].loop_retry == "sampling" and results[0].retries == 2


def test_still_looping_keeps_the_first_reply_flagged():
    gen, asked = scripted(lambda q: reply("b " * 30))  # every retry loops too
    reqs = [GenerationRequest.simple("describe", sampling=Sampling(max_new_tokens=50, seed=7))]
    results = [reply(LOOPING)]
    assert guard_loops(gen, reqs, results) == {0: "degenerate"}
    assert [q.sampling.temperature for q in asked] == [0.0, LOOP_TEMPERATURE]
    assert asked[1].sampling.seed == 8 and asked[1].sampling.repetition_penalty == REPETITION_PENALTY
    r = results[0]
    assert r.text == LOOPING and r.degenerate.unit == "a cat on a mat" and r.retries == 2 and r.tokens_out == 30


def test_failed_replies_are_not_asked_again():
    gen, asked = scripted(lambda q: reply("x"))
    results = [GenerationResult(error="http: 503"), reply("a fine reply that ends well.")]
    assert guard_loops(gen, [GenerationRequest.simple("a"), GenerationRequest.simple("b")], results) == {}
    assert asked == []


def test_a_sampled_request_keeps_its_own_sampling_on_the_retry():
    req = GenerationRequest.simple("x", sampling=Sampling(temperature=1.1, top_p=0.5, seed=None))
    s = with_sampling(req, penalty=False).sampling
    assert (s.temperature, s.top_p, s.seed) == (1.1, 0.5, LOOP_SEED)


class _Params:
    def __init__(self, **kw):
        self.kw = kw


def test_each_backend_sends_its_own_penalty_field():
    from types import SimpleNamespace

    req = GenerationRequest.simple("x", sampling=Sampling(repetition_penalty=1.2, frequency_penalty=1.0))
    assert sampling_params(SimpleNamespace(SamplingParams=_Params), req).kw["repetition_penalty"] == 1.2
    plain = sampling_params(SimpleNamespace(SamplingParams=_Params), GenerationRequest.simple("x")).kw
    assert "repetition_penalty" not in plain
    b = OpenAIBackend("m", "http://127.0.0.1:9/v1")
    assert b._penalty(req.sampling) == {"frequency_penalty": 1.0}
    assert b._penalty(Sampling()) == {}
    b.model_entry = {"id": "m", "owned_by": "vllm"}
    assert b._penalty(req.sampling) == {"repetition_penalty": 1.2}
