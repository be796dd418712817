"""`pixscribe caption --method textualize` end to end from the command line, on tiny models of the
real architectures: the transformers path (the same tiny VLM as VLM and LLM) and the HTTP path
(a VLM server and an LLM server on loopback), with the experts local in both (Florence-2 with
fixed regions, SAM, Depth Anything, Grounding DINO, OWLv2). Batches of 2, a resumed run and
--retry-errors. Outputs are gibberish (random weights); what is checked is that every stage
ran on the real code path and wrote what it should. The models that extract objects are copies
that end their replies within the limit (fixtures_stopping): a reply of random weights is
otherwise always cut, and the objects stage rightly fails a cut reply (a cut description is
prose, and is kept).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_experts import textualize_experts
from fixtures_http import photo_server
import yaml

from pixscribe.experts import rle
from pixscribe.testing import write_sample_photos
from pixscribe.testing.openai_server import ServerProcess
from test_e2e_cli import cli


def _summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def _config(tmp: Path, tiny_experts: dict[str, Path]) -> Path:
    """Experts from local directories, short prompts and few new tokens (the default prompts are
    checked by the golden-file test; here the point is the path, not the words)."""
    cfg = {
        **textualize_experts(tiny_experts),
        "stages": {"objects": {"prompt": "List the objects.", "max_new_tokens": 6},
                   "rewrite": {"prompt": "Rewrite the description.", "max_new_tokens": 6}},
    }
    p = tmp / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _check_rows(rows: list[dict], llm_model: str) -> None:
    for r in rows:
        assert r["error"] is None and r["method"] == "textualize", r["error"]
        assert isinstance(r["description"], str) and isinstance(r["caption"], str)
        assert isinstance(json.loads(r["phrases"]), list)
        objs, halls = json.loads(r["objects"]), json.loads(r["hallucinations"])
        assert [o["phrase"] for o in objs if not o["grounded"]] == halls
        assert all(set(o["support"]) == {"grounding_dino", "owlv2"} for o in objs)  # --verify-mode consensus
        regions = json.loads(r["regions"])
        assert [g["caption"] for g in regions] == ["cat", "dog"]  # the fixed answer of the tiny Florence-2
        for g in regions:
            assert rle.decode(g["mask"]).shape == (r["height"], r["width"]) and rle.area(g["mask"]) == g["area"]
            assert 0.0 <= g["nearness"] <= 1.0 and g["size_pct"] == pytest.approx(100 * g["area"] / (r["width"] *
                                                                                                     r["height"]), abs=1e-3)
        prov = json.loads(r["provenance"])
        if r["textualize_skipped"] is None:
            assert prov["caption"]["stage"] == "rewrite" and r["model"] == llm_model
        stages = json.loads(r["stages"])
        assert [stages[s]["status"] for s in ("detail", "describe", "objects", "verify", "rewrite")] == ["ok"] * 5
    assert any(json.loads(r["objects"]) for r in rows), "no phrase reached the detectors"
    assert any(r["textualize_skipped"] is None for r in rows), "no row was rewritten"


@pytest.fixture()
def flaky_image_server():
    """Serves /<name>.jpg; /flaky-<name>.jpg gets a 500 while ``state["down"]``."""
    state = {"down": True}

    def status(name: str) -> int | None:
        return 500 if name.startswith("flaky-") and state["down"] else None

    with photo_server(status, alias=lambda n: n.removeprefix("flaky-")) as srv:
        yield srv.url, state


@pytest.mark.slow
def test_textualize_on_tiny_transformers_models_from_the_cli(stopping_vlms, tiny_experts, tmp_path, flaky_image_server):
    url, server = flaky_image_server
    photos = tmp_path / "photos"
    write_sample_photos(photos, ("astronaut", "coffee"))
    (tmp_path / "urls.txt").write_text(f"{url}/flaky-rocket.jpg\n")
    out = tmp_path / "out"
    args = ["caption", str(photos), str(tmp_path / "urls.txt"), "-o", str(out), "--method", "textualize",
            "--config", str(_config(tmp_path, tiny_experts)), "--vlm", str(stopping_vlms["llava"]), "--batch-size", "2",
            "--max-new-tokens", "6", "--verify-mode", "consensus", "--box-threshold", "0.25", "--max-objects", "5",
            "--allow-private-urls", "--no-progress"]
    cli(*args, "--limit", "2")
    assert len(pq.read_table(out).to_pylist()) == 2
    cli(*args)  # resumes: the last row; the URL's server is down (fetch: 500)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3 and _summary(out)["rows_written"] == 1
    (bad,) = [r for r in rows if r["error"]]
    assert bad["error"].startswith("fetch: ") and "500" in bad["error"]
    server["down"] = False
    cli(*args, "--retry-errors")
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3 and _summary(out)["rows_written"] == 1
    _check_rows(rows, str(stopping_vlms["llava"]))
    run = json.loads((out / "_run.json").read_text())
    opts = {s["stage"]: s for s in run["method"]["stages"]}
    assert opts["verify"]["mode"] == "consensus" and opts["verify"]["box_threshold"] == 0.25
    assert opts["rewrite"]["max_objects"] == 5 and opts["rewrite"]["temperature"] == 0.75
    assert [m["role"] for m in run["models"]] == ["vlm"]  # the VLM is the LLM too: loaded once


@pytest.mark.slow
def test_textualize_against_vlm_and_llm_servers(tiny_vlms, stopping_llm, tiny_experts, tmp_path, photo_dir):
    # the VLM's descriptions are cut at the limit (prose: kept, flagged); the LLM that extracts ends its replies
    with ServerProcess("--mode", "tiny", "--model-dir", str(tiny_vlms["llava"]), "--model", "tiny-llava") as vlm, \
         ServerProcess("--mode", "tiny", "--model-dir", str(stopping_llm), "--model", "tiny-qwen",
                       "--permanent", "500", "--permanent-share", "0.3") as llm:
        out = tmp_path / "out"
        args = ["caption", str(photo_dir), "-o", str(out), "--method", "textualize",
                "--config", str(_config(tmp_path, tiny_experts)), "--backend", "openai", "--base-url", vlm.url,
                "--vlm", "tiny-llava", "--llm", "tiny-qwen", "--llm-base-url", llm.url, "--max-new-tokens", "6",
                "--batch-size", "2", "--verify-mode", "consensus", "--max-retries", "0", "--no-progress"]
        cli(*args)
        rows = pq.read_table(out).to_pylist()
        bad = [r for r in rows if r["error"]]
        assert len(rows) == 6 and bad and len(bad) < 6 and all("500" in r["error"] for r in bad)
        assert vlm.stats()["chat_requests"] == 6 and llm.stats()["structured_requests"] > 0  # JSON schema sent
        llm.admin(permanent="")
        vlm.reset()
        assert all(json.loads(r["provenance"])["description"]["truncated"] for r in rows)  # cut prose, kept
        cli(*args, "--retry-errors")
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == 6 and _summary(out)["rows_written"] == len(bad)
        assert vlm.stats()["chat_requests"] == 0  # the failed rows kept their descriptions: only text stages ran
        _check_rows(rows, "tiny-qwen")
        usage = _summary(out)["usage"]
        assert "llm:tiny-qwen" in usage


def test_dedicated_flags_set_stage_options(tmp_path):
    import typer.main

    from pixscribe.cli import _build_caption_config, app

    cmd = typer.main.get_command(app).commands["caption"]
    ctx = cmd.make_context("caption", [
        "in", "-o", "out", "--method", "textualize", "--describe-prompt", "Say.", "--description-column", "caption",
        "--extractor", "nouns", "--verify-mode", "any", "--box-threshold", "0.3", "--text-threshold", "0.2",
        "--max-objects", "5", "-S", "verify.mode=consensus"])
    p = dict(ctx.params)
    cfg = _build_caption_config(p.pop("config"), {k: v for k, v in p.items() if k not in ("stage_option", "stages")},
                                p["stage_option"], p["stages"])
    assert cfg.stages == {"describe": {"prompt": "Say.", "column": "caption"}, "objects": {"extractor": "nouns"},
                          "verify": {"mode": "consensus", "box_threshold": 0.3, "text_threshold": 0.2},
                          "rewrite": {"max_objects": 5}}  # -S wins over the dedicated flag


def test_unmet_description_column_fails_before_the_run(tmp_path):
    write_sample_photos(tmp_path / "in", ("coffee",))
    p = cli("caption", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--method", "textualize",
            "--description-column", "llava_caption", "--extractor", "nouns", "--vlm", "unused", check=False)
    assert p.returncode == 2 and "needs the field 'llava_caption'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()
