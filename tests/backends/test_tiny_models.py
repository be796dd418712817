"""The tiny real-architecture models: built locally, saved as safetensors, reloaded with the
ordinary Auto* entry points offline, and generating from a real photo."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixscribe.testing import sample_photo
from pixscribe.testing.tiny import QWEN_VL_BUILDERS, build_tiny_llava, dir_size, torchvision_missing

EXPECTED = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
}
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]


def test_offline_env():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_vlm_families(tiny_vlms):
    assert set(tiny_vlms) == set(EXPECTED)
    for name, path in tiny_vlms.items():
        assert path == path.parent / name and path.is_dir()


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_tiny_vlm_reloads_and_generates_from_a_photo(tiny_vlms, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_vlms[family]
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")), "weights must be safetensors only"
    assert dir_size(path) < 2_000_000

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    model_cls, proc_cls = EXPECTED[family]
    assert type(model).__name__ == model_cls
    assert type(processor).__name__ == proc_cls
    # these families need no torchvision: without it transformers loads the PIL image processor
    pil = "Pil" in type(processor.image_processor).__name__
    assert pil == (torchvision_missing() is not None), type(processor.image_processor).__name__

    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert "Describe the image." in prompt and "<image>" in prompt

    photo = sample_photo("astronaut")
    inputs = processor(text=[prompt], images=[[photo]], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    n_image_tokens = int((inputs["input_ids"] == image_id).sum())
    if family == "llava":  # 32 px / patch 8 = 16 patches (CLS dropped by the "default" strategy)
        assert n_image_tokens == 16
        assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    else:  # image splitting: 2x2 crops of 32 px + the global image, 4 tokens each after pixel shuffle
        assert tuple(inputs["pixel_values"].shape) == (1, 5, 3, 32, 32)
        assert n_image_tokens == 5 * 4

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= new.shape[0] <= 6
    text = processor.decode(new, skip_special_tokens=True)
    assert isinstance(text, str)

    # the image really reaches the model: another photo changes the next-token logits
    other = processor(text=[prompt], images=[[sample_photo("coffee")]], return_tensors="pt")
    with torch.inference_mode():
        a = model(**inputs).logits[0, -1]
        b = model(**other).logits[0, -1]
    assert not torch.allclose(a, b)


def test_tiny_text_llm(tiny_llm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny_llm / "model.safetensors").is_file() and dir_size(tiny_llm) < 2_000_000
    tok = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Rewrite: a cat on a table."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<|im_start|>user\nRewrite: a cat on a table.<|im_end|>\n<|im_start|>assistant\n"
    # plain string content works too
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"
    enc = tok([text], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert isinstance(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True), str)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_builders_are_idempotent_and_deterministic(tmp_path, tiny_vlms):
    first = build_tiny_llava(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = build_tiny_llava(tmp_path)
    assert again == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    # same seed, same weights as the session's copy
    assert _sha(first / "model.safetensors") == _sha(tiny_vlms["llava"] / "model.safetensors")
    # an incomplete directory (no completion marker) is rebuilt
    (first / "pixscribe_tiny.json").unlink()
    (first / "model.safetensors").write_bytes(b"partial")
    rebuilt = build_tiny_llava(tmp_path)
    assert (rebuilt / "pixscribe_tiny.json").is_file()
    assert _sha(rebuilt / "model.safetensors") == _sha(tiny_vlms["llava"] / "model.safetensors")


def test_cli_builds_all_and_prints_paths(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pixscribe.testing.tiny", str(tmp_path / "models")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    expected = {"llava", "idefics3", "text_llm"}
    if torchvision_missing() is None:
        expected |= set(QWEN_VL_BUILDERS)
    else:  # the Qwen-VL families need torchvision, and the command says so
        assert "skipped qwen3_vl, qwen2_5_vl: torchvision is not installed" in proc.stderr
    assert {r[0] for r in rows} == expected
    for name, path, size in rows:
        assert Path(path) == tmp_path / "models" / name
        assert (Path(path) / "config.json").is_file()
        assert size.endswith("MB")
