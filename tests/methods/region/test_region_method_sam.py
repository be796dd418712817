"""``--method region`` with the experts: points -> SAM -> caption and boxes -> SAM on a tiny
random-weight SAM of the real architecture (one image embedding per image, whatever the number
of rows), a SAM that cannot load, and ``--regions auto`` (Florence-2 proposals, scripted through
the real types since random weights find nothing, then the real tiny SAM)."""

from __future__ import annotations

import pytest
from fixtures_region import BLUE_BOX, RED_BOX, SCENE_SIZE, ColourBackend
from test_region_method import image_rows, region_rows, run, write_scene

W, H = SCENE_SIZE


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    from pixscribe.testing.tiny_experts import build_tiny_expert

    return str(build_tiny_expert("sam", tmp_path_factory.mktemp("sam")))


@pytest.fixture()
def embeddings(monkeypatch):
    """Counts SAM image embeddings (the expensive part SAM does once per image)."""
    from transformers import SamModel

    calls = []
    real = SamModel.get_image_embeddings
    monkeypatch.setattr(SamModel, "get_image_embeddings", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    return calls


def _sam(sam_dir, **kw):
    # random weights: a threshold that keeps every pixel SAM scores, so masks are never empty
    return dict(expert_models={"sam": sam_dir}, expert_options={"sam": {"mask_threshold": -1e9}}, device="cpu", **kw)


@pytest.mark.parametrize("shape", ["image_rows", "region_rows"])
def test_points_become_sam_masks_and_are_captioned(tmp_path, sam_dir, embeddings, shape):
    R, _ = write_scene(tmp_path)
    pts = [{"id": "p1", "points": [[70, 70]]}, {"id": "p2", "points": [[230, 150], [20, 20]], "labels": [1, 0]}]
    src = (image_rows if shape == "image_rows" else region_rows)(tmp_path, [*pts, R])
    be = ColourBackend()
    s, rows, m = run([src], tmp_path / "out", be, max_pixels=W * H // 4, **_sam(sam_dir))
    assert s.error_rows == 0 and len(embeddings) == 1  # one image, embedded once (three rows, or one)
    regs = rows[0]["regions"] if shape == "image_rows" else [r["region"] for r in rows]
    by = {x["region_id"]: x for x in regs}
    for k in ("p1", "p2"):
        x = by[k]
        assert x["source"] == "points" and x["mask"]["size"] == [H, W]  # in the frame the points were given in
        assert x["area"] > 0 and isinstance(x["score"], float) and isinstance(x["caption"], str) and x["caption"]
    assert by["R"]["caption"] == "red" and by["R"]["score"] is None  # a given mask does not go through SAM
    assert be.usage.requests == 3
    assert m.stages[0].options()["sam"]["model"] == sam_dir  # SAM is part of the fingerprint


def test_boxes_become_sam_masks_with_box_to_mask(tmp_path, sam_dir, embeddings):
    write_scene(tmp_path)
    src = image_rows(tmp_path, [{"id": "b", "box": list(RED_BOX)}, {"id": "bad", "box": [0, 0, 0, 5]}])
    s, rows, _ = run([src], tmp_path / "out", ColourBackend(), stages={"box_to_mask": "sam"}, **_sam(sam_dir))
    by = {x["region_id"]: x for x in rows[0]["regions"]}
    assert by["b"]["source"] == "box" and by["b"]["mask"]["size"] == [H, W] and isinstance(by["b"]["score"], float)
    assert by["b"]["caption"] and "no area" in by["bad"]["error"] and len(embeddings) == 1


def test_points_without_a_loadable_sam_are_region_errors(tmp_path):
    R, B = write_scene(tmp_path)
    src = image_rows(tmp_path, [R, {"id": "p", "points": [[70, 70]]}, B])
    s, rows, _ = run([src], tmp_path / "out", ColourBackend(), expert_models={"sam": str(tmp_path / "no-sam")})
    by = {x["region_id"]: x for x in rows[0]["regions"]}
    assert s.error_rows == 0 and by["R"]["caption"] == "red" and by["B"]["caption"] == "blue"
    assert by["p"]["error"].startswith("region: SAM (") and "could not be loaded" in by["p"]["error"]


@pytest.fixture()
def scripted_florence(tmp_path_factory, monkeypatch):
    """Florence-2 (tiny, real weights loaded) whose answers are the two squares, in the frame
    of the image it is given (pixscribe's budget-resized one)."""
    from pixscribe.experts.base import Detection
    from pixscribe.experts.florence import FlorenceExpert
    from pixscribe.testing.tiny_experts import build_tiny_expert

    def regions(self, images, **kw):
        out = []
        for im in images:
            sx, sy = im.width / W, im.height / H
            out.append([Detection.make([v * s for v, s in zip(b, (sx, sy, sx, sy))], 1.0, name, im.width, im.height)
                        for b, name in ((RED_BOX, "red square"), (BLUE_BOX, "blue square"))])  # fmt: skip
        return out

    monkeypatch.setattr(FlorenceExpert, "run", regions)
    return str(build_tiny_expert("florence2", tmp_path_factory.mktemp("florence")))


def test_regions_auto_proposes_boxes_then_sam_masks(tmp_path, sam_dir, scripted_florence, embeddings):
    write_scene(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "scene.png").rename(photos / "scene.png")
    models = {"sam": sam_dir, "dense": scripted_florence}
    # boxes as proposed: the colour reader names each square; boxes are in the input's frame
    s, rows, _ = run([photos], tmp_path / "boxes", ColourBackend(), max_pixels=W * H // 4, expert_models=models,
                     device="cpu", stages={"regions": "auto", "box_to_mask": "none"})  # fmt: skip
    (row,) = rows
    assert s.error_rows == 0 and row["region"] is None
    assert [(x["label"], x["caption"], x["box"]) for x in row["regions"]] == [
        ("red square", "red", list(map(float, RED_BOX))), ("blue square", "blue", list(map(float, BLUE_BOX)))]
    assert [x["region_id"] for x in row["regions"]] == [f"{row['id']}:0", f"{row['id']}:1"]
    # the default with auto: SAM turns the proposals into masks, keeping their labels
    s2, rows2, m = run([photos], tmp_path / "masks", ColourBackend(), expert_models=models,
                       expert_options={"sam": {"mask_threshold": -1e9}}, device="cpu", stages={"regions": "auto"})
    regs = rows2[0]["regions"]
    assert [x["label"] for x in regs] == ["red square", "blue square"] and len(embeddings) == 1
    assert all(x["mask"]["size"] == [H, W] and isinstance(x["score"], float) and x["caption"] for x in regs)
    assert m.stages[0].options()["proposer"]["model"] == scripted_florence


def test_proposals_are_ranked_capped_and_scaled_to_the_input_frame():
    from pixscribe.experts.base import Detection
    from pixscribe.methods.region.propose import to_regions

    dets = [Detection.make(b, s, lab, 100, 50) for b, s, lab in
            [((0, 0, 10, 10), 0.2, "low"), ((10, 10, 30, 20), 0.9, "high"), ((5, 5, 5, 9), 0.95, "flat"),
             ((50, 0, 100, 50), 0.5, "mid")]]  # fmt: skip
    rs = to_regions(dets, (100, 50), (200, 100), max_regions=2)
    assert [(r.extra["label"], r.box, r.index, r.size) for r in rs] == [
        ("high", (20.0, 20.0, 60.0, 40.0), 0, (200, 100)), ("mid", (100.0, 0.0, 200.0, 100.0), 1, (200, 100))]


def test_a_sam_that_cannot_load_stops_a_run_that_needs_it(tmp_path):
    from pixscribe.record import PixscribeError

    R, B = write_scene(tmp_path)
    broken = tmp_path / "broken-sam"  # weights that are not a SAM: there, so only loading finds out
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(PixscribeError, match="region sam .*could not be loaded"):
        run([image_rows(tmp_path, [R, B])], tmp_path / "o", ColourBackend(), stages={"box_to_mask": "sam"},
            expert_models={"sam": str(broken)})
    # a SAM that is not there at all is named before anything loads (offline: with every other missing model)
    with pytest.raises(PixscribeError, match=r"1 model\(s\) not here.*missing \(region: no such directory\)"):
        run([image_rows(tmp_path, [R, B])], tmp_path / "o2", ColourBackend(), stages={"box_to_mask": "sam"},
            expert_models={"sam": str(tmp_path / "missing")})
