"""CAPTURE equals its reference (foundation-multimodal-models/CAPTURE capture.py @ 52eeb27) on frozen parses made here.

tests/data/capture/parses.json: candidate and reference scene graphs of 5 images (exact,
substring, WordNet and soft matches; an empty candidate; an image with two references;
an id on one side only). reference_output.json: what the reference's ``compute_score``
(with ``prev_gt_parsed`` / ``prev_cand_parsed``) and ``compute_f_score`` returned on it,
with all-MiniLM-L6-v2 as its sentence encoder, for four settings (docs/metrics.md).
"""

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pixscribe.metrics.capture import (
    FIELDS,
    CaptureConfig,
    Parse,
    Synonyms,
    capture,
    f_scores,
    read_parses,
    sentence_encoder,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "capture"
REF = json.loads((DATA / "reference_output.json").read_text())
CONFIGS = {"base": CaptureConfig(), "synonym_matching=False": CaptureConfig(synonym_matching=False),
           "soft_matching=False": CaptureConfig(soft_matching=False),
           "alpha=0.7_beta=0.3_gamma=0.5": CaptureConfig(alpha=0.7, beta=0.3, gamma=0.5)}


@pytest.fixture(scope="module")
def encode():
    return sentence_encoder("minilm")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_equals_the_reference(name, encode):
    cands, refs = read_parses(DATA / "parses.json")
    res = capture(cands, refs, config=CONFIGS[name], encode=encode)
    want = REF[name]
    # soft matching sums float32 cosines: equal to float32 precision (the reference encodes per image in
    # batches of 4, pixscribe each distinct phrase once); exact without it
    tol = 0.0 if name == "soft_matching=False" else 1e-6
    assert res.score == pytest.approx(want["score"], abs=tol)
    assert set(res.per_image) == set(want["scores"]) == set(refs) - {"no_cand"}
    for k, v in want["scores"].items():
        assert res.per_image[k]["capture"] == pytest.approx(v, abs=tol)
        for i, f in enumerate(FIELDS):
            ref_mean = sum(p[i + 1] for p in want["pairs"][k]) / len(want["pairs"][k]) * 100
            assert res.per_image[k][f] == pytest.approx(ref_mean, abs=100 * tol + 1e-9), (k, f)


def test_matching_passes_by_hand():
    syn = Synonyms()
    assert syn("clock tower", "tower") == 1 and syn("car", "automobile") > 0 and syn("cup", "sky") == 0
    cfg = CaptureConfig(soft_matching=False)
    ref = Parse(["car", "tree"], {"car": ["red"]}, [("car", "near", "tree")])
    cand = Parse(["automobile", "dog"], {"automobile": ["red"]}, [("automobile", "near", "tree")])
    score, op, orr, of1, ap, ar, af1, rp, rr, rf1 = f_scores(ref, cand, cfg, syn, None)
    assert (op, orr) == pytest.approx((0.5, 0.5), abs=1e-5) and ap == pytest.approx(1.0, abs=1e-5)
    assert rf1 == pytest.approx(1.0, abs=1e-5)  # every part of the triple is a synonym
    assert score == pytest.approx((0.5 * of1 + 0.5 * af1 + 0.2 * rf1) / 1.2)


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"candidates": {"a": {"relations": [["x", "y"]]}}, "references": {}}))
    with pytest.raises(ValueError, match="candidate a: not a CAPTURE parse"):
        read_parses(tmp_path / "p.json")
    (tmp_path / "q.json").write_text(json.dumps({"candidates": {}}))
    with pytest.raises(ValueError, match="q.json: expected"):
        read_parses(tmp_path / "q.json")
    with pytest.raises(ValueError, match="alpha \\+ beta == 1"):
        capture({}, {}, config=CaptureConfig(alpha=0.7))
    with pytest.raises(ValueError, match="encoder 'bert'"):
        sentence_encoder("bert")


def test_cli(tmp_path):
    from pixscribe.commands import Commands
    from pixscribe.metrics.eval_cli import register

    app = typer.Typer(cls=Commands)
    register(app)
    app.callback()(lambda: None)
    out = tmp_path / "c.json"
    r = CliRunner().invoke(app, ["eval", "--metrics", "capture", "--pred", str(DATA / "parses.json"),
                                 "--detail-option", "capture.soft_matching=false", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["corpus"]["capture"] == REF["soft_matching=False"]["score"]
    assert rep["missing"] == {"count": 1, "ids": ["no_cand"]} and rep["extra"]["ids"] == ["extra_cand"]
    assert rep["info"]["capture"]["encoder"] is None and rep["n_images"] == 5


def test_parse_stage_after_the_parser_equals_the_reference(monkeypatch):
    """sentence_graphs.json: 3 captions and a graph per sentence, given to both sides as the parser's output;
    parse_reference_output.json: the reference's sample_to_parse_results (sets, sorted to compare), run with the
    test tagger of tests/data/amber and untrained Punkt (docs/metrics.md)."""
    import hashlib

    import nltk

    from pixscribe.metrics.capture_parse import CaptionParser, stop_words

    monkeypatch.setattr(nltk.data, "path", [str(DATA.parent / "amber" / "nltk_data"), *nltk.data.path])
    data = json.loads((DATA / "sentence_graphs.json").read_text())
    want = json.loads((DATA / "parse_reference_output.json").read_text())
    sentences_seen = []

    def parser(sentences):
        sentences_seen.extend(sentences)
        return [data["graphs"][s] for s in sentences]

    cp = CaptionParser(parser)
    for k, text in data["captions"].items():
        p = cp(text)
        assert {"objects": sorted(p.objects), "attributes": {a: sorted(v) for a, v in sorted(p.attributes.items())},
                "relations": sorted(list(r) for r in p.relations)} == want[k], k
    assert sorted(sentences_seen) == sorted(data["graphs"])  # the same sentence split
    # the stop-word list is the reference's, verbatim (317 words; "background" is one, so it never is an object)
    raw = (Path(__file__).resolve().parents[2] / "src/pixscribe/metrics/data/capture_stop_words.txt").read_bytes()
    assert len(stop_words()) == 317 and "background" in stop_words()
    assert hashlib.sha256(raw).hexdigest() == STOP_WORDS_SHA256


STOP_WORDS_SHA256 = "830731551238f2bbf20560f2084ebdfa9a0b028a5cafe2587cce3754cfadcc9a"
