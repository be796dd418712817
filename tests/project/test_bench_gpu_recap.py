"""bench/gpu_recap.py stays runnable: its --tiny mode end to end on the CPU (a real
`pixscribe caption` subprocess inside), and its real-size configurations are the published
checkpoints' sizes (built on the meta device: no memory, no weights); with PIXSCRIBE_VLLM_PYTHON,
--backend vllm --tiny in the vLLM venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_vllm import needs_vllm, vllm_run

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_gpu_recap_tiny_runs_end_to_end(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH / "gpu_recap.py"), "--tiny", "--n", "4", "--batch-size", "2",
                        "--max-new-tokens", "4", "--image-size", "320x240", "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["bench"] == "gpu_recap" and result["gpu"] == "cpu" and result["n"] == 4
    assert result["model_only_img_s"] > 0
    (e2e,) = result["e2e"]
    assert e2e["img_s"] > 0 and e2e["ratio"] == pytest.approx(e2e["img_s"] / result["model_only_img_s"], rel=1e-3)
    assert e2e["prepare_workers"] == 0  # pixscribe's default on the CPU
    assert result["processor"]["class"] == "Qwen2_5_VLProcessor"
    assert "model-only:" in p.stdout and "end-to-end" in p.stdout


@needs_vllm
@pytest.mark.slow
def test_gpu_recap_vllm_tiny_runs_end_to_end(tmp_path):
    """--backend vllm in the vLLM venv: vLLM's own LLM.chat beside `pixscribe caption --backend
    vllm` (both exactly max_new_tokens per reply: the script checks the token counts), the
    engine's busy time from the instrumented run."""
    p = vllm_run([str(BENCH / "gpu_recap.py"), "--backend", "vllm", "--tiny", "--n", "4", "--batch-size", "2",
                  "--max-new-tokens", "4", "--image-size", "320x240", "--work", str(tmp_path)])
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["backend"] == "vllm" and result["gpu"] == "cpu" and result["vllm"] == "0.32.0"
    assert result["model_only_img_s"] > 0
    (e2e,) = result["e2e"]
    assert e2e["img_s"] > 0 and e2e["ratio"] == pytest.approx(e2e["img_s"] / result["model_only_img_s"], rel=1e-3)
    engine = e2e["engine"]
    assert engine["requests"] == 4 and engine["batches"] == 2  # every request seen added and finished
    assert 0 < engine["busy"] <= 1 and 0 <= engine["mean_requests_held"] <= 4 and engine["render_ms_per_image"] > 0
    assert "engine busy" in p.stdout and "model-only:" in p.stdout


@pytest.fixture()
def gpu_recap(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_recap

    return gpu_recap


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_real_size_configs_match_the_published_models(tiny_qwen_vlms, gpu_recap, size):
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    tok = AutoProcessor.from_pretrained(tiny_qwen_vlms["qwen2_5_vl"]).tokenizer
    config = gpu_recap.real_size_config(size, tok)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    assert n == {"3b": 3_754_622_976, "7b": 8_292_166_656}[size]  # 3.75B and 8.29B on the hub
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


def test_the_real_size_build_path_on_small_sizes(gpu_recap, tmp_path, monkeypatch):
    """What runs on the GPU (random init, bf16, save, fixed answer length), on the CPU with the
    7B entry shrunk: the saved model loads in pixscribe and answers exactly max_new_tokens."""
    from pixscribe.backends import GenerationRequest, Sampling
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.testing import sample_photo

    small = {"text": dict(gpu_recap.CONFIGS["7b"]["text"], vocab_size=512, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
             "vision": dict(gpu_recap.CONFIGS["7b"]["vision"], depth=2, hidden_size=32, intermediate_size=64,
                            num_heads=2, out_hidden_size=64, fullatt_block_indexes=[1])}
    small["text"]["rope_parameters"] = dict(small["text"]["rope_parameters"], mrope_section=[4, 2, 2])
    monkeypatch.setitem(gpu_recap.CONFIGS, "7b", small)
    a = gpu_recap.parse(["--size", "7b", "--max-new-tokens", "5", "--work", str(tmp_path)])
    a.device = "cpu"
    d = gpu_recap.build_model(a, tmp_path)
    assert d == gpu_recap.build_model(a, tmp_path)  # reused, not rebuilt
    be = TransformersBackend(str(d), device="cpu", dtype="bf16").load()
    res = be.generate([GenerationRequest.simple("Describe.", [sample_photo("coffee").resize((96, 64))],
                                                sampling=Sampling(max_new_tokens=5))])
    assert res[0].ok and res[0].tokens_out == 5 and res[0].truncated  # EOS masked until the limit
    assert be.hf_model.config.text_config.hidden_size == 64 and be.hf_model.dtype.is_floating_point
