"""DID-Bench as Image Textualization scores it, and plain CIDEr, against the reference code's own numbers.

tests/golden/did_fixed/expected.json holds what IT's scorer, pycocoevalcap and the CIDEr authors' code
gave on a fixed set (how each was run is written in the file).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pixscribe.metrics.evaluate import evaluate, parse_metrics, prepare_text
from pixscribe.metrics.io import read_predictions, read_references

GOLD = Path(__file__).resolve().parents[1] / "golden" / "did_fixed"
EXPECTED = json.loads((GOLD / "expected.json").read_text())
NGRAM = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"]
try:
    import pycocoevalcap  # noqa: F401

    has_meteor = shutil.which("java") is not None
except ImportError:  # pragma: no cover - the metrics extra brings it
    has_meteor = False
needs_meteor = pytest.mark.skipif(not has_meteor, reason="METEOR needs Java and pycocoevalcap's jar")


@pytest.fixture(scope="module")
def data():
    preds, empty = read_predictions(GOLD / "preds.json")
    refs = read_references(GOLD / "refs.json")
    assert not empty and len(preds) == 30 and set(preds) == set(refs)
    return preds, refs


def _assert_equal(report, expected, metrics):
    for m in metrics:
        assert report["corpus"][m] == pytest.approx(expected["corpus"][m], abs=1e-9, rel=0), m
        for k, v in expected["per_image"][m].items():
            assert report["per_image"][k][m] == pytest.approx(v, abs=1e-9, rel=0), (m, k)


def test_tokenize_none_gives_it_scorer_numbers(data):
    preds, refs = data
    rep = evaluate(preds, refs, "bleu,rouge_l,cider_d", bootstrap=0, tokenize="none")
    _assert_equal(rep, EXPECTED["it_scorer"], NGRAM)
    assert rep["info"]["tokenize"] == "none"
    # and the default (PTB) is what pycocoevalcap gives, a different number on the same text
    ptb = evaluate(preds, refs, "bleu,rouge_l,cider_d", bootstrap=0)
    _assert_equal(ptb, EXPECTED["pycocoevalcap_ptb"], NGRAM)
    assert abs(ptb["corpus"]["bleu_4"] - rep["corpus"]["bleu_4"]) > 0.1


def test_plain_cider_equals_the_cider_authors_code(data):
    preds, refs = data
    for tok, key in (("none", "raw"), ("ptb", "ptb")):
        rep = evaluate(preds, refs, "cider,cider_d", bootstrap=0, tokenize=tok)
        _assert_equal(rep, EXPECTED["plain_cider"][key], ["cider"])
        assert rep["corpus"]["cider"] != pytest.approx(rep["corpus"]["cider_d"], abs=0.1)


def test_cider_is_no_longer_a_name_of_cider_d():
    assert parse_metrics("cider") == ["cider"]
    assert parse_metrics("ciderd,cider_d") == ["cider_d"]
    assert "cider" not in parse_metrics("all")


def test_tokenize_none_deletes_line_breaks_as_it_converter_does():
    out = prepare_text({"a": ["One line.\n\nTwo  Lines."]}, "none")
    assert out == {"a": ["One line.Two  Lines."]}
    with pytest.raises(ValueError, match="unknown tokenize 'spacy'"):
        prepare_text({"a": ["x"]}, "spacy")


def test_it_res_format_is_read(tmp_path):
    p = tmp_path / "res.json"
    p.write_text(json.dumps({"000000000001": ["a dog"], "000000000002": "a cat"}))
    preds, _ = read_predictions(p)
    assert preds == {"000000000001": "a dog", "000000000002": "a cat"}


@needs_meteor
def test_one_command_reproduces_it_scorer(tmp_path):
    """The documented DID-Bench command, METEOR included (tests/metrics/test_metrics_meteor.py checks the PTB side)."""
    rep = tmp_path / "did.json"
    p = subprocess.run([sys.executable, "-m", "pixscribe.metrics.eval_cli", "eval", "--pred", str(GOLD / "preds.json"),
                        "--refs", str(GOLD / "refs.json"), "--tokenize", "none", "--metrics",
                        "bleu,meteor,rouge_l,cider_d", "--bootstrap", "0", "-o", str(rep)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(rep.read_text())
    _assert_equal(got, EXPECTED["it_scorer"], NGRAM + ["meteor"])
    assert "note: cider" not in p.stderr


def test_cli_notes_what_cider_is_and_refuses_an_unknown_tokenizer(tmp_path):
    base = [sys.executable, "-m", "pixscribe.metrics.eval_cli", "eval", "--pred", str(GOLD / "preds.json"),
            "--refs", str(GOLD / "refs.json"), "--bootstrap", "0"]
    p = subprocess.run(base + ["--metrics", "cider"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "cider is the original CIDEr" in p.stderr and "cider_d" in p.stderr
    bad = subprocess.run(base + ["--tokenize", "spacy"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--tokenize spacy: choose from ptb, none" in bad.stderr
    assert "Traceback" not in bad.stderr
