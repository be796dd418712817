"""D2I-Bench through `pixscribe eval --d2i`: CLIP image-image cosine on real files (a tiny CLIP),
and generation with --t2i through diffusers on a tiny pipeline built locally."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixscribe.testing import sample_photo
from test_metrics_embed import tiny_clip  # noqa: F401  (the module's tiny CLIP fixture)


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixscribe", "eval", *args], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture()
def d2i_data(tmp_path):
    orig, gen = tmp_path / "orig", tmp_path / "gen"
    orig.mkdir()
    gen.mkdir()
    for i, name in (("1", "chelsea"), ("2", "coffee"), ("3", "rocket")):
        sample_photo(name).save(orig / f"{i}.jpg")
    (gen / "1.jpg").write_bytes((orig / "1.jpg").read_bytes())  # a perfect redraw
    sample_photo("astronaut").save(gen / "2.png")  # another picture; "3" was never drawn
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in
                            (("1", "a cat"), ("2", "a cup of coffee"), ("3", "a rocket"))))
    return tmp_path, pred, orig, gen


def test_d2i_cosine_on_real_files(d2i_data, tiny_clip):  # noqa: F811
    from pixscribe.metrics.embed import ClipScorer

    tmp, pred, orig, gen = d2i_data
    rep = tmp / "d2i.json"
    p = _eval("--pred", str(pred), "--d2i", str(gen), "--images", str(orig), "--clip-model", tiny_clip, "-o", str(rep))
    assert p.returncode == 0, p.stderr
    r = json.loads(rep.read_text())
    assert r["per_image"]["1"] == pytest.approx(1.0, abs=1e-5) and r["missing"] == {"count": 1, "ids": ["3"]}
    c = ClipScorer(tiny_clip)
    a, b = c.embed_images([sample_photo("astronaut"), Image.open(orig / "2.jpg").convert("RGB")])
    assert r["per_image"]["2"] == pytest.approx(float(a @ b), abs=1e-5) and r["per_image"]["2"] < 0.9999
    assert r["corpus"]["d2i_clip"] == pytest.approx((r["per_image"]["1"] + r["per_image"]["2"]) / 2)
    assert "d2i_clip" in p.stdout and "1 without a generated or original image" in p.stdout


def test_t2i_draws_the_captions_with_a_tiny_diffusers_pipeline(d2i_data, tiny_clip):  # noqa: F811
    import torch
    from diffusers import DiffusionPipeline

    from pixscribe.testing.tiny_t2i import build_tiny_t2i

    tmp, pred, orig, _ = d2i_data
    model = build_tiny_t2i(tmp / "tiny_t2i")
    gen = tmp / "drawn"
    args = ["--pred", str(pred), "--d2i", str(gen), "--t2i", str(model), "--t2i-size", "32", "--t2i-steps", "2",
            "--images", str(orig), "--clip-model", tiny_clip, "-o", str(tmp / "r.json")]
    p = _eval(*args)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in gen.iterdir()) == ["1.png", "2.png", "3.png"]
    drawn = np.asarray(Image.open(gen / "2.png"))
    pipe = DiffusionPipeline.from_pretrained(model, use_safetensors=True)
    same = pipe("a cup of coffee", height=32, width=32, num_inference_steps=2,
                generator=torch.Generator("cpu").manual_seed(23), output_type="pil").images[0]
    assert drawn.shape == (32, 32, 3) and np.array_equal(drawn, np.asarray(same))  # seed 23, as IT
    r = json.loads((tmp / "r.json").read_text())
    assert r["n_images"] == 3 and -1.0 <= r["corpus"]["d2i_clip"] <= 1.0 and r["info"]["seed"] == 23
    before = (gen / "1.png").stat().st_mtime_ns
    assert _eval(*args).returncode == 0 and (gen / "1.png").stat().st_mtime_ns == before  # drawn images are kept


def test_d2i_option_errors(d2i_data):
    from typer.testing import CliRunner

    from pixscribe.cli import app

    tmp, pred, orig, gen = d2i_data

    def run(*a):
        r = CliRunner().invoke(app, ["eval", "--pred", str(pred), *a])
        return r.exit_code, r.output

    code, out = run("--t2i", "m")
    assert code == 2 and "give --d2i too" in out
    code, out = run("--d2i", str(gen), "--refs", str(pred))
    assert code == 2 and "not references" in out
    code, out = run("--d2i", str(gen))
    assert code == 2 and "--images ORIG_DIR" in out
    code, out = run()
    assert code == 2 and "--refs is required" in out
