"""Each phrase checked alone (Image Textualization's rule) with the image's own work done once:
the same detections as one detector run per phrase, on the tiny real-architecture detectors and on
a real-size random-weight Grounding DINO, and a guard on transformers' GroundingDinoModel shape."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoConvModel

from fixtures_tipcap import one_thread
from pixscribe.experts import gdino_image
from pixscribe.experts.detection import GroundingDinoExpert, OwlV2Expert
from pixscribe.testing import sample_photo

# four sizes after the processor (two of them equal, so pairs of two images share forwards), a lone
# square image (its smallest feature level is 1x1), and an image without phrases
NAMES = ["chelsea", "rocket", "astronaut", "coffee", "page"]
PHRASES = [["a cat", "a striped sofa on a wooden table", "cat"], ["a rocket"], ["an astronaut", "a flag"],
           ["a cup of coffee", "spoon", "a white saucer next to a spoon", "a cat"], []]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run faster on one thread, and much faster on a machine shared with other work."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def photos():
    return [sample_photo(n) for n in NAMES]


def per_phrase(det, images, phrases, **kw):
    """The reference: one detector run per (image, phrase), nothing shared."""
    return [[d for p in ps for d in det.run([im], [[p]], **kw)[0]] for im, ps in zip(images, phrases)]


def assert_same(got, want, box_tol=1e-2, score_tol=1e-4):
    """The same detections (label, box within box_tol px, score within score_tol), in any order."""
    assert len(got) == len(want)
    left = list(want)
    for d in got:
        match = [w for w in left if w.label == d.label and abs(w.score - d.score) <= score_tol
                 and max(abs(a - b) for a, b in zip(w.box, d.box)) <= box_tol]  # fmt: skip
        assert match, f"no per-phrase detection matches {d}"
        left.remove(match[0])


def count_rows(module):
    """How many images went through ``module`` (a forward hook summing batch sizes)."""
    seen = []

    def hook(m, args, kwargs, out):
        seen.append((args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))).shape[0])

    return seen, module.register_forward_hook(hook, with_kwargs=True)


@pytest.fixture(scope="module")
def gdino(tiny_experts):
    det = GroundingDinoExpert(str(tiny_experts["grounding_dino"]), device="cpu", batch_size=3)
    det.setup()
    return det


def test_tiny_grounding_dino_shared_image_pass_equals_per_phrase(gdino, photos):
    kw = {"box_threshold": 0.0, "text_threshold": 0.0}  # every box of every pass is compared
    rows, handle = count_rows(gdino.net.model.backbone)
    try:
        shared = gdino.run(photos, PHRASES, each=True, **kw)
        backbone_rows = sum(rows)
        rows.clear()
        want = per_phrase(gdino, photos, PHRASES, **kw)
    finally:
        handle.remove()
    assert backbone_rows == 4  # once per image that has phrases; the per-phrase path: once per phrase
    assert sum(rows) == sum(len(p) for p in PHRASES) == 10
    for got, ref, ps in zip(shared, want, PHRASES):
        assert len(got) == 20 * len(ps)  # 20 queries per pass, all kept at threshold 0
        assert_same(got, ref)
    assert [d.score for d in shared[0]] == sorted((d.score for d in shared[0]), reverse=True)


def test_shared_pass_equals_per_phrase_at_real_thresholds(gdino, photos):
    kw = {"box_threshold": 0.2, "text_threshold": 0.18}  # IT's
    shared = gdino.run(photos, PHRASES, each=True, **kw)
    for got, ref in zip(shared, per_phrase(gdino, photos, PHRASES, **kw)):
        assert_same(got, ref)


def test_tiny_owlv2_all_phrases_in_one_call_equals_per_phrase(tiny_experts, photos):
    det = OwlV2Expert(str(tiny_experts["owlv2"]), device="cpu", batch_size=3)
    det.setup()
    kw = {"box_threshold": 0.0}
    rows, handle = count_rows(det.net.owlv2.vision_model)
    try:
        shared = det.run(photos, PHRASES, each=True, **kw)
        vision_rows = sum(rows)
    finally:
        handle.remove()
    assert vision_rows == 4  # one image embedding per image with phrases
    for got, ref in zip(shared, per_phrase(det, photos, PHRASES, **kw)):
        assert_same(got, ref)
    # why the boxes are kept per query: the processor's own post-processing gives each box only
    # the query it scores best on, so a joint call finds fewer (phrase, box) pairs
    det.nms_iou = None
    joint = det.run(photos[:1], PHRASES[:1], **kw)[0]
    each = det.run(photos[:1], PHRASES[:1], each=True, **kw)[0]
    assert len(joint) == 16 and len(each) == 16 * 3  # 4x4 patches of the 64 px input


def test_the_pixels_reach_the_model_only_through_the_backbone(gdino, photos):
    """Guard on transformers' GroundingDinoModel: the shape the shared pass relies on. It fails if an
    update renames the backbone, calls it more than once, or reads the pixels anywhere else."""
    assert gdino_image.structure_problem(gdino.net.model) is None
    pixels = gdino.processor(images=[photos[0]], return_tensors="pt")
    text = gdino.processor(text=["a cat.", "a striped sofa."], return_tensors="pt", padding=True)
    with torch.inference_mode():
        (side,) = gdino_image.image_sides(gdino.net.model, pixels["pixel_values"], pixels["pixel_mask"])
        batch = {**text, "pixel_mask": pixels["pixel_mask"].repeat(2, 1, 1)}
        real = gdino.net(pixel_values=pixels["pixel_values"].repeat(2, 1, 1, 1), **batch)
        noise = torch.randn_like(pixels["pixel_values"]).repeat(2, 1, 1, 1)
        with gdino_image.serving(gdino.net.model, [side, side]) as served:
            fed = gdino.net(pixel_values=noise, **batch)
    assert served.calls == 1
    assert torch.allclose(real.logits, fed.logits, atol=1e-5) and torch.allclose(real.pred_boxes, fed.pred_boxes)
    assert isinstance(gdino.net.model.backbone, GroundingDinoConvModel)  # put back after the block


def test_serving_fails_loudly_when_the_backbone_is_not_called_once(gdino, photos):
    pixels = gdino.processor(images=[photos[0]], text=["a cat."], return_tensors="pt")
    with torch.inference_mode():
        (side,) = gdino_image.image_sides(gdino.net.model, pixels["pixel_values"], pixels["pixel_mask"])
        with pytest.raises(RuntimeError, match="called its backbone 2 times.*share_image: false"):
            with gdino_image.serving(gdino.net.model, [side]):
                gdino.net(**pixels)
                gdino.net(**pixels)
    assert isinstance(gdino.net.model.backbone, GroundingDinoConvModel)


def test_a_changed_structure_falls_back_to_the_per_phrase_path(gdino, photos, monkeypatch, caplog):
    monkeypatch.setattr(gdino_image, "structure_problem", lambda model: "backbone renamed")
    monkeypatch.setattr(gdino, "_warned", False, raising=False)
    rows, handle = count_rows(gdino.net.model.backbone)
    try:
        with caplog.at_level(logging.WARNING, logger="pixscribe"):
            got = gdino.run(photos[:1], PHRASES[:1], each=True, box_threshold=0.2, text_threshold=0.18)
    finally:
        handle.remove()
    assert sum(rows) == 3 and "per phrase (backbone renamed)" in caplog.text
    monkeypatch.undo()
    gdino.share_image = False  # the switch the error message names: the per-phrase path, no warning
    caplog.clear()
    try:
        rows, handle = count_rows(gdino.net.model.backbone)
        with caplog.at_level(logging.WARNING, logger="pixscribe"):
            off = gdino.run(photos[:1], PHRASES[:1], each=True, box_threshold=0.2, text_threshold=0.18)
        handle.remove()
    finally:
        gdino.share_image = True
    assert sum(rows) == 3 and not caplog.text
    assert_same(off[0], got[0])
    assert_same(got[0], per_phrase(gdino, photos[:1], PHRASES[:1], box_threshold=0.2, text_threshold=0.18)[0])


@pytest.mark.slow  # a 172M-parameter model on 2 shared cores: about a minute
def test_real_size_grounding_dino_shared_image_pass_equals_per_phrase():
    from pixscribe.testing.real_gdino import real_size_grounding_dino

    det = real_size_grounding_dino("tiny", shortest_edge=224, longest_edge=320, batch_size=2)
    img = sample_photo("chelsea")
    phrases = [["a cat", "a wooden table"]]
    kw = {"box_threshold": 0.0, "text_threshold": 0.0}  # all 900 queries of each pass
    shared = det.run([img], phrases, each=True, **kw)[0]
    want = per_phrase(det, [img], phrases, **kw)[0]
    assert len(shared) == 900 * 2
    assert_same(shared, want)


def _records(photos, phrases):
    from pixscribe.record import Record

    out = []
    for k, (img, ps) in enumerate(zip(photos, phrases)):
        r = Record(source=f"p{k}", id=f"p{k}")
        r.image, (r.width, r.height) = img, img.size
        r.fields["phrases"] = list(ps)
        out.append(r)
    return out


@pytest.mark.parametrize("mode", ["single", "consensus", "any"])
def test_verify_stage_groundings_equal_one_check_per_phrase(mode, tiny_experts, gdino, photos):
    from pixscribe.methods.textualize.verify import DEFAULTS, VerifyStage, grounding_json

    owl = OwlV2Expert(str(tiny_experts["owlv2"]), device="cpu", batch_size=3)
    # the tiny Grounding DINO scores every phrase near 1; OWLv2 gives 0.06 to 1.0: at 0.5 it splits the
    # phrases, so in consensus mode some are grounded and some are not
    opts = {**DEFAULTS, "mode": mode, "box_threshold": 0.5, "text_threshold": 0.5, "owlv2_threshold": 0.5,
            "iou": 0.0}  # fmt: skip
    stage = VerifyStage({"grounding_dino": gdino, "owlv2": owl}, opts)
    stage.setup()
    recs = stage(_records(photos, PHRASES))
    grounded = []
    for r, ps in zip(recs, PHRASES):
        want = [grounding_json(g) for p in ps for g in stage.verifier.verify_batch([r.image], [[p]])[0]]
        assert [o["phrase"] for o in r.fields["objects"]] == ps
        for got, ref in zip(r.fields["objects"], want):
            assert got["grounded"] == ref["grounded"] and abs(got["score"] - ref["score"]) <= 2e-4
            assert got["support"].keys() == ref["support"].keys()
            assert all(abs(got["support"][k] - ref["support"][k]) <= 2e-4 for k in ref["support"])
            if ref["box"] is not None:
                assert max(abs(a - b) for a, b in zip(got["box"], ref["box"])) <= 1e-2
            grounded.append(got["grounded"])
        assert r.fields["hallucinations"] == [o["phrase"] for o in r.fields["objects"] if not o["grounded"]]
    assert any(grounded) and (mode != "consensus" or not all(grounded)), "the thresholds should split the phrases"
