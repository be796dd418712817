"""Best of n by grounding (issue 25, point 3): ``--n N --select-by grounding`` keeps, for each
prompt, the sample whose noun phrases the detector grounds best (grounded / phrases).

A scripted VLM answers each image's samples in a known order and a scripted Grounding DINO
(the real detector class, answering from a table) finds known phrases, so the winner is known;
then one run from the command line on the tiny real Grounding DINO (random weights: the path
and the shapes, not the choice)."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import yaml

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.config import RunConfig
from pixscribe.engine.context import BuildContext
from pixscribe.engine.runner import Runner
from pixscribe.methods.recap import recap_method
from pixscribe.methods.recap.select import best
from pixscribe.testing.openai_server import ServerProcess
from pixscribe.testing.scripted_textualize import Scene, Script, ScriptedGroundingDino
from test_e2e_cli import cli

BOX = (0.1, 0.1, 0.6, 0.6)
# per image (by size): the samples the VLM gives, in order, and what the detector finds (score)
SAMPLES = {
    (320, 240): ["a red car next to a tree", "a blue boat on a lake with a dragon", "a car and a unicorn"],
    (200, 200): ["a cat", "a dog and a cat", "a cat on a sofa"],
}
FOUND = {
    (320, 240): {"red car": 0.6, "tree": 0.1, "car": 0.5, "blue boat": 0.7, "lake": 0.4},
    (200, 200): {"cat": 0.8, "sofa": 0.3},
}


class SamplesVLM(Backend):
    """Answers the k-th request of an image (by size) and prompt with its k-th scripted sample."""

    name = "scripted"
    model = "scripted-vlm"

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter = Counter()

    def _generate(self, requests):
        out = []
        for q in requests:
            size = (q.images[0].width, q.images[0].height)
            k = self.seen[size]
            self.seen[size] += 1
            out.append(GenerationResult(text=SAMPLES[size][k % 3], tokens_out=5))
        return out


def test_best_ties_and_failures():
    assert best([0.5, 0.9, 0.9], ["a", "b", "c"]) == 1  # the earlier on a tie
    assert best([None, 0.0], ["a", "b"]) == 1  # an unscored sample (no phrase) loses to a scored one
    assert best([None, None], [None, "b"]) == 1 and best([None, None], [None, None]) is None


def test_the_best_grounded_sample_is_the_caption(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for w, h in SAMPLES:
        Image.new("RGB", (w, h), (120, 90, 60)).save(photos / f"img{w}.png")
    script = Script([Scene(size, "", gdino={p: (s, BOX) for p, s in found.items()}) for size, found in FOUND.items()])
    gdino = ScriptedGroundingDino(script)
    cfg = RunConfig(inputs=[str(photos)], output=str(tmp_path / "out"), progress=False, vlm="scripted-vlm",
                    stages={"recap": {"n": 3, "temperature": 0.7}, "select": {"by": "grounding"}})
    ctx = BuildContext(cfg)
    vlm = SamplesVLM()
    ctx.pool.put(ctx.spec("vlm"), vlm)
    Runner(cfg, recap_method(ctx, {"grounding_dino": gdino})).run()
    summary = json.loads(sorted((tmp_path / "out" / "_state" / "summaries").glob("*.json"))[-1].read_text())
    rows = {(r["width"], r["height"]): r for r in pq.read_table(tmp_path / "out").to_pylist()}
    car, cat = rows[(320, 240)], rows[(200, 200)]
    # red car + (tree at 0.1 < 0.2: not grounded) = 1/2; blue boat, lake, (dragon) = 2/3; car, (unicorn) = 1/2
    assert car["re_caption_grounding"] == [0.5, 0.6667, 0.5]
    assert car["re_caption"] == car["caption"] == "a blue boat on a lake with a dragon"
    assert car["re_caption_samples"] == SAMPLES[(320, 240)]
    # cat = 1; dog, cat = 1/2; cat, sofa = 1: a tie, the earlier sample wins
    assert cat["re_caption_grounding"] == [1.0, 0.5, 1.0] and cat["re_caption"] == "a cat"
    prov = json.loads(car["provenance"])["re_caption"]
    assert prov["sample"] == 1 and prov["by"] == "grounding" and prov["model"] == "scripted-vlm"
    # one detector call for the batch's two images, each image's phrases of every sample checked once, alone
    assert (gdino.batches, gdino.calls) == (1, 2) and all(s["each"] for s in gdino.seen)
    asked = sorted(q for s in gdino.seen for qs in s["queries"] for q in qs)
    assert asked == sorted(["red car", "tree", "blue boat", "lake", "dragon", "car", "unicorn", "cat", "dog", "sofa"])
    assert summary["stages"]["select"]["computed"] == 2
    assert summary["usage"]["select"]["samples_scored"] == 6


def test_best_of_on_the_tiny_real_grounding_dino_from_the_cli(tmp_path):
    from pixscribe.testing import write_sample_photos
    from pixscribe.testing.tiny_experts import build_tiny_expert

    gd = build_tiny_expert("grounding_dino", tmp_path / "experts")
    write_sample_photos(tmp_path / "photos", ("astronaut", "coffee"))
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump({"expert_models": {"grounding_dino": str(gd)}, "device": "cpu"}))
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        cli("caption", str(tmp_path / "photos"), "-o", str(out), "--backend", "openai", "--base-url", srv.url,
            "--vlm", "m", "--config", str(conf), "--prompts", "cat=A cat on a sofa.,car=A red car near a tree.",
            "--n", "2", "--temperature", "0.7", "--select-by", "grounding", "--no-progress")
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["error"] is None, r["error"]
        for name in ("cat", "car"):
            scores = r[f"re_caption_{name}_grounding"]
            assert len(scores) == 2 and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
            assert r[f"re_caption_{name}"] in r[f"re_caption_{name}_samples"]
        stages = json.loads(r["stages"])
        assert stages["select"]["status"] == "ok"
    sel = next(s for s in json.loads((out / "_run.json").read_text())["method"]["stages"] if s["stage"] == "select")
    assert sel["by"] == "grounding" and sel["detectors"][0]["model"] == str(gd)
