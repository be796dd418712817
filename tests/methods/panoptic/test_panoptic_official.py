"""``--prompt-set official``: PancapChain's four requests as the official inference code sends them.

tests/golden/pancapchain_official_requests.json holds scripted replies and the request texts the
official code (Visual-AI/Pancap llava/eval/model_vqa_loader_pancapchain.py, its own prompt strings
and list functions, run outside the project) builds from them; here the real engine runs the chain
on a scripted VLM that gives those replies, and every request must equal the golden text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_panoptic import panoptic_method, request_text

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import MethodError
from pixscribe.methods.panoptic import official as O
from pixscribe.methods.panoptic.boxes import ModelItem
from pixscribe.methods.panoptic.prompts import OFFICIAL, PREAMBLE

GOLD = json.loads((Path(__file__).resolve().parents[2] / "golden" / "pancapchain_official_requests.json").read_text())
REPLIES, WANT = GOLD["replies"], GOLD["requests"]


class OfficialScript(Backend):
    """Answers each official request with the golden reply; stage 3's answer cycles through the
    golden ones in order of first request (``self.variant[record id]``). Every request is kept."""

    name = "scripted"

    def __init__(self):
        super().__init__()
        self.model = "scripted-vlm"
        self.log: dict[tuple[str, str], GenerationRequest] = {}
        self.variant: dict[str, int] = {}

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            text = request_text(r)
            stage = next(s for s, p in OFFICIAL.items() if text.startswith(p))
            self.log[(r.id, stage)] = r
            if stage == "discover":
                n = self.variant.setdefault(r.id, len(self.variant) % len(REPLIES["discover"]))
                answer = REPLIES["discover"][n]
            else:
                answer = REPLIES[stage]
            out.append(GenerationResult(text=answer, tokens_out=len(answer.split())))
        return out


def _cfg(photo_dir, out, **stages) -> RunConfig:
    return RunConfig(inputs=[str(photo_dir)], output=str(out), progress=False, vlm="scripted-vlm", method="panoptic",
                     batch_size=4, stages={"caption": {"prompt_set": "official"}, **stages})


def test_official_requests_equal_the_official_code_byte_for_byte(photo_dir, tmp_path):
    c = _cfg(photo_dir, tmp_path / "out")
    b = OfficialScript()
    s = Runner(c, panoptic_method(c, b)).run()
    assert s.error_rows == 0
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert len(rows) == 6
    for rid, r in rows.items():
        v = b.variant[rid]
        for stage in ("localize", "tag", "discover"):
            assert request_text(b.log[(rid, stage)]) == WANT[stage], stage
        assert request_text(b.log[(rid, "caption")]) == WANT["caption"][v]
        content = b.log[(rid, "caption")].messages[-1]["content"]
        assert [p["type"] for p in content] == ["image", "text"]  # the image first, then the text alone
        assert PREAMBLE not in request_text(b.log[(rid, "tag")])
        # the columns hold the lists the next stage was given
        assert WANT["tag"].endswith(" " + r["boxes"]) and WANT["discover"].endswith(" " + r["tagged"])
        assert WANT["caption"][v].endswith(" " + r["merged"])
        assert [e["tag"] for e in json.loads(r["entities"])] == [it.tag for it in O.read_pairs(r["merged"]).items]
    assert len({b.variant[k] for k in rows}) == 5  # six images: every stage-3 answer was used


def test_official_list_rules():
    # stage 1: a repeat dropped, reading stops at the first malformed item (the box after it is lost)
    c = O.read_boxes("<box>[[1, 2, 3, 4]]</box>, <box>[[1, 2, 3, 4]]</box>, <box>[[1,2,3,4]]</box>, "
                     "<box>[[5, 6, 7, 8]]</box>")
    assert [it.box for it in c.items] == [(1, 2, 3, 4)] and c.duplicates == 1 and c.stopped_at == "<box>[[1,2,3,4]]"
    # coordinates are not checked; a tagged item at stage 1 stops it
    assert [it.box for it in O.read_boxes("<box>[[-5, 2000, 3, 1]]</box>, dog <box>[[1, 2, 3, 4]]</box>").items] == [
        (-5, 2000, 3, 1)]
    # stage 2: tags compared exactly, an untagged item stops the reading
    p = O.read_pairs("dog <box>[[1, 2, 3, 4]]</box>, Dog <box>[[1, 2, 3, 4]]</box>, <box>[[9, 9, 9, 9]]</box>, "
                     "cat <box>[[1, 1, 2, 2]]</box>")
    assert [(it.tag, it.box) for it in p.items] == [("dog", (1, 2, 3, 4)), ("Dog", (1, 2, 3, 4))]
    # stage 3: "None" at the start adds nothing, whatever follows; "none" is read as a list and adds nothing
    base, merged = O.merge("dog <box>[[1, 2, 3, 4]]</box>", "None, but cat <box>[[1, 1, 2, 2]]</box>")
    assert merged.items == base and merged.none
    base, merged = O.merge("dog <box>[[1, 2, 3, 4]]</box>", "none")
    assert merged.items == base and not merged.none and merged.stopped_at == "none"
    # a sentence before a box is the tag
    _, merged = O.merge("dog <box>[[1, 2, 3, 4]]</box>", "There is a cat <box>[[1, 1, 2, 2]]</box>")
    assert merged.items[-1] == ModelItem("There is a cat", (1, 1, 2, 2))
    assert O.render([ModelItem("", (1, 2, 3, 4)), ModelItem(None, (0, 0, 1, 1))]) == \
        " <box>[[1, 2, 3, 4]]</box>, <box>[[0, 0, 1, 1]]</box>"


def _fingerprints(tmp_path, **stages):
    from pixscribe.engine.context import BuildContext
    from pixscribe.engine.run import image_options

    c = RunConfig(inputs=["x"], output=str(tmp_path / "o"), vlm="scripted-vlm", method="panoptic", stages=stages)
    ctx = BuildContext(c)
    ctx.pool.put(ctx.spec("vlm"), OfficialScript())
    m = ctx.build("panoptic")
    return m.with_fingerprints(image_options(c)).fingerprints, m


def test_default_prompt_set_leaves_fingerprints_alone(tmp_path):
    default, m = _fingerprints(tmp_path)
    assert all("prompt_set" not in st.options() for st in m.stages)  # so runs made before it resume
    said, _ = _fingerprints(tmp_path, caption={"prompt_set": "pixscribe"})
    assert said == default
    official, m = _fingerprints(tmp_path, caption={"prompt_set": "official"})
    assert all(official[k] != default[k] for k in default)
    assert [st.opts["prompt"] for st in m.stages] == [OFFICIAL[k] for k in ("localize", "tag", "discover", "caption")]
    assert all(st.opts.get("preamble") is None and st.options()["prompt_set"] == "official" for st in m.stages)


@pytest.mark.parametrize("stages, message", [
    ({"caption": {"prompt_set": "official", "structured": True}}, "not with --entities experts or --structured"),
    ({"caption": {"prompt_set": "official", "entities": "experts"}}, "not with --entities experts or --structured"),
    ({"caption": {"prompt_set": "official"}, "tag": {"prompt_set": "pixscribe"}}, "set the prompt set once"),
    ({"caption": {"prompt_set": "llava"}}, "stages.caption.prompt_set: 'llava' is not one of"),
])
def test_official_set_refuses_what_it_cannot_be(tmp_path, stages, message):
    with pytest.raises(MethodError, match=message):
        _fingerprints(tmp_path, **stages)


def test_prompt_set_flag_reaches_the_caption_stage():
    import typer.main

    from pixscribe.cli import _build_caption_config, app

    cmd = typer.main.get_command(app).commands["caption"]
    ctx = cmd.make_context("caption", ["in", "-o", "out", "--prompt-set", "official"])
    p = dict(ctx.params)
    cfg = _build_caption_config(p.pop("config"), {k: v for k, v in p.items() if k not in ("stage_option", "stages")},
                                p["stage_option"], p["stages"])
    assert cfg.method == "panoptic" and cfg.stages == {"caption": {"prompt_set": "official"}}
