"""CompreCap equals its reference (LuFan31/CompreCap evaluate.py @ b70aae6) on a fixture made here.

tests/data/comprecap/ (make_fixture.py): 5 images (one without a caption, one without objects),
objects with masks and relations, captions, and judge_answers.json: the judge's answer to each of
the 14 prompts. The reference ran with those answers in place of its Llama-3 (read by its own
get_first_digit), all-MiniLM-L6-v2 (its model), and for its spaCy pipeline nltk's tokenizer, the
test tagger (tests/data/amber) and WordNet lemmas: the same parts as ``nltk_nouns`` here.
reference_output.json: its totals and count (read from get_results, which prints them rounded)
and its per-image log, with and without --soft_coverage (docs/metrics.md)."""

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.metrics import comprecap as C
from pixscribe.metrics.judge import CachedJudge

DATA = Path(__file__).resolve().parents[1] / "data" / "comprecap"
TAGGER = Path(__file__).resolve().parents[1] / "data" / "amber" / "nltk_data"
REF = json.loads((DATA / "reference_output.json").read_text())
ANSWERS = json.loads((DATA / "judge_answers.json").read_text())


class Saved(Backend):
    name = "saved"
    model = "saved-answers"

    def __init__(self):
        super().__init__()
        self.asked = []

    def _generate(self, requests):
        self.asked += [r.messages[1]["content"][0]["text"] for r in requests]
        return [GenerationResult(text=ANSWERS[r.messages[1]["content"][0]["text"]]) for r in requests]


@pytest.fixture(scope="module")
def parts():
    import nltk

    nltk.data.path.insert(0, str(TAGGER))
    try:
        yield C.nltk_nouns(), C.minilm_similarity()
    finally:
        nltk.data.path.remove(str(TAGGER))


def _want(name):
    r, c = REF[name]["results"], REF[name]["count"]
    return {"comprecap_object_coverage": r["object coverage"] / c, "comprecap_attribute": r["attribute score"] / c,
            "comprecap_relation": r["relation score"] / c, "comprecap_pixel_coverage": r["pixel coverage"] / c,
            "comprecap_unified": 0.25 * r["object coverage"] / c + 0.35 * (r["attribute score"] / c * 20.0)
            + 0.4 * (r["relation score"] / c * 20.0)}


@pytest.mark.parametrize("name", ["soft", "hard"])
def test_equals_the_reference(parts, name):
    nouns, sim = parts
    backend = Saved()
    res = C.comprecap(json.loads((DATA / "captions.json").read_text()), json.loads((DATA / "anno.json").read_text()),
                      CachedJudge(backend), nouns, sim, soft=name == "soft",
                      image_size=lambda img: Image.open(DATA / "images" / img).size)
    want = _want(name)
    # the coverage sums the same float32 cosines in another order (the reference's set order): ~1e-14
    assert {k: res.corpus[k] for k in want} == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert res.skipped == ["d.jpg", "e.jpg"] and res.errors == {}
    assert len(backend.asked) == REF[name]["judge_requests"]  # the same questions, none more
    for img, log in REF[name]["log"].items():
        assert res.per_image[img]["attribute"] == list(log["attribute"].values())
        assert res.per_image[img]["relation"] == list(log["relation"].values())


def test_pieces():
    assert C.split_caption("A dog. A cat\nA bird</s>x\\ny..") == ["A dog", "A cat", "A bird", "x", "y"]
    assert C.first_integer("I'd say 4 of 5") == 4 and C.first_integer("none") == -1
    # an object rated -1 (no digit) takes area away, as with NumPy 1.20 (the reference's pin)
    full = base64.b64encode(zlib.compress(np.full((2, 2), 255, np.uint8).tobytes())).decode()
    assert C.pixel_coverage([5, -1], [full, full], (2, 2)) == pytest.approx(0.8)


def test_cli_replays_a_transcript(parts, tmp_path, monkeypatch):
    from pixscribe.commands import Commands
    from pixscribe.metrics.eval_cli import register

    nouns, sim = parts
    judge = CachedJudge(Saved())
    C.comprecap(json.loads((DATA / "captions.json").read_text()), json.loads((DATA / "anno.json").read_text()),
                judge, nouns, sim)
    judge.write_transcript(tmp_path / "t.jsonl")
    monkeypatch.setattr("nltk.data.path", [str(TAGGER), *__import__("nltk").data.path])
    app = typer.Typer(cls=Commands)
    register(app)
    app.callback()(lambda: None)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", "--metrics", "comprecap", "--pred", str(DATA / "captions.json"),
                                 "--comprecap-data", str(DATA), "--judge-replay", str(tmp_path / "t.jsonl"),
                                 "--detail-option", "comprecap.nouns=nltk", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["corpus"] == pytest.approx(_want("soft"), rel=1e-12)
    assert rep["info"]["judge"]["replayed"] == 14 and rep["info"]["judge"]["generated"] == 0
