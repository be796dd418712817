"""The default VLM family for real: Qwen3-VL and Qwen2.5-VL through their real processor
classes (dynamic resolution, image token counts, the --max-pixels budget), batched with
left padding through ``generate`` and decoding, and through the command line.

The chat-template tests need no torchvision; the others use the tiny models, which need it
(skipped with the reason when it is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.testing import sample_photo, train_tokenizer
from pixscribe.testing.tiny import QWEN25_VL_CHAT_TEMPLATE, QWEN3_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

VISION = "<|vision_start|><|image_pad|><|vision_end|>"
DESCRIBE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
CONVERSATION = [
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]},
    {"role": "assistant", "content": "Two cats."},
    {"role": "user", "content": "And now?"},
]
SYSTEM_BRIEF = "<|im_start|>system\nBe brief.<|im_end|>\n"
CONVERSATION_TAIL = (
    "<|im_start|>user\nPicture 1: " + VISION + "Picture 2: " + VISION + "Compare.<|im_end|>\n"
    "<|im_start|>assistant\nTwo cats.<|im_end|>\n"
    "<|im_start|>user\nAnd now?<|im_end|>\n"
)
GEN = "<|im_start|>assistant\n"
# The texts the real templates render (Qwen3-VL-8B-Instruct, Qwen2.5-VL-7B-Instruct).
EXPECTED = {
    "qwen3_vl": {
        "describe": "<|im_start|>user\n" + VISION + "Describe the image.<|im_end|>\n" + GEN,
        "conversation": SYSTEM_BRIEF + CONVERSATION_TAIL + GEN,
    },
    "qwen2_5_vl": {
        "describe": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n" + VISION + "Describe the image.<|im_end|>\n" + GEN,
        "conversation": SYSTEM_BRIEF + CONVERSATION_TAIL + GEN,
    },
}
TEMPLATES = {"qwen3_vl": QWEN3_VL_CHAT_TEMPLATE, "qwen2_5_vl": QWEN25_VL_CHAT_TEMPLATE}
FAMILIES = sorted(TEMPLATES)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_renders_the_real_models_text(family):
    tok = train_tokenizer(QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATES[family]

    def render(messages, **kw):
        return tok.apply_chat_template(messages, tokenize=False, **kw)

    assert render(DESCRIBE, add_generation_prompt=True) == EXPECTED[family]["describe"]
    assert render(CONVERSATION, add_generation_prompt=True, add_vision_id=True) == EXPECTED[family]["conversation"]
    no_ids = render(CONVERSATION, add_generation_prompt=False)
    assert no_ids == SYSTEM_BRIEF + CONVERSATION_TAIL.replace("Picture 1: ", "").replace("Picture 2: ", "")
    # the placeholders are single special tokens, so the processor can expand them
    ids = tok(render(DESCRIBE, add_generation_prompt=True))["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|image_pad|>")) == 1


def test_chat_templates_differ_where_the_real_ones_do():
    """Only Qwen3-VL drops a later system turn and the images of an assistant turn."""
    tok = train_tokenizer(QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    messages = [
        {"role": "user", "content": "Hi."},
        {"role": "system", "content": "Late."},
        {"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "Ok."}]},
    ]
    out = {}
    for family, template in TEMPLATES.items():
        tok.chat_template = template
        out[family] = tok.apply_chat_template(messages, tokenize=False)
    assert out["qwen3_vl"] == "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nOk.<|im_end|>\n"
    assert out["qwen2_5_vl"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n"
        "<|im_start|>system\nLate.<|im_end|>\n<|im_start|>assistant\n" + VISION + "Ok.<|im_end|>\n"
    )


# ---- the tiny models (torchvision) ----------------------------------------------------
REAL_CLASSES = {
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", 16),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", 14),
}


@pytest.fixture(scope="module")
def qwen_backends(tiny_qwen_vlms):
    from pixscribe.backends.transformers_backend import TransformersBackend

    return {f: TransformersBackend(str(tiny_qwen_vlms[f]), device="cpu", dtype="fp32").load() for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_qwen_loads_with_the_real_classes(tiny_qwen_vlms, qwen_backends, family):
    from pixscribe.testing.tiny import dir_size

    path = tiny_qwen_vlms[family]
    assert path.name == family and (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert dir_size(path) < 2_000_000
    be = qwen_backends[family]
    model_cls, proc_cls, patch = REAL_CLASSES[family]
    assert be.is_vlm and type(be.hf_model).__name__ == model_cls and type(be.processor).__name__ == proc_cls
    ip = be.processor.image_processor
    assert type(ip).__name__ == "Qwen2VLImageProcessor"  # the torchvision one, not the PIL fallback
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (patch, 2, 2)
    assert be.processor.chat_template == TEMPLATES[family]
    cfg, tok = be.hf_model.config, be.tokenizer
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def _image_tokens(be, images, max_pixels):
    """(image tokens in input_ids, the (rows, cols) patch grid of each image) for one request."""
    be.max_pixels = max_pixels
    req = GenerationRequest.simple("Describe the image.", images)
    inputs = be.encode([req])
    n = int((inputs["input_ids"] == be.hf_model.config.image_token_id).sum())
    grids = [(int(h), int(w)) for _, h, w in inputs["image_grid_thw"].tolist()]
    return n, grids


# (max_pixels, tokens) for the 512x512 astronaut, worked out by hand from the resize rule:
# sides rounded to multiples of patch*2, scaled down to fit the budget, one token per 2x2.
TOKENS_512 = {
    "qwen3_vl": [(None, 256), (65_536, 64), (16_384, 16), (4_096, 4)],  # 512/16=32 -> 16x16 tokens ...
    "qwen2_5_vl": [(None, 324), (65_536, 81), (16_384, 16), (4_096, 4)],  # 504/14=36 -> 18x18 ...
}

# a 40x40 image: (tokens at the model's minimum, a smaller budget, tokens at that budget):
# Qwen3-VL's minimum is 65,536 px (256x256), Qwen2.5-VL's 3,136 px (56x56)
SMALL_40 = {"qwen3_vl": (64, 4_096, 4), "qwen2_5_vl": (4, 784, 1)}


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_count_follows_max_pixels(qwen_backends, family):
    be = qwen_backends[family]
    patch = REAL_CLASSES[family][2]
    photo = sample_photo("astronaut")
    assert photo.size == (512, 512)
    try:
        for max_pixels, tokens in TOKENS_512[family]:
            n, [(rows, cols)] = _image_tokens(be, [photo], max_pixels)
            assert n == tokens == rows * cols // 4 and rows == cols, (max_pixels, n, rows, cols)
            if max_pixels:
                assert rows * cols * patch * patch <= max_pixels
        # dynamic resolution: a wide image keeps its aspect ratio in patches
        n, [(rows, cols)] = _image_tokens(be, [photo.resize((512, 128))], 65_536)
        assert n == rows * cols // 4 and 4 <= cols / rows <= 4.5 and rows * cols * patch * patch <= 65_536
        # a small image is scaled UP to the model's minimum, or to the budget when it is smaller
        at_minimum, budget, at_budget = SMALL_40[family]
        assert _image_tokens(be, [photo.resize((40, 40))], None)[0] == at_minimum
        assert _image_tokens(be, [photo.resize((40, 40))], budget)[0] == at_budget
    finally:
        be.max_pixels = None


def test_max_pixels_comes_from_the_run_config(tiny_qwen_vlms):
    from pixscribe.backends.transformers_backend import TransformersBackend, pixel_budget_kwargs
    from pixscribe.config import RunConfig

    cfg = RunConfig(vlm=str(tiny_qwen_vlms["qwen3_vl"]), device="cpu", dtype="fp32", max_pixels=20_000)
    be = TransformersBackend.from_config(cfg)
    assert be.max_pixels == 20_000
    be.load()
    kw = pixel_budget_kwargs(be.processor.image_processor, be.max_pixels)
    assert kw == {"size": {"shortest_edge": 20_000, "longest_edge": 20_000}}  # below the model's 65,536 minimum
    assert pixel_budget_kwargs(be.processor.image_processor, 10**6)["size"]["shortest_edge"] == 65_536


def _requests():
    """Requests of different lengths: images of different sizes, two images in one, other prompts."""
    s = Sampling(max_new_tokens=12)
    astronaut, cat, coffee = sample_photo("astronaut"), sample_photo("chelsea"), sample_photo("coffee")
    return [
        GenerationRequest.simple("Describe the image.", [astronaut], sampling=s, id="a"),
        GenerationRequest.simple("What is it?", [cat.resize((200, 90))], sampling=s, id="b"),
        GenerationRequest.simple("Compare the two pictures in detail.", [coffee.resize((90, 260)), cat], sampling=s, id="c"),
        GenerationRequest.simple("Describe.", [coffee], system="Answer briefly.", sampling=s, id="d"),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_with_left_padding_equals_each_request_alone(qwen_backends, family):
    be = qwen_backends[family]
    be.max_pixels = 65_536
    try:
        reqs = _requests()
        mask = be.encode(reqs)["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        assert len(set(lengths)) == len(reqs)  # every prompt has its own length ...
        assert bool((mask[:, -1] == 1).all()) and int((mask[:, 0] == 0).sum()) == len(reqs) - 1  # ... padded left
        batch = be.generate(reqs)
        alone = [be.generate([r])[0] for r in reqs]
    finally:
        be.max_pixels = None
    assert all(r.ok and r.retries == 0 for r in batch), [r.error for r in batch]  # one real batch, no fallback
    assert [r.text for r in batch] == [r.text for r in alone]
    assert [r.tokens_in for r in batch] == [r.tokens_in for r in alone] == lengths
    assert [r.tokens_out for r in batch] == [r.tokens_out for r in alone]
    assert len({r.text for r in alone}) > 1  # the outputs tell the requests apart, so a mix-up would show


def test_without_torchvision_the_backend_names_the_missing_package(tiny_qwen_vlms, tmp_path):
    """In a Python that cannot import torchvision, loading the default VLM's family is a
    MissingDependency naming torchvision and the pip hint, not a traceback."""
    blocker = tmp_path / "no_torchvision"
    blocker.mkdir()
    # sys.modules[name] = None: find_spec() says "not installed" and import fails, as without it
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torchvision'] = None\n")
    code = (
        "from pixscribe.backends.transformers_backend import TransformersBackend\n"
        "from pixscribe.deps import MissingDependency\n"
        f"try:\n    TransformersBackend({str(tiny_qwen_vlms['qwen3_vl'])!r}, device='cpu').load()\n"
        "except MissingDependency as e:\n    print('MISSING', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("MISSING") and "its processor needs torchvision" in p.stdout, p.stdout
    assert "pip install 'pixscribe[transformers]' (or pip install torchvision)" in p.stdout


# ---- the command line ------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "pixscribe", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def _tokens_in(out: Path) -> int:
    """The prompt tokens the run's summary counted (the usage block, wherever it nests)."""

    def walk(v):
        if isinstance(v, dict):
            return sum(walk(x) if k != "tokens_in" else int(x) for k, x in v.items())
        if isinstance(v, list):
            return sum(walk(x) for x in v)
        return 0

    (summary,) = sorted((out / "_state" / "summaries").glob("*.json"))
    return walk(json.loads(summary.read_text())["usage"])


def test_cli_captions_with_tiny_qwen3_vl_and_max_pixels(tiny_qwen_vlms, tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    astronaut = sample_photo("astronaut")  # 512x512
    astronaut.save(photos / "astronaut.png")
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirrored.png")
    model = str(tiny_qwen_vlms["qwen3_vl"])
    tokens = {}
    for budget in ("16384", "65536"):
        out = tmp_path / f"out_{budget}"
        p = _cli("caption", str(photos), "-o", str(out), "--vlm", model, "--max-pixels", budget,
                 "--batch-size", "2", "--max-new-tokens", "6", "--device", "cpu", "--no-progress")
        assert "rows written" in p.stderr
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == 2 and all(r["error"] is None for r in rows), [r["error"] for r in rows]
        assert all(isinstance(r["caption"], str) for r in rows) and {r["model"] for r in rows} == {model}
        tokens[budget] = _tokens_in(out)
    # --max-pixels reaches the processor: 16 vs 64 image tokens per 512x512 photo (decoded to
    # 128x128 / 256x256; without the budget the processor would scale both up to 256x256)
    assert tokens["65536"] - tokens["16384"] == 2 * (64 - 16)

