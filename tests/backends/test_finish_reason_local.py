"""finish_reason / truncated on the local backends: transformers with a real tiny Qwen2
(no stop token within max_new_tokens = truncated), and vLLM offline's CompletionOutput
finish_reason carried over (with a stand-in vllm module: vLLM needs a GPU)."""

from __future__ import annotations

import types

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.transformers_backend import TransformersBackend
from pixscribe.backends.vllm_backend import VLLMBackend
from pixscribe.config import RunConfig


def test_transformers_flags_a_reply_without_a_stop_token_as_truncated(tiny_llm):
    b = TransformersBackend.from_config(RunConfig(vlm=str(tiny_llm), device="cpu", dtype="fp32"))
    short, long_ = b.generate([
        GenerationRequest.simple("Hi.", sampling=Sampling(max_new_tokens=2)),
        GenerationRequest.simple("Hi.", sampling=Sampling(max_new_tokens=200)),
    ])
    assert short.ok and short.truncated and short.finish_reason == "length" and short.tokens_out == 2
    # the same prompt with room to finish: it stops on its own (this tiny model emits EOS early)
    assert long_.ok and long_.finish_reason == "stop" and not long_.truncated
    assert long_.tokens_out < 200


def test_vllm_offline_carries_finish_reason():
    mod = types.ModuleType("vllm")

    class LLM:
        def __init__(self, **kw):
            pass

        def chat(self, convs, sampling_params=None, use_tqdm=True):
            reasons = ["stop", "length"]
            return [
                types.SimpleNamespace(
                    prompt_token_ids=[1, 2],
                    outputs=[types.SimpleNamespace(text=f"reply {i}", token_ids=[5, 6], finish_reason=reasons[i])],
                )
                for i in range(len(convs))
            ]

    mod.LLM = LLM
    mod.SamplingParams = lambda **kw: kw
    mod.sampling_params = types.ModuleType("vllm.sampling_params")
    b = VLLMBackend("m", vllm_module=mod)
    done, cut = b.generate([GenerationRequest.simple("a"), GenerationRequest.simple("b")])
    assert done.finish_reason == "stop" and not done.truncated
    assert cut.ok and cut.finish_reason == "length" and cut.truncated
