"""`--method panoptic` end to end: through the command line on a tiny real VLM (batches of 4,
a run cut short and resumed), through the loopback OpenAI-compatible server (real generation;
and the structured and consistency flags on its echo mode), and the entity-aware variant on
tiny real Florence-2, Grounding DINO and OWLv2. Random weights write gibberish: what is
checked is the path (requests per stage, lists flowing between stages, resume), never the
quality of a caption."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from fixtures_panoptic import Recording, panoptic_method, request_text
from test_e2e_cli import cli

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.methods.panoptic import boxes as B
from pixscribe.methods.panoptic.entities import parse_list
from pixscribe.methods.panoptic.redetect import merge_redetections
from pixscribe.stages import quote
from pixscribe.testing.openai_server import ServerProcess

STAGES = ("localize", "tag", "discover", "caption")
SHORT = [f"-S{s}.max_new_tokens=6" for s in STAGES[:3]] + ["--max-new-tokens", "6"]


def _summary(out):
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def _rows(out):
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


def _check_chain_row(r):
    assert r["error"] is None and isinstance(r["caption"], str) and isinstance(r["caption_plain"], str)
    assert [json.loads(r["stages"])[s]["status"] for s in STAGES] == ["ok"] * 4
    assert isinstance(json.loads(r["entities"]), list)
    prov = json.loads(r["provenance"])
    assert {prov[f]["stage"] for f in ("boxes", "tagged", "merged", "caption")} == {"localize", "tag", "discover",
                                                                                   "caption"}
    # whatever random weights wrote, the caption holds only reference-format boxes
    assert B.parse_reference(r["caption"])[1] == [] and "<box>" not in r["caption"]


@pytest.mark.slow  # two CLI runs that each load torch and the model (about 40 s on 2 shared cores)
def test_cli_tiny_vlm_batches_and_resume(stopping_vlms, photo_dir, tmp_path):
    out, vlm = tmp_path / "out", str(stopping_vlms["llava"])  # replies end within the limit (fixtures_stopping)
    args = ["caption", str(photo_dir), "-o", str(out), "--method", "panoptic", "--vlm", vlm, "--device", "cpu",
            "--batch-size", "4", "--no-progress", *SHORT]
    cli(*args, "--limit", "3")
    first = _rows(out)
    assert len(first) == 3 and _summary(out)["usage"][f"vlm:{vlm}"]["requests"] == 12  # 4 stages x 3 images
    cli(*args)  # resume: only the three images not done yet
    rows = _rows(out)
    s = _summary(out)
    assert len(rows) == 6 and s["rows_written"] == 3 and s["usage"][f"vlm:{vlm}"]["requests"] == 12
    for r in rows.values():
        _check_chain_row(r)
        assert r["model"] == vlm and r["method"] == "panoptic"
    assert all(rows[i]["caption"] == first[i]["caption"] for i in first)  # done rows untouched


def test_http_tiny_server(stopping_vlms, photo_dir, tmp_path):
    with ServerProcess("--mode", "tiny", "--model-dir", str(stopping_vlms["llava"]), "--model", "tiny-llava") as srv:
        out = tmp_path / "out"
        cli("caption", str(photo_dir), "-o", str(out), "--method", "panoptic", "--backend", "openai", "--base-url",
            srv.url, "--vlm", "tiny-llava", "--concurrency", "4", "--no-progress", *SHORT)
        rows = _rows(out)
        assert len(rows) == 6 and all(r["model"] == "tiny-llava" for r in rows.values())
        for r in rows.values():
            _check_chain_row(r)
        st = srv.stats()
        assert st["ok"] == 24 and st["images"] == 24 and st["image_formats"] == ["JPEG"]
        assert _summary(out)["usage"]["vlm:tiny-llava"]["requests"] == 24


def test_http_structured_and_consistency_flags(photo_dir, tmp_path):
    """--structured and --consistency-vlm through the CLI on the echo server, whose answer to a
    schema request is a minimal valid object: the JSON path runs, the consistency stage asks the
    second model, and each schema request reaches the server as one."""
    with ServerProcess("--mode", "echo", "--model", "m", "--model", "judge-vlm") as srv:
        out = tmp_path / "out"
        cli("caption", str(photo_dir), "-o", str(out), "--method", "panoptic", "--backend", "openai", "--base-url",
            srv.url, "--vlm", "m", "--structured", "--consistency-vlm", "judge-vlm", "--no-progress")
        rows = _rows(out)
        assert len(rows) == 6 and all(r["error"] is None for r in rows.values())
        st = srv.stats()
        assert st["ok"] == 30 and st["structured_requests"] == 12  # 4 stages + the check, 2 of them JSON
        for r in rows.values():
            assert json.loads(r["panoptic_json"]).keys() == {"entities", "relations", "global"}
            assert json.loads(r["consistency"])["contradicted"] == []
            prov = json.loads(r["provenance"])
            assert prov["consistency"]["model"] == "judge-vlm" and prov["caption"]["model"] == "m"
        s = _summary(out)["usage"]
        assert s["vlm:m"]["requests"] == 24 and s["consistency:judge-vlm"]["requests"] == 6


def test_panoptic_flags_map_to_stage_options(photo_dir, tmp_path):
    from typer.testing import CliRunner

    from pixscribe.cli import app

    r = CliRunner()
    base = ["caption", str(photo_dir), "-o", str(tmp_path / "x")]
    res = r.invoke(app, [*base, "--method", "recap", "--entities", "experts"])  # alone it implies panoptic
    assert res.exit_code == 2 and "--entities: for --method panoptic, not --method recap" in res.output
    # --entities experts reaches the caption stage: the method has the experts' stages (a bad
    # detector name is refused by the redetect stage, before anything loads)
    res = r.invoke(app, [*base, "--method", "panoptic", "--entities", "experts", "-S", "redetect.detectors=[yolo]"])
    assert res.exit_code == 2 and "stages.redetect.detectors: yolo" in res.output
    res = r.invoke(app, [*base, "--method", "panoptic", "--entities", "nope"])
    assert res.exit_code == 2 and "stages.caption.entities: 'nope'" in res.output
    res = r.invoke(app, [*base, "--method", "panoptic", "-S", "proposals.task=<OD>"])  # chain has no proposals
    assert res.exit_code == 2 and "no stage 'proposals'" in res.output
    assert not (tmp_path / "x").exists()


def _scripted_florence(monkeypatch):
    """Florence-2 runs for real (processor, generate, its own parser); random weights find no
    regions, so the parsed result is replaced by three boxes per image (one a duplicate)."""
    from pixscribe.experts.florence import FlorenceExpert

    real = FlorenceExpert.parse
    tasks = []

    def parse(self, text, task, image_size):
        real(self, text, task, image_size)
        tasks.append(task)
        w, h = image_size
        boxes = [[0.1 * w, 0.2 * h, 0.5 * w, 0.9 * h], [0.55 * w, 0.1 * h, 0.95 * w, 0.6 * h],
                 [0.1 * w, 0.2 * h, 0.5 * w, 0.9 * h]]
        return {"bboxes": boxes, "labels": ["dog", "Red  car", "dog"]}

    monkeypatch.setattr(FlorenceExpert, "parse", parse)
    return tasks


def _spy_detectors(monkeypatch):
    from pixscribe.experts.detection import GroundingDinoExpert, OwlV2Expert

    seen: dict[str, dict[tuple[int, int], tuple[list[str], list]]] = {"grounding_dino": {}, "owlv2": {}}
    for cls in (GroundingDinoExpert, OwlV2Expert):
        def spy(self, images, queries=None, _real=cls.run, **kw):
            got = _real(self, images, queries=queries, **kw)
            for im, q, d in zip(images, queries, got):
                seen[self.name][im.size] = (list(q), d)
            return got

        monkeypatch.setattr(cls, "run", spy)
    return seen


def test_entity_aware_on_tiny_detectors(stopping_vlms, tiny_experts, photo_dir, tmp_path, monkeypatch):
    tasks = _scripted_florence(monkeypatch)
    seen = _spy_detectors(monkeypatch)
    redetect = {"detectors": ["grounding_dino", "owlv2"], "box_threshold": 0.0, "text_threshold": 0.0,
                "add_threshold": 0.05}
    cfg = RunConfig(
        inputs=[str(photo_dir)], output=str(tmp_path / "out"), method="panoptic", progress=False, batch_size=3,
        vlm=str(stopping_vlms["llava"]), device="cpu",
        expert_models={"dense": str(tiny_experts["florence2"]), "grounding_dino": str(tiny_experts["grounding_dino"]),
                       "owlv2": str(tiny_experts["owlv2"])},
        expert_options={"dense": {"max_new_tokens": 16, "num_beams": 1}},
        stages={"caption": {"entities": "experts", "max_new_tokens": 6}, "redetect": redetect})
    from pixscribe.api import resolve_spec
    from pixscribe.backends import make_backend

    vlm = Recording(make_backend(resolve_spec(cfg, "vlm"), cfg))
    method = panoptic_method(cfg, vlm)
    assert [s.name for s in method.stages] == ["proposals", "redetect", "caption"]
    s = Runner(cfg, method).run()
    assert s.error_rows == 0 and tasks == ["<OD>"] * 6
    rows = _rows(tmp_path / "out")
    asked = {q.id: q for q in vlm.requests}
    assert len(vlm.requests) == 6  # one VLM request per image: the caption with the entity list
    for rid, r in rows.items():
        w, h = r["width"], r["height"]
        props = [(it.tag, it.box) for it in parse_list(r["tagged"])]
        dog = B.pixels_to_model([0.1 * w, 0.2 * h, 0.5 * w, 0.9 * h], w, h)
        car = B.pixels_to_model([0.55 * w, 0.1 * h, 0.95 * w, 0.6 * h], w, h)
        assert props == [("dog", dog), ("red car", car)]  # tagged by label, the duplicate gone
        # the proposals' tags were each detector's queries for this image
        for name in ("grounding_dino", "owlv2"):
            assert seen[name][(w, h)][0] == ["dog", "red car"]
        # the entities are the merge of these proposals with what the detectors returned
        dets = {n: seen[n][(w, h)][1] for n in ("grounding_dino", "owlv2")}
        items, expect, _ = merge_redetections(parse_list(r["tagged"]), dets, w, h, match_iou=0.5, dedup_iou=0.7,
                                              add_threshold=0.05)
        ents = json.loads(r["entities"])
        assert ents == json.loads(json.dumps(expect)) and ents[0]["found_by"] == "proposals"
        assert any(e["found_by"] == "redetect" for e in ents)  # low thresholds on random weights add some
        assert {e["tag"] for e in ents} <= {"dog", "red car"}
        # ... and the caption request carried that merged list, image first
        assert r["merged"] == B.render_model(items) and r["merged"].startswith(f"dog {B.render_model([dog])}")
        req = asked[rid]
        assert req.messages[-1]["content"][0] == {"type": "image"}
        assert request_text(req).endswith("\n" + quote(r["merged"], "entities"))
        assert json.loads(r["provenance"])["entities"]["parse"]["queries"] == ["dog", "red car"]
        assert r["error"] is None and isinstance(r["caption"], str)
