"""TransformersBackend on tiny real-architecture models: batching with left padding,
text-only requests, per-request errors, JSON schema handling and unavailable models."""

from __future__ import annotations

import io
import shutil

import pytest
import torch
from PIL import Image

from pixscribe.api import resolve_spec
from pixscribe.backends import BackendUnavailable, GenerationRequest, Sampling, make_backend
from pixscribe.backends.transformers_backend import TransformersBackend, resolve_dtype
from pixscribe.config import RunConfig
from pixscribe.testing import sample_photo

PROMPTS = [
    "Describe.",
    "Describe the image in detail please.",
    "What is in this photograph of a table, a cat and a cup of coffee on a sunny day?",
]
PHOTOS = ["astronaut", "chelsea", "rocket"]
SAMPLING = Sampling(max_new_tokens=10)


@pytest.fixture(scope="module")
def backends(tiny_vlms, tiny_llm):
    out = {name: TransformersBackend(str(path)).load() for name, path in tiny_vlms.items()}
    out["text_llm"] = TransformersBackend(str(tiny_llm)).load()
    return out


@pytest.fixture(scope="module")
def photos():
    return {n: sample_photo(n) for n in PHOTOS}


def _image_requests(photos):
    return [
        GenerationRequest.simple(p, [photos[n]], sampling=SAMPLING, id=n) for p, n in zip(PROMPTS, PHOTOS)
    ]


def _truncated_jpeg():
    buf = io.BytesIO()
    sample_photo("coffee").save(buf, "JPEG", quality=90)
    im = Image.open(io.BytesIO(buf.getvalue()[:1500]))  # header reads fine, pixels fail at load time
    assert im.width > 0
    return im


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_batch_equals_each_request_alone(backends, photos, family):
    be = backends[family]
    assert be.is_vlm and be.padding_side == "left"
    reqs = _image_requests(photos)
    batched = be.generate(reqs)
    assert len(batched) == 3
    for r in batched:
        assert r.ok, r.error
        assert isinstance(r.text, str)
        assert 1 <= r.tokens_out <= SAMPLING.max_new_tokens
        assert r.seconds > 0 and r.retries == 0
    # prompts differ in length, so the batch really was padded; padding is not counted as input
    tokens_in = [r.tokens_in for r in batched]
    assert tokens_in[0] < tokens_in[1] < tokens_in[2]
    alone = [be.generate([q])[0] for q in reqs]
    # greedy decoding of a left-padded batch must equal each request run alone
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.tokens_in for r in batched] == [r.tokens_in for r in alone]
    assert [r.tokens_out for r in batched] == [r.tokens_out for r in alone]


def test_right_padding_would_be_caught(backends, photos):
    """The equality above can fail: with right padding the short prompts go wrong."""
    be = backends["llava"]
    reqs = _image_requests(photos)
    alone = [be.generate([q])[0].text for q in reqs]
    be.padding_side = "right"
    try:
        batched = [r.text for r in be.generate(reqs)]
    finally:
        be.padding_side = "left"
    assert batched[2] == alone[2]  # the longest prompt has no padding
    assert batched[:2] != alone[:2]


def test_max_batch_size_chunks_give_same_results(tiny_vlms, backends, photos):
    small = TransformersBackend(str(tiny_vlms["idefics3"]), max_batch_size=2)
    reqs = _image_requests(photos)
    assert [r.text for r in small.generate(reqs)] == [r.text for r in backends["idefics3"].generate(reqs)]


@pytest.mark.parametrize("family", ["llava", "idefics3", "text_llm"])
def test_text_only_requests(backends, family):
    be = backends[family]
    reqs = [
        GenerationRequest.simple("Rewrite: a cat on a table.", sampling=SAMPLING),
        GenerationRequest.simple("Make this caption shorter: a man riding a red motorcycle.", system="Be brief.", sampling=SAMPLING),
    ]
    res = be.generate(reqs)
    assert all(r.ok and isinstance(r.text, str) for r in res), [r.error for r in res]
    assert res[0].tokens_in < res[1].tokens_in
    assert [r.text for r in res] == [be.generate([q])[0].text for q in reqs]


def test_text_llm_is_loaded_as_causal_lm(backends):
    be = backends["text_llm"]
    assert be.is_vlm is False
    assert type(be.hf_model).__name__ == "Qwen2ForCausalLM"
    # an image request to a text-only model is a per-request error, not a crash or a silent drop
    res = be.generate([GenerationRequest.simple("Describe.", [sample_photo("coffee")], sampling=SAMPLING)])
    assert res[0].error == f"input: model {be.model!r} is a text-only model and cannot read images"


def test_mixed_batch_with_text_only_and_image_requests(backends, photos):
    be = backends["llava"]
    reqs = [
        GenerationRequest.simple("Describe.", [photos["astronaut"]], sampling=SAMPLING),
        GenerationRequest.simple("Rewrite: a cat.", sampling=SAMPLING),
    ]
    res = be.generate(reqs)
    assert all(r.ok for r in res)
    assert [r.text for r in res] == [be.generate([q])[0].text for q in reqs]


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_broken_images_fail_per_request(backends, photos, family):
    be = backends[family]
    good = _image_requests(photos)
    reqs = [
        good[0],
        GenerationRequest.simple("Describe.", [Image.new("RGB", (0, 0))], sampling=SAMPLING),
        GenerationRequest.simple("Describe.", [b"not an image"], sampling=SAMPLING),
        GenerationRequest.simple("Describe.", [_truncated_jpeg()], sampling=SAMPLING),
        GenerationRequest(messages=good[1].messages, images=[], sampling=SAMPLING),  # placeholder, no image
        good[1],
    ]
    res = be.generate(reqs)
    assert res[1].error == "input: image 0 is empty (0x0)"
    assert res[2].error == "input: image 0 is a bytes, not a PIL image"
    assert res[3].error.startswith("generate: ") and "truncated" in res[3].error
    assert res[4].error.startswith("input: the messages have 1 image placeholder")
    # the good requests still succeed, with the same text as alone, after a per-request retry
    assert res[0].ok and res[5].ok
    assert res[0].text == be.generate([good[0]])[0].text
    assert res[5].text == be.generate([good[1]])[0].text
    assert res[0].retries == res[5].retries == 1
    usage = be.usage.summary()
    assert usage["failures"] >= 4


def test_batch_failure_retries_each_request_alone(tiny_vlms, photos, monkeypatch):
    """A batch that fails as a whole (e.g. out of memory) is split into single requests."""
    be = TransformersBackend(str(tiny_vlms["llava"])).load()
    reqs = _image_requests(photos)
    expected = [r.text for r in be.generate(reqs)]
    real = be.hf_model.generate
    calls = []

    def oom_for_batches(**kw):
        calls.append(kw["input_ids"].shape[0])
        if kw["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (scripted)")
        return real(**kw)

    monkeypatch.setattr(be.hf_model, "generate", oom_for_batches)
    res = be.generate(reqs)
    assert calls == [3, 1, 1, 1]
    assert [r.text for r in res] == expected
    assert all(r.ok and r.retries == 1 for r in res)

    def always_fail(**kw):
        raise RuntimeError("device-side assert (scripted)")

    monkeypatch.setattr(be.hf_model, "generate", always_fail)
    res = be.generate(reqs)
    assert [r.error for r in res] == ["generate: device-side assert (scripted)"] * 3


def test_sampling_with_seed_is_reproducible(backends, photos):
    be = backends["idefics3"]
    s = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    req = GenerationRequest.simple("Describe.", [photos["chelsea"]], sampling=s)
    a, b = be.generate([req])[0], be.generate([req])[0]
    assert a.ok and a.text == b.text


def test_json_schema_requests(backends, photos, monkeypatch):
    be = backends["llava"]
    schema = {"type": "object", "properties": {"objects": {"type": "array", "items": {"type": "string"}}}, "required": ["objects"]}
    req = GenerationRequest.simple("List the objects.", [photos["astronaut"]], sampling=SAMPLING, json_schema=schema)
    # random weights cannot write JSON and never stop: prose cut at the limit, so after one stricter
    # retry a truncated error (cut, not JSON), never an exception
    res = be.generate([req])[0]
    assert res.error.startswith("truncated: ") and "not JSON" in res.error and res.retries == 1 and res.parsed is None
    # a cut reply is never repaired into values, even one json-repair could complete
    almost = '{"objects": ["astronaut", "flag"]'
    monkeypatch.setattr(be.tokenizer, "batch_decode", lambda ids, **kw: [almost] * len(ids))
    res = be.generate([req])[0]
    assert res.truncated and res.error.startswith("truncated: ") and res.parsed is None
    # replies that end within the limit (EOS forced as the last token, as a trained model stops)
    gc = be.hf_model.generation_config
    monkeypatch.setattr(gc, "forced_eos_token_id", gc.eos_token_id)

    # the real prompt carries the schema; a (scripted) almost-JSON reply is repaired and parsed
    prompts = []
    real_prompt = be.encoder.prompt

    def spy(r):
        text = real_prompt(r)
        prompts.append(text)
        return text

    monkeypatch.setattr(be.encoder, "prompt", spy)
    monkeypatch.setattr(be.tokenizer, "batch_decode", lambda ids, **kw: ['{"objects": ["astronaut", "flag"]'] * len(ids))
    res = be.generate([req])[0]
    assert res.ok, res.error
    assert res.parsed == {"objects": ["astronaut", "flag"]}
    assert '"required": ["objects"]' in prompts[0] and "List the objects." in prompts[0]

    monkeypatch.setattr(be.tokenizer, "batch_decode", lambda ids, **kw: ['{"things": 3}'] * len(ids))
    res = be.generate([req])[0]
    assert res.error.startswith("schema: ") and "objects" in res.error


def test_describe(backends, tiny_vlms):
    d = backends["llava"].describe()
    assert d == {"backend": "transformers", "model": str(tiny_vlms["llava"]), "revision": None, "device": "cpu",
                 "dtype": "float32", "prepare_workers": 0,
                 "processor": {"class": "LlavaProcessor", "image_processor": "CLIPImageProcessor",
                               "image_processor_kind": "fast (torchvision)"}}
    lazy = TransformersBackend(str(tiny_vlms["llava"]), dtype="bf16")
    assert lazy.describe()["dtype"] == "bf16" and not lazy.loaded and "processor" not in lazy.describe()


def test_lazy_load_on_first_generate_and_bf16(tiny_vlms, photos):
    be = TransformersBackend(str(tiny_vlms["idefics3"]), dtype="bf16")
    assert not be.loaded
    res = be.generate(_image_requests(photos)[:1])
    assert be.loaded and res[0].ok, res[0].error
    assert be.hf_model.dtype == torch.bfloat16
    assert be.describe()["dtype"] == "bfloat16"


def test_dtype_resolution(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("fp16", "cpu") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == torch.float16


def _assert_helpful(msg: str, model: str):
    assert repr(model) in msg
    assert "--vlm /path/to/dir" in msg
    assert "--local-dir" in msg
    assert "--backend openai --base-url http://host:8000/v1" in msg


def test_unavailable_hub_id_offline():
    model = "pixscribe-test/no-such-model"
    with pytest.raises(BackendUnavailable) as e:
        TransformersBackend(model).load()
    _assert_helpful(str(e.value), model)
    assert f"hf download {model} --local-dir DIR" in str(e.value)  # huggingface_hub>=1 has no huggingface-cli
    assert "HF_HUB_OFFLINE is set" in str(e.value)


def test_unavailable_missing_and_bad_local_dirs(tmp_path, tiny_llm):
    missing = str(tmp_path / "models" / "nope")
    with pytest.raises(BackendUnavailable, match="no such directory") as e:
        TransformersBackend(missing).load()
    _assert_helpful(str(e.value), missing)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendUnavailable, match="no config.json"):
        TransformersBackend(str(empty)).load()

    # pickled weights only: refused, because only safetensors are loaded
    binonly = tmp_path / "binonly"
    shutil.copytree(tiny_llm, binonly)
    sd = TransformersBackend(str(tiny_llm)).load().hf_model.state_dict()
    (binonly / "model.safetensors").unlink()
    torch.save(sd, binonly / "pytorch_model.bin")
    with pytest.raises(BackendUnavailable) as e:
        TransformersBackend(str(binonly)).load()
    assert "safetensors" in str(e.value)


def test_unavailable_is_per_row_inside_generate():
    be = TransformersBackend("pixscribe-test/no-such-model")
    res = be.generate([GenerationRequest.simple("hi")])
    assert res[0].error.startswith("backend: cannot load model")


def test_make_backend(tiny_vlms, tiny_llm):
    cfg = RunConfig(vlm=str(tiny_vlms["llava"]), llm=str(tiny_llm), dtype="fp32", device="cpu", revision="abc")
    vlm = make_backend(resolve_spec(cfg, "vlm"), cfg)
    assert isinstance(vlm, TransformersBackend)
    assert vlm.model == str(tiny_vlms["llava"]) and vlm.requested_revision == "abc"
    llm = make_backend(resolve_spec(cfg, "llm"), cfg)
    assert llm.model == str(tiny_llm)
    res = llm.generate([GenerationRequest.simple("Rewrite: a dog.", sampling=SAMPLING)])
    assert res[0].ok and llm.is_vlm is False
    # without an llm, the VLM answers the text-only stages
    one = RunConfig(vlm=str(tiny_vlms["llava"]))
    assert make_backend(resolve_spec(one, "llm"), one).model == str(tiny_vlms["llava"])


def test_make_backend_dispatches_to_server_backends(monkeypatch):
    import sys
    import types

    made = {}
    for mod, cls in (("openai_backend", "OpenAIBackend"), ("vllm_backend", "VLLMBackend")):
        fake = types.ModuleType(f"pixscribe.backends.{mod}")

        class Fake:
            @classmethod
            def from_spec(cls_, spec, config, _n=cls):
                made[_n] = spec.model
                return _n

        setattr(fake, cls, Fake)
        monkeypatch.setitem(sys.modules, f"pixscribe.backends.{mod}", fake)
    c1, c2 = RunConfig(backend="openai", vlm="m1"), RunConfig(backend="vllm", vlm="m2", llm="m3")
    assert make_backend(resolve_spec(c1, "vlm"), c1) == "OpenAIBackend"
    assert make_backend(resolve_spec(c2, "llm"), c2) == "VLLMBackend"
    assert made == {"OpenAIBackend": "m1", "VLLMBackend": "m3"}


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_multi_image_request_in_a_batch(backends, photos, family):
    be = backends[family]
    two = GenerationRequest.simple("Compare the two photos.", [photos["astronaut"], photos["rocket"]], sampling=SAMPLING)
    one = _image_requests(photos)[1]
    res = be.generate([two, one])
    assert all(r.ok for r in res), [r.error for r in res]
    alone_two = be.generate([two])[0]
    assert res[0].text == alone_two.text
    assert res[0].tokens_in > be.generate([GenerationRequest.simple("Compare the two photos.", [photos["astronaut"]], sampling=SAMPLING)])[0].tokens_in
