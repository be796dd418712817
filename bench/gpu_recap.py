"""Recap on a GPU: model-only img/s against end-to-end `pixscribe caption` img/s, one run.

Builds a real-size, random-weight Qwen2.5-VL (the 3B or 7B configuration of the published
checkpoints, written below: no hub, no weights) in bf16 and saves it (safetensors) with the
tiny Qwen2.5-VL's processor (pixscribe.testing.tiny: the real checkpoints' image-processor
settings and chat template, a stand-in vocabulary). Writes N real-looking ~1 MP JPEGs (a real
photo with per-image noise and colour casts). Then, on the same GPU:

  model-only   every batch's inputs made beforehand (the same processor and pixel budget,
               images decoded as the engine decodes them), already on the GPU, straight into
               ``generate``: images / seconds inside generate (after one warm-up batch);
  end-to-end   ``pixscribe caption JPEGS -o OUT --vlm MODEL ...`` in a subprocess: rows / the
               run's own seconds from its summary (model loaded before they start: reading,
               decoding, preparing, generating and writing; the first batch is included).

Both generate exactly --max-new-tokens tokens per image (128): the saved generation config has
``min_new_tokens`` = ``max_new_tokens``, so EOS is masked until then, whatever the random weights
say; the script checks the token counts of both paths. Random weights make the text gibberish
and change nothing about the time. Needs only torch, transformers and pixscribe.

    python bench/gpu_recap.py                     # 7B, --n 256, batch 16, cuda, bf16 (~5-8 min on an H100)
    python bench/gpu_recap.py --size 3b --n 512
    python bench/gpu_recap.py --e2e-workers 0 auto  # end to end twice: processor in-thread, then in workers
    python bench/gpu_recap.py --tiny              # CPU, the tiny model: checks the script end to end

With ``--backend vllm`` (run it with a python that has vllm: ``pip install 'pixscribe[vllm]'``;
on the CPU the venv of ``dev/vllm-venv`` with ``PYTHONPATH=src``) the same model and JPEGs go
through the offline engine instead (bench/gpu_recap_vllm.py, each pass a process of its own):

  model-only   vLLM's own offline throughput: the JPEGs decoded within the budget beforehand, every
               conversation in one ``LLM.chat`` call (made by pixscribe's ``VLLMBackend``: the same
               ``LLM`` arguments), after a warm-up on other images;
  end-to-end   ``pixscribe caption --backend vllm``, with the engine's busy fraction after its first
               reply (time it held at least one request / time; a gap is time it waited for
               pixscribe) and vLLM's render time per image on the caller's thread.

Every reply is exactly --max-new-tokens long on both (``min_tokens`` = ``max_tokens``,
``ignore_eos``), the ratio is pixscribe's overhead on the real path:

    python bench/gpu_recap.py --backend vllm --size 7b --n 512
    PYTHONPATH=src $PIXSCRIBE_VLLM_PYTHON bench/gpu_recap.py --backend vllm --tiny   # CPU check

Prints each figure and a final JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _util import generate_jpegs  # noqa: E402

SIZE = (1152, 864)  # 995,328 px: ~1 MP, within the default 1,000,000 budget

# The published Qwen2.5-VL-{3B,7B}-Instruct configurations (config.json), sizes only; the token
# ids come from the stand-in tokenizer.
_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3, patch_size=14,
               spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
               tokens_per_second=2, hidden_act="silu")
_TEXT = dict(hidden_act="silu", max_position_embeddings=128_000, rms_norm_eps=1e-6, sliding_window=32_768,
             use_sliding_window=False,
             rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]})
CONFIGS: dict[str, dict[str, Any]] = {
    "3b": dict(text=dict(_TEXT, vocab_size=151_936, hidden_size=2048, intermediate_size=11_008, num_hidden_layers=36,
                         num_attention_heads=16, num_key_value_heads=2, max_window_layers=70, tie_word_embeddings=True),
               vision=dict(_VISION, out_hidden_size=2048)),
    "7b": dict(text=dict(_TEXT, vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_window_layers=28, tie_word_embeddings=False),
               vision=dict(_VISION, out_hidden_size=3584)),
}
PUBLISHED_PARAMS = {"3b": 3.75e9, "7b": 8.29e9}  # as the hub lists them


def real_size_config(size: str, tok: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    from pixscribe.testing.tiny import _qwen_token_ids

    c = CONFIGS[size]
    text = dict(c["text"], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(c["vision"]), pad_token_id=tok.pad_token_id,
                            tie_word_embeddings=c["text"]["tie_word_embeddings"], **_qwen_token_ids(tok))


def fix_length(model_dir: Path, tokens: int) -> None:
    """Every answer is exactly ``tokens`` long: EOS masked until then, cut there."""
    from transformers import GenerationConfig

    g = GenerationConfig.from_pretrained(model_dir)
    g.min_new_tokens = g.max_new_tokens = tokens
    g.save_pretrained(model_dir)


def build_model(a: argparse.Namespace, work: Path) -> Path:
    """The model directory (reused when one of the same size and length is there)."""
    from pixscribe.testing.tiny import build_tiny_qwen2_5_vl

    tiny = build_tiny_qwen2_5_vl(work / "tiny")
    name = "tiny" if a.tiny else a.size
    d = work / f"qwen2_5_vl-{name}-{a.max_new_tokens}"
    if (d / "pixscribe_bench.json").is_file():
        return d
    shutil.rmtree(d, ignore_errors=True)
    if a.tiny:
        shutil.copytree(tiny, d)
    else:
        _save_real_size(a, tiny, d)
    fix_length(d, a.max_new_tokens)
    (d / "pixscribe_bench.json").write_text(json.dumps({"size": name, "max_new_tokens": a.max_new_tokens}))
    return d


def _save_real_size(a: argparse.Namespace, tiny: Path, d: Path) -> None:
    import torch
    from transformers import AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny)
    tok = processor.tokenizer
    with torch.device(a.device):  # random init where the model runs: seconds on a GPU
        model = Qwen2_5_VLForConditionalGeneration._from_config(real_size_config(a.size, tok), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig.from_pretrained(tiny)
    n = sum(p.numel() for p in model.parameters())
    print(f"  built Qwen2.5-VL {a.size.upper()}: {n / 1e9:.2f}B parameters (published {PUBLISHED_PARAMS[a.size] / 1e9:.2f}B)")
    model.save_pretrained(d)
    processor.save_pretrained(d)
    del model
    _free(a.device)


# ---- the two measurements -----------------------------------------------------------------------
def model_only_transformers(a: argparse.Namespace, model_dir: Path, files: list[Path]) -> dict[str, Any]:
    import torch

    from pixscribe.backends import GenerationRequest, Sampling
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.methods.recap import RECAP_PROMPT
    from pixscribe.imaging import decode

    be = TransformersBackend(str(model_dir), device=a.device, dtype=a.dtype, prepare_workers=0,
                             max_pixels=a.max_pixels).load()
    s = Sampling(max_new_tokens=a.max_new_tokens)
    reqs = [GenerationRequest.simple(RECAP_PROMPT, [decode(f.read_bytes(), max_pixels=a.max_pixels).image], sampling=s)
            for f in files]
    batches = [be.encode(reqs[k: k + a.batch_size]) for k in range(0, len(reqs), a.batch_size)]
    kw = dict(max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=be.tokenizer.pad_token_id,
              temperature=None, top_p=None, top_k=None)

    def run(inputs: dict[str, Any]) -> int:
        with torch.inference_mode():
            out = be.hf_model.generate(**inputs, **kw)
        return int(out.shape[0] * (out.shape[1] - inputs["input_ids"].shape[1]))

    run(batches[0])  # warm up: kernels, allocator, cuBLAS handles
    _sync(a.device)
    t0 = time.perf_counter()
    tokens = sum(run(b) for b in batches)
    _sync(a.device)
    seconds = time.perf_counter() - t0
    assert tokens == len(files) * a.max_new_tokens, (tokens, len(files))
    image_tokens = int((batches[0]["input_ids"] == be.hf_model.config.image_token_id).sum()) // len(reqs[: a.batch_size])
    del batches
    be.close()
    _free(a.device)
    return {"img_s": len(files) / seconds, "seconds": seconds, "tokens_out": tokens, "image_tokens": image_tokens}


def e2e_args_transformers(a: argparse.Namespace, workers: str) -> list[str]:
    args = ["--device", a.device, "--dtype", a.dtype]
    return args + ([] if workers == "auto" else ["--prepare-workers", workers])


# ---- --backend vllm: each measurement in a process of its own (bench/gpu_recap_vllm.py) -------------
VLLM_SCRIPT = Path(__file__).resolve().parent / "gpu_recap_vllm.py"


def vllm_engine(a: argparse.Namespace) -> dict[str, Any]:
    """``LLM(...)`` arguments beyond pixscribe's: the CPU build needs eager mode and a short context."""
    return dict({"enforce_eager": True, "max_model_len": 2048} if a.tiny else {}, **a.vllm_engine)


def model_only_vllm(a: argparse.Namespace, model_dir: Path, files: list[Path]) -> dict[str, Any]:
    warm = a.work / f"warmup-{a.batch_size}-{a.image_size[0]}x{a.image_size[1]}"  # vLLM caches by image content
    generate_jpegs(warm, a.batch_size, a.image_size, seed=1)
    cmd = [sys.executable, str(VLLM_SCRIPT), "model-only", str(model_dir), str(files[0].parent), str(warm),
           "--n", str(a.n),
           "--batch", str(a.batch_size), "--tokens", str(a.max_new_tokens), "--max-pixels", str(a.max_pixels),
           "--dtype", a.dtype, "--engine", json.dumps(vllm_engine(a))]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"vLLM model-only failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1].removeprefix("RESULT "))
    assert r["tokens_out"] == a.n * a.max_new_tokens, r
    return r


def e2e_args_vllm(a: argparse.Namespace, workers: str) -> list[str]:
    cfg = a.work / "vllm_engine.yaml"
    cfg.write_text(json.dumps({"vllm_engine": vllm_engine(a)}))  # JSON is YAML
    return ["--dtype", a.dtype, "--config", str(cfg)]


@dataclass
class BenchBackend:
    model_only: Callable[[argparse.Namespace, Path, list[Path]], dict[str, Any]]
    caption_args: Callable[[argparse.Namespace, str], list[str]]  # extra `pixscribe caption` options
    command: tuple[str, ...] = ("-m", "pixscribe")  # what runs `pixscribe caption ...` under sys.executable


BACKENDS = {"transformers": BenchBackend(model_only_transformers, e2e_args_transformers),
            "vllm": BenchBackend(model_only_vllm, e2e_args_vllm, (str(VLLM_SCRIPT),))}


def end_to_end(a: argparse.Namespace, model_dir: Path, inp: Path, out: Path, workers: str) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    be = BACKENDS[a.backend]
    busy_file = out.parent / "busy.json"
    busy_file.unlink(missing_ok=True)
    cmd = [sys.executable, *be.command, "caption", str(inp), "-o", str(out), "--vlm", str(model_dir),
           "--backend", a.backend, "--batch-size", str(a.batch_size), "--max-new-tokens", str(a.max_new_tokens),
           "--max-pixels", str(a.max_pixels), "--no-progress", *be.caption_args(a, workers)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PIXSCRIBE_BENCH_BUSY=str(busy_file)))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"pixscribe caption failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    (summary_file,) = sorted((out / "_state" / "summaries").glob("*.json"))[-1:]
    s = json.loads(summary_file.read_text())
    usage = next(v for k, v in s["usage"].items() if k.startswith("vlm:"))
    rows = s["rows_written"]
    assert rows == len(list(inp.glob("*.jpg"))) and s["error_rows"] == 0, s
    assert usage["tokens_out"] == rows * a.max_new_tokens, usage
    model = json.loads((out / "_run.json").read_text())["models"][0]
    return {"img_s": rows / s["seconds"], "seconds": s["seconds"], "wall_s": wall, "tokens_out": usage["tokens_out"],
            "prepare_workers": model.get("prepare_workers"), "processor": model.get("processor"),
            "engine": json.loads(busy_file.read_text()) if busy_file.is_file() else None}


# ---- the run -------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _rounded(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(CONFIGS), default="7b")
    ap.add_argument("--n", type=int, default=None, help="images (default 256; 8 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 16; 4 with --tiny")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per image (default 128; 8 with --tiny)")
    ap.add_argument("--max-pixels", type=int, default=1_000_000)
    ap.add_argument("--image-size", default=f"{SIZE[0]}x{SIZE[1]}", help="WxH of the generated JPEGs")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="transformers",
                    help="vllm: vLLM's own LLM.chat against pixscribe caption --backend vllm (needs vllm)")
    ap.add_argument("--vllm-engine", type=json.loads, default={},
                    help='more LLM(...) arguments for --backend vllm, as JSON: \'{"max_model_len": 4096}\'')
    ap.add_argument("--e2e-workers", nargs="+", default=["auto"],
                    help="--prepare-workers of each end-to-end run (auto: pixscribe's default)")
    ap.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a check, not a figure)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "gpu_recap")
    a = ap.parse_args(argv)
    a.n = a.n or (8 if a.tiny else 256)
    a.batch_size = a.batch_size or (4 if a.tiny else 16)
    a.max_new_tokens = a.max_new_tokens or (8 if a.tiny else 128)
    a.device, a.dtype = ("cpu", "fp32") if a.tiny else ("cuda", "bf16")
    w, h = a.image_size.lower().split("x")
    a.image_size = (int(w), int(h))
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch
    import transformers

    a = parse(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --tiny for the CPU check")
    if a.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise SystemExit("--backend vllm needs vllm in this python: pip install 'pixscribe[vllm]' (on the CPU: the "
                         "venv dev/vllm-venv makes, with PYTHONPATH=src)")
    gpu = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"gpu_recap: Qwen2.5-VL {'tiny' if a.tiny else a.size.upper()} ({a.dtype}) on {gpu}, {a.n} JPEGs of "
          f"{a.image_size[0]}x{a.image_size[1]}, batch {a.batch_size}, {a.max_new_tokens} tokens each, backend {a.backend}")
    t0 = time.perf_counter()
    model_dir = build_model(a, a.work)
    inp = a.work / f"jpegs-{a.n}-{a.image_size[0]}x{a.image_size[1]}"
    files = generate_jpegs(inp, a.n, a.image_size)
    print(f"  model and images ready in {time.perf_counter() - t0:.1f} s ({model_dir})")
    mo = BACKENDS[a.backend].model_only(a, model_dir, files)
    print(f"  model-only: {mo['img_s']:.2f} img/s ({mo['seconds']:.1f} s in generate, {mo['image_tokens']} image "
          f"tokens per image)")
    e2e = {}
    for w in (["auto"] if a.backend == "vllm" else a.e2e_workers):  # vLLM prepares its own way: no workers
        e2e[w] = r = end_to_end(a, model_dir, inp, a.work / "out", w)
        print(f"  end-to-end (prepare workers {r['prepare_workers']}): {r['img_s']:.2f} img/s ({r['seconds']:.1f} s "
              f"after loading, {r['wall_s']:.1f} s for the whole command), ratio end-to-end / model-only = "
              f"{r['img_s'] / mo['img_s']:.3f}")
        if r["engine"]:
            g = r["engine"]
            print(f"    engine busy {g['busy']:.3f} of {g['window_s']:.1f} s after the first reply ({g['gaps']} gaps, "
                  f"largest {g['largest_gap_s']:.2f} s), {g['mean_requests_held']:.1f} requests in it on average, "
                  f"{g['img_s_after_first_reply']:.2f} img/s after the first reply; "
                  f"vLLM's render on the caller's thread "
                  f"{g['render_ms_per_image']:.1f} ms/image, {g['lock_wait_ms_per_batch']:.1f} ms/batch waiting for it")
    result = {"bench": "gpu_recap", "gpu": gpu, "model": f"Qwen2.5-VL-{'tiny' if a.tiny else a.size.upper()}",
              "dtype": a.dtype, "backend": a.backend, "n": a.n, "batch": a.batch_size,
              "max_new_tokens": a.max_new_tokens, "max_pixels": a.max_pixels, "image_size": list(a.image_size),
              "model_only_img_s": round(mo["img_s"], 3),
              "e2e": [{"prepare_workers": r["prepare_workers"], "img_s": round(r["img_s"], 3),
                       "ratio": round(r["img_s"] / mo["img_s"], 4), "wall_s": round(r["wall_s"], 1),
                       "engine": _rounded(r["engine"])} for r in e2e.values()],
              "processor": next(iter(e2e.values()))["processor"], "torch": torch.__version__,
              "transformers": transformers.__version__, "seconds": round(time.perf_counter() - t0, 1)}
    if a.backend == "vllm":
        import vllm

        result["vllm"] = vllm.__version__
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
