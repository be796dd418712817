"""PancapChain's stage logic on a scripted VLM through the real engine: duplicates removed at
stages 1-3, "none" answers, the stage-4 prompt carrying the merged list, output boxes equal to
the scripted ones, and a request layout whose image part and text prefix are byte-identical
across the four stages of an image (checked on the OpenAI backend's real request bodies)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from fixtures_panoptic import (
    DISCOVER,
    MISSING,
    TAGGED,
    TOP_STRIP,
    PancapScript,
    panoptic_method,
    request_text,
)

from pixscribe.backends.base import GenerationResult
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import MethodError
from pixscribe.methods.panoptic import boxes as B
from pixscribe.methods.panoptic.prompts import PREAMBLE
from pixscribe.stages import quote
from pixscribe.methods.panoptic.chain import PAD_COLOR, square

STAGES = ("localize", "tag", "discover", "caption")


def cfg(photo_dir, out, **kw) -> RunConfig:
    return RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, vlm="scripted-vlm", method="panoptic",
                     batch_size=4, **kw)


def run(photo_dir, out, backend=None, **kw):
    c = cfg(photo_dir, out, **kw)
    b = backend or PancapScript()
    s = Runner(c, panoptic_method(c, b)).run()
    return s, b, {r["id"]: r for r in pq.read_table(out).to_pylist()}


def _wide(r) -> bool:
    return r["width"] > r["height"]


def test_four_stages_clean_merge_and_convert(photo_dir, tmp_path):
    s, b, rows = run(photo_dir, tmp_path / "out")
    assert s.error_rows == 0 and len(rows) == 6
    assert b.calls == {"localize": 6, "tag": 6, "discover": 6, "caption": 6}  # one request per image and stage
    for rid, r in rows.items():
        prov = json.loads(r["provenance"])
        # stage 1: the duplicate and the malformed item are gone; a box in the padding only for wide images
        boxes = [it.box for it in B.parse_model(r["boxes"])[0]]
        expect = [(100, 200, 400, 700), (500, 300, 900, 800)] + ([] if _wide(r) else [TOP_STRIP])
        assert boxes == expect
        rep = prov["boxes"]["parse"]
        assert rep["duplicates_removed"] == 1 and rep["problem_count"] == 1 and "not integers" in rep["problems"][0]
        assert rep.get("outside_image", 0) == (1 if _wide(r) else 0)
        # stage 2: the repeated pair (also in capitals) and the untagged item are gone
        assert [(it.tag, it.box) for it in B.parse_model(r["tagged"])[0]] == TAGGED
        assert prov["tagged"]["parse"] == {"items": 3, "duplicates_removed": 2, "untagged_skipped": 1}
        # stage 3: a list adds only its new pair; every way of saying "none" adds nothing
        answer = b.discover_answer[rid]
        missing = MISSING if answer == DISCOVER[0] else []
        assert [(it.tag, it.box) for it in B.parse_model(r["missing"])[0]] == missing
        assert prov["missing"]["parse"] == ({"items": 1, "duplicates_removed": 2} if missing else
                                            {"items": 0, "none": True})
        merged = TAGGED + missing
        assert [(it.tag, it.box) for it in B.parse_model(r["merged"])[0]] == merged
        # stage 4 was given exactly the merged list, as quoted data, after the instruction
        text = request_text(b.log[(rid, "caption")])
        assert text.endswith("\n" + quote(r["merged"], "entities"))
        # the entities: the scripted boxes, converted for this image, credited to their stage
        ents = json.loads(r["entities"])
        assert [(e["tag"], tuple(e["box_model"])) for e in ents] == merged
        assert [e["found_by"] for e in ents] == ["localize", "localize", "tag"] + ["discover"] * len(missing)
        for e in ents:
            assert tuple(e["box_norm"]) == B.model_to_reference(e["box_model"], r["width"], r["height"])
            px = B.model_to_pixels(e["box_model"], r["width"], r["height"])
            assert e["box"] == [round(v, 2) for v in px]
        # the caption: every box in the reference format, the malformed one removed and reported
        ref = [B.render_reference(B.model_to_reference(bx, r["width"], r["height"]))
               for bx in ((100, 200, 400, 700), (500, 300, 900, 800), (610, 260, 660, 330))]
        assert r["caption"] == (f"A brown dog {ref[0]} lies beside a grey sofa {ref[1]} under a lamp {ref[2]}, "
                                "in warm light.")
        assert r["caption_plain"] == "A brown dog lies beside a grey sofa under a lamp, in warm light."
        assert "not four integers" in prov["caption"]["parse"]["problems"][0]
        assert [json.loads(r["stages"])[st]["status"] for st in STAGES] == ["ok"] * 4
        assert r["model"] == "scripted-vlm" and r["prompt_sha"] == prov["caption"]["prompt_sha"]
    assert {a for a in b.discover_answer.values()} == set(DISCOVER)  # every variant was met


def test_the_stages_chain_on_the_previous_cleaned_list(photo_dir, tmp_path):
    _, b, rows = run(photo_dir, tmp_path / "out")
    rid, r = next(iter(rows.items()))
    assert request_text(b.log[(rid, "tag")]).endswith("\n" + quote(r["boxes"], "boxes"))
    assert request_text(b.log[(rid, "discover")]).endswith("\n" + quote(r["tagged"], "entities"))
    assert "quoted data" not in request_text(b.log[(rid, "localize")])
    for st in STAGES:  # the official settings
        req = b.log[(rid, st)]
        assert (req.sampling.temperature, req.sampling.max_new_tokens) == (0.0, 1024)


def test_prefix_layout_is_byte_identical_across_stages(photo_dir, tmp_path):
    """The HTTP request bodies of the four stages of an image share their image part byte for
    byte and the text up to the instruction: what a server's prefix cache needs."""
    _, b, rows = run(photo_dir, tmp_path / "out")
    http = OpenAIBackend("m", "http://127.0.0.1:9/v1")  # only builds bodies, never connects
    for rid in rows:
        bodies = [json.loads(http._body(b.log[(rid, st)])) for st in STAGES]
        parts = [body["messages"][-1]["content"] for body in bodies]
        assert all(len(body["messages"]) == 1 and p[0]["type"] == "image_url" for body, p in zip(bodies, parts))
        first = parts[0][0]["image_url"]["url"]
        assert first.startswith("data:image/jpeg;base64,")
        assert all(p[0]["image_url"]["url"] == first for p in parts[1:])
        texts = [p[1]["text"] for p in parts]
        assert all(t.startswith(PREAMBLE + "\n\n") for t in texts)
        raw = [http._body(b.log[(rid, st)]) for st in STAGES]  # the serialised prefix, to the preamble's end
        cut = raw[0].index(json.dumps(PREAMBLE)[1:-1].encode()) + len(json.dumps(PREAMBLE)[1:-1])
        assert len({x[:cut] for x in raw}) == 1


def test_padding_sends_the_llava_square(photo_dir, tmp_path):
    _, b, rows = run(photo_dir, tmp_path / "out")
    seen = set()
    for rid, r in rows.items():
        img = b.log[(rid, "localize")].images[0]
        w, h = r["width"], r["height"]
        side, ox, oy = B.pad_geometry(w, h)
        assert img.size == (side, side)
        if (w, h) != (side, side):
            corner = (0, 0) if (ox or oy) else None
            assert img.getpixel(corner) == PAD_COLOR
            seen.add("wide" if w > h else "tall")
    assert seen == {"wide", "tall"}
    # pixel-exact against LLaVA's construction (a square filled with the colour, the image pasted
    # at ((side - w) // 2, (side - h) // 2)), odd differences included
    import numpy as np
    from PIL import Image

    for w, h in [(6, 2), (2, 6), (7, 2), (7, 6), (6, 7), (1, 9), (641, 427), (5, 5)]:
        im = Image.fromarray(np.random.default_rng(w * h).integers(0, 255, (h, w, 3), dtype=np.uint8))
        side = max(w, h)
        ref = Image.new("RGB", (side, side), PAD_COLOR)
        ref.paste(im, ((side - w) // 2, (side - h) // 2))
        assert np.array_equal(np.asarray(square(im)), np.asarray(ref)), (w, h)
    # pad off: the image as decoded
    _, b2, rows2 = run(photo_dir, tmp_path / "nopad", stages={s: {"pad": False} for s in STAGES})
    rid, r = next(iter(rows2.items()))
    assert b2.log[(rid, "tag")].images[0].size == (r["width"], r["height"])


def test_the_square_is_made_once_and_lives_only_with_its_image():
    import gc

    from PIL import Image

    from pixscribe.record import Record
    from pixscribe.methods.panoptic import chain as SP

    r = Record(source="x", id="x")
    r.image = Image.new("RGB", (64, 32), (1, 2, 3))
    a, b = SP.stage_image(r, {}), SP.stage_image(r, {"pad": True})
    assert a is b and a.size == (64, 64) and len(SP._SQUARES) >= 1
    key = (id(r.image), PAD_COLOR)
    assert key in SP._SQUARES
    r.drop_image()
    del a, b
    gc.collect()
    assert key not in SP._SQUARES


def test_changing_the_caption_prompt_reuses_the_first_three_stages(photo_dir, tmp_path):
    out = tmp_path / "out"
    _, _, first = run(photo_dir, out)
    s, b, rows = run(photo_dir, out, overwrite=True, stages={"caption": {"prompt": "Describe it all."}})
    assert b.calls == {"other": 6}  # only the caption stage asked the model (with a prompt not in the script)
    assert s.stages["discover"]["reused"] == 6 and s.stages["caption"]["computed"] == 6
    for rid, r in rows.items():
        assert (r["boxes"], r["tagged"], r["merged"]) == (first[rid]["boxes"], first[rid]["tagged"], first[rid]["merged"])
        assert json.loads(r["provenance"])["merged"]["reused"] is True
        assert "Describe it all." in request_text(b.log[(rid, "other")])


def test_method_options_are_checked(photo_dir, tmp_path):
    with pytest.raises(MethodError, match="stages.caption.entities"):
        panoptic_method(cfg(photo_dir, tmp_path / "x", stages={"caption": {"entities": "magic"}}), PancapScript())
    with pytest.raises(MethodError, match="no stage 'proposals'"):
        panoptic_method(cfg(photo_dir, tmp_path / "x", stages={"proposals": {"task": "<OD>"}}), PancapScript())
    with pytest.raises(MethodError, match=r"stages.tag: unknown option\(s\) temprature"):
        panoptic_method(cfg(photo_dir, tmp_path / "x", stages={"tag": {"temprature": 0}}), PancapScript())


def test_a_failed_stage_fails_only_its_row_and_retry_redoes_it(photo_dir, tmp_path):
    out = tmp_path / "out"
    def discover(req):  # the rocket (640 x 427, a 640 px square) fails at stage 3
        return GenerationResult(error="http: 500 scripted") if req.images[0].width == 640 else "None"

    failing = PancapScript({"discover": discover})
    _, _, rows = run(photo_dir, out, failing)
    bad = [r for r in rows.values() if r["error"]]
    assert len(bad) == 1 and bad[0]["error"].startswith("generate: http: 500") and bad[0]["boxes"]
    _, b2, rows2 = run(photo_dir, out, retry_errors=True)
    assert b2.calls == {"discover": 1, "caption": 1} and all(r["error"] is None for r in rows2.values())


@pytest.mark.parametrize("wide", [True, False])
def test_structured_caption_renders_prose_from_json(tmp_path, wide):
    from pixscribe.methods.panoptic.caption import render_structured

    w, h = (640, 427) if wide else (400, 600)
    obj = {"entities": [{"id": "E1", "tag": "dog", "box": [100, 200, 400, 700], "attributes": ["brown", "asleep"]},
                        {"id": "E2", "tag": "sofa", "box": [500, 300, 900, 800], "attributes": []},
                        {"id": "E3", "tag": "dog", "box": [5, 5, 2, 9], "attributes": ["small"]}],
           "relations": [{"subject": "E1", "predicate": "lies beside", "object": "E2"},
                         {"subject": "E9", "predicate": "on", "object": "E2"}],
           "global": ["warm indoor light", "photograph"]}
    text, problems = render_structured(obj, w, h)
    r1 = B.render_reference(B.model_to_reference((100, 200, 400, 700), w, h))
    r2 = B.render_reference(B.model_to_reference((500, 300, 900, 800), w, h))
    assert text == (f"The dog {r1} is brown and asleep. There is a sofa {r2}. The dog is small. "
                    f"The dog {r1} lies beside the sofa. Global state of the image: warm indoor light; photograph.")
    assert problems == ["entity 'E3': box is not ordered in 0..999", "relation 'E9' -> 'E2': unknown entity id"]


def test_structured_variant_through_the_engine(photo_dir, tmp_path):
    obj = {"entities": [{"id": "E1", "tag": "dog", "box": [100, 200, 400, 700], "attributes": ["brown"]}],
           "relations": [], "global": ["daylight"]}
    b = PancapScript({"structured": json.dumps(obj)})
    s, b, rows = run(photo_dir, tmp_path / "out", b, stages={"caption": {"structured": True}})
    assert s.error_rows == 0 and b.calls["structured"] == 6
    for rid, r in rows.items():
        req = b.log[(rid, "structured")]
        assert req.json_schema is not None and set(req.json_schema["required"]) == {"entities", "relations", "global"}
        ref = B.render_reference(B.model_to_reference((100, 200, 400, 700), r["width"], r["height"]))
        assert r["caption"] == f"The dog {ref} is brown. Global state of the image: daylight."
        assert json.loads(r["panoptic_json"]) == obj and r["caption_plain"] == "The dog is brown. Global state of " \
            "the image: daylight."


def test_consistency_vlm_flags_contradicted_entities(photo_dir, tmp_path):
    second = PancapScript({"consistency": json.dumps({"contradicted": [
        {"id": "E2", "reason": "no sofa in the image"}, {"id": "E7", "reason": "?"}]})}, model="second-vlm")
    c = cfg(photo_dir, tmp_path / "out", models={"consistency": {"model": "second-vlm"}})
    first = PancapScript()
    s = Runner(c, panoptic_method(c, first, consistency=second)).run()
    assert s.error_rows == 0 and second.calls == {"consistency": 6} and "consistency" not in first.calls
    for r in pq.read_table(tmp_path / "out").to_pylist():
        flags = json.loads(r["consistency"])
        assert flags["checked"] == len(json.loads(r["entities"])) and flags["unknown_ids"] == ["E7"]
        assert flags["contradicted"] == [{"index": 1, "id": "E2", "tag": "sofa", "box_norm":
                                          json.loads(r["entities"])[1]["box_norm"], "reason": "no sofa in the image"}]
        text = request_text(second.log[(r["id"], "consistency")])
        assert quote(r["caption"], "description") in text and "E2 = sofa <box>[[500, 300, 900, 800]]</box>" in text
        assert json.loads(r["provenance"])["consistency"]["model"] == "second-vlm"
        assert r["caption"].startswith("A brown dog")  # the caption is still the first VLM's


def test_caption_conversion_cases():
    from pixscribe.methods.panoptic.caption import plain, to_reference

    w, h = 600, 400
    r = lambda b: B.render_reference(B.model_to_reference(b, w, h))
    text, bad = to_reference("two cups <box>[[1, 200, 10, 300], [20, 200, 30, 300]]</box> and a tray "
                             "[[0.100, 0.2, 0.5, 0.80]] near [[0, 0, 1, 1]] and [[0.5, 0.2, 0.1]] end", w, h)
    both = "[[" + r((1, 200, 10, 300))[2:-2] + "], [" + r((20, 200, 30, 300))[2:-2] + "]]"
    assert text == f"two cups {both} and a tray [[0.100, 0.200, 0.500, 0.800]] near {r((0, 0, 1, 1))} and end"
    assert [p.reason for p in bad] == ["not four numbers"]
    assert plain(text) == "two cups and a tray near and end"
    assert to_reference(None, w, h) == ("", [])
