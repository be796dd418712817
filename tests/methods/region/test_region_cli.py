"""``pixscribe caption --method region`` through the real command line: its flags, and end to
end on a tiny real VLM (random weights: the text is gibberish, every code path is real) in
both input shapes, resumed after a partial run, with points turned into masks by a tiny SAM."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_region import RED_BOX, SCENE_SIZE
from test_e2e_cli import cli
from test_region_method import write_scene
from typer.testing import CliRunner

from pixscribe import cli as cli_mod
from pixscribe.testing import write_sample_photos

W, H = SCENE_SIZE


def _config_of(monkeypatch, *args: str):
    """The RunConfig the caption command builds for ``args`` (the run itself is not started)."""
    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(cli_mod, "_run_caption", fake_run)
    r = CliRunner().invoke(cli_mod.app, ["caption", "in.jsonl", "-o", "out", *args])
    return seen.get("cfg"), r


def test_region_flags_map_to_the_region_stage(monkeypatch):
    cfg, _ = _config_of(monkeypatch, "--region-prompt", "som", "--task", "attribute", "--attribute", "color",
                        "--no-outline", "--box-to-mask", "sam", "--regions", "objects", "-S", "region.dim=0.5")
    assert cfg.method == "region"  # the region flags imply the method
    assert cfg.stages == {"region": {"prompt_mode": "som", "task": "attribute", "attribute": "color", "outline": False,
                                     "box_to_mask": "sam", "regions": "objects", "dim": 0.5}}  # fmt: skip
    cfg2, _ = _config_of(monkeypatch, "--regions", "auto", "-S", "region.regions=masks")  # -S speaks last
    assert cfg2.stages["region"]["regions"] == "masks"
    cfg3, r = _config_of(monkeypatch, "--method", "recap", "--region-prompt", "box", "--task", "global")
    assert cfg3 is None and r.exit_code == 2
    assert "--region-prompt, --task: for --method region, not --method recap" in r.output


def test_region_flags_are_in_help():
    out = cli("caption", "--help").stdout
    for flag in ("--region-prompt", "--task", "--attribute", "--outline", "--no-outline", "--box-to-mask", "--regions"):
        assert flag in out


def _inputs(d: Path) -> tuple[Path, Path]:
    """Image rows (three images, two regions each) and region rows (CompositionCap style: the
    image repeated on each of its rows; one region given as points, one with a bad box)."""
    R, B = write_scene(d)
    write_sample_photos(d, ("astronaut", "coffee"))
    box = {"id": "box", "box": [10, 20, 200, 180]}
    imgs = d / "images.jsonl"
    first = {"s": R, "a": {"box": list(RED_BOX)}, "c": {"bbox": [40, 40, 60, 60]}}  # a mask, a box, a COCO bbox
    imgs.write_text("".join(json.dumps({"id": n, "path": p, "regions": [{**first[n], "id": f"{n}-r"},
                                                                        {**box, "id": f"{n}-b"}]}) + "\n"
                            for n, p in (("s", "scene.png"), ("a", "astronaut.jpg"), ("c", "coffee.jpg"))))
    rows = [{"image_id": "s", "path": "scene.png", "region_id": "s-red", "mask": R["mask"], "attribute": "color"},
            {"image_id": "s", "path": "scene.png", "region_id": "s-pts", "points": [[70, 70]]},
            {"image_id": "s", "path": "scene.png", "region_id": "s-bad", "box": [0, 0, W + 50, 10]},
            {"image_id": "a", "path": "astronaut.jpg", "region_id": "a-box", "bbox": [5, 5, 100, 120]}]
    per = d / "regions.jsonl"
    per.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return imgs, per


def _caption(src: Path, out: Path, vlm: Path, *extra: str):
    return cli("caption", str(src), "-o", str(out), "--vlm", str(vlm), "--device", "cpu", "--max-new-tokens", "3",
               "--batch-size", "2", "--no-progress", *extra)  # fmt: skip


def _written(out: Path) -> int:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())["rows_written"]


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    from pixscribe.testing.tiny_experts import build_tiny_expert

    return build_tiny_expert("sam", tmp_path_factory.mktemp("sam"))


def test_image_rows_end_to_end_on_a_tiny_vlm_with_resume(tiny_vlms, tmp_path):
    imgs, _ = _inputs(tmp_path)
    out = tmp_path / "out"
    _caption(imgs, out, tiny_vlms["llava"], "--method", "region", "--limit", "1")
    assert _written(out) == 1
    p = _caption(imgs, out, tiny_vlms["llava"], "--method", "region")  # resumed: only the other two
    assert _written(out) == 2, p.stderr
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == ["a", "c", "s"] and all(r["error"] is None for r in rows.values())
    for k, r in rows.items():
        assert [x["region_id"] for x in r["regions"]] == [f"{k}-r", f"{k}-b"] and r["region"] is None
        assert all(isinstance(x["caption"], str) and x["caption"] for x in r["regions"])
        assert r["regions"][0]["box"] == list(map(float, RED_BOX)) and r["prompt_mode"] == "focal"
        assert r["model"] == str(tiny_vlms["llava"])
    _caption(imgs, out, tiny_vlms["llava"], "--method", "region")
    assert _written(out) == 0 and pq.read_table(out).num_rows == 3


def test_region_rows_end_to_end_with_points_through_a_tiny_sam(tiny_vlms, sam_dir, tmp_path):
    _, per = _inputs(tmp_path)
    conf = tmp_path / "run.yaml"  # SAM's weights and a threshold that keeps random-weight masks non-empty
    conf.write_text(f"expert_models: {{sam: '{sam_dir}'}}\nexpert_options: {{sam: {{mask_threshold: -1.0e+9}}}}\n")
    out = tmp_path / "out"
    args = ("--config", str(conf), "--region-prompt", "box", "--task", "attribute", "--attribute", "material",
            "-S", "region.box_convention=norm1_square")  # a LLaVA's config does not say which LLaVA it is
    _caption(per, out, tiny_vlms["llava"], *args, "--limit", "2")
    assert _written(out) == 2
    _caption(per, out, tiny_vlms["llava"], *args)
    assert _written(out) == 2
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == ["a-box", "s-bad", "s-pts", "s-red"]  # each row named by its region_id
    assert rows["s-bad"]["error"].startswith("region: box") and "outside" in rows["s-bad"]["error"]
    pts = rows["s-pts"]["region"]
    assert pts["source"] == "points" and pts["mask"]["size"] == [H, W] and isinstance(pts["score"], float)
    for k in ("a-box", "s-pts", "s-red"):
        r = rows[k]
        assert r["error"] is None and isinstance(r["caption"], str) and r["caption"] == r["region"]["caption"]
        assert r["task"] == "attribute" and r["prompt_mode"] == "box" and r["image_id"] == k[0]
    assert rows["s-red"]["attribute"] == "color" and rows["a-box"]["attribute"] == "material"
    run = json.loads((out / "_run.json").read_text())
    assert run["method"]["stages"][0]["sam"]["model"] == str(sam_dir)
