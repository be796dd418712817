"""AMBER equals its reference (junyangwang0410/AMBER inference.py @ 534babf) on a fixture made here.

Fixture (tests/data/amber/): a small AMBER-format data folder (7 descriptions, 24 yes/no
questions of every type), responses, and the tagger both sides used: nltk's averaged
perceptron trained on tagged_corpus.txt (make_tagger.py), installed as nltk data. Vectors:
all-MiniLM-L6-v2's input embeddings (the vectors installable here) -- pixscribe's ``minilm``
similarity, and for the reference a spaCy pipeline of the same vectors with whitespace
tokens, loaded by its ``spacy.load("en_core_web_lg")``. How the reference was run:
docs/metrics.md (AMBER). The expected values are what it printed, for every ``--similarity_score``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pixscribe.metrics.amber import AmberData, AmberInputError, amber, generative_item, read_responses
from pixscribe.metrics.amber_text import NounExtractor, VectorSimilarity, minilm_vectors

DATA = Path(__file__).resolve().parents[1] / "data" / "amber"
# the reference's output (python inference.py --evaluation_type a --similarity_score T), in its print order
DISC = [70.8, 80.0, 66.7, 72.7, 75.0, 50.0, 99.9, 66.6, 66.7, 83.3, 71.4, 76.9, 50.0, 66.6, 66.6, 66.6,
        75.0, 99.9, 99.9, 99.9, 75.0, 100.0, 66.6, 79.9, 75.0, 100.0, 50.0, 66.7]
REFERENCE = {0.8: [35.7, 72.7, 85.7, 50.0] + DISC, 0.5: [35.7, 72.7, 85.7, 50.0] + DISC,
             0.3: [26.2, 72.7, 71.4, 61.1] + DISC}
KEYS = ["amber_chair", "amber_cover", "amber_hal", "amber_cog"] + [
    f"amber_{d}{k}" for d in ("", "existence_", "attribute_", "state_", "number_", "action_", "relation_")
    for k in ("accuracy", "precision", "recall", "f1")]


@pytest.fixture(scope="module")
def parts():
    import nltk

    nltk.data.path.insert(0, str(DATA / "nltk_data"))
    try:
        yield AmberData.load(DATA / "data"), NounExtractor(), VectorSimilarity(minilm_vectors(), name="minilm")
    finally:
        nltk.data.path.remove(str(DATA / "nltk_data"))


@pytest.mark.parametrize("threshold", sorted(REFERENCE))
def test_equals_the_reference(parts, threshold):
    data, nouns, sim = parts
    res = amber(read_responses(DATA / "responses.json"), data, nouns, sim, threshold=threshold)
    assert res.corpus == dict(zip(KEYS, REFERENCE[threshold]))
    assert res.info["counts"] == {"nouns": 42, "descriptions": 7, "questions": 24}


def test_evaluation_types_choose_the_sections(parts):
    data, nouns, sim = parts
    rs = read_responses(DATA / "responses.json")
    assert list(amber(rs, data, nouns, sim, evaluation_type="g").corpus) == KEYS[:4]
    assert list(amber(rs, data, nouns, sim, evaluation_type="dr").corpus) == KEYS[-4:]
    assert list(amber(rs, data, nouns, sim, evaluation_type="d").corpus) == KEYS[4:]
    with pytest.raises(AmberInputError, match="evaluation type 'x'"):
        amber(rs, data, nouns, sim, evaluation_type="x")


def test_one_description_step_by_step():
    data = AmberData([], {"dog": ["puppy"], "cat": ["kitten"], "sofa": ["cat"], "light": []}, ["light"])
    ann = {"truth": ["sofa", "dog"], "hallu": ["cat"]}
    never = lambda a, b: False  # noqa: E731
    r = generative_item(["dog", "cat", "kitten", "light", "tree", "puppy"], ann, data, never)
    # tree is no AMBER word; light is a safe word; cat is sofa's associated word: covers sofa, not hallucinated
    assert r["nouns"] == ["dog", "cat", "kitten", "light", "puppy"]
    assert r["covered"] == [1, 1] and r["hallucinated"] == ["kitten"] and r["cog"] == [1]
    similar = lambda a, b: {a, b} == {"kitten", "dog"}  # noqa: E731  a similar truth word saves a noun
    assert generative_item(["kitten"], ann, data, similar)["hallucinated"] == []


def test_vector_similarity_follows_spacys_rules():
    table = {"a": np.array([1, 0], np.float32), "b": np.array([0, 1], np.float32), "c": np.array([1, 1], np.float32)}
    s = VectorSimilarity(table)
    assert s("zzz", "zzz") == 1.0  # identical token sequences, even without vectors
    assert s("zzz", "a") == 0.0  # a word without a vector
    assert s("a", "b") == 0.0 and s("a b", "c") == pytest.approx(1.0) and s("a", "c") == pytest.approx(2 ** -0.5)


def test_spacy_similarity_is_spacys_own():
    spacy = pytest.importorskip("spacy")
    from pixscribe.metrics.amber_text import SpacySimilarity

    nlp = spacy.blank("en")
    for w, v in (("dog", [1.0, 0.0]), ("puppy", [0.9, 0.1]), ("car", [0.0, 1.0])):
        nlp.vocab.set_vector(w, np.array(v, np.float32))
    sim = SpacySimilarity.__new__(SpacySimilarity)
    sim.nlp, sim.name, sim._docs, sim._memo = nlp, "spacy:test", {}, {}
    assert sim("dog", "puppy") == pytest.approx(nlp("dog").similarity(nlp("puppy")))
    assert sim("dog", "dog") == 1.0


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(AmberInputError, match="safe_words.txt is missing"):
        (tmp_path / "annotations.json").write_text("[]")
        (tmp_path / "relation.json").write_text("{}")
        AmberData.load(tmp_path)
    data = AmberData([{"id": 1, "type": "generative", "truth": ["unicorn"], "hallu": []}], {}, [])
    with pytest.raises(AmberInputError, match="response id 5 has no AMBER annotation"):
        amber([{"id": 5, "response": "x"}], data, lambda t: [], lambda a, b: 0.0)
    with pytest.raises(AmberInputError, match="'unicorn' is not in relation.json"):
        amber([{"id": 1, "response": "x"}], data, lambda t: [], lambda a, b: 0.0)
    (tmp_path / "r.json").write_text(json.dumps([{"id": 1}]))
    with pytest.raises(AmberInputError, match="r.json: AMBER responses are a JSON list"):
        read_responses(tmp_path / "r.json")


def _app():
    from pixscribe.commands import Commands
    from pixscribe.metrics.eval_cli import register

    a = typer.Typer(cls=Commands)
    register(a)
    a.callback()(lambda: None)
    return a


def test_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", str(DATA / "nltk_data"))
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(DATA / "nltk_data"), *nltk.data.path])
    out = tmp_path / "amber.json"
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "amber", "--pred", str(DATA / "responses.json"),
                                    "--amber-data", str(DATA / "data"), "--detail-option", "amber.similarity=minilm",
                                    "--detail-option", "amber.threshold=0.3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["corpus"] == dict(zip(KEYS, REFERENCE[0.3])) and rep["info"]["amber"]["similarity"] == "minilm"
    assert rep["per_image"]["amber"]["3"]["hallucinated"] == ["man"] and "amber_chair" in r.output
    bad = CliRunner().invoke(_app(), ["eval", "--metrics", "amber,bleu", "--pred", str(DATA / "responses.json")])
    assert bad.exit_code == 2 and "amber are scored on their own; drop bleu" in bad.output
    bad = CliRunner().invoke(_app(), ["eval", "--metrics", "amber", "--pred", str(DATA / "responses.json")])
    assert bad.exit_code == 2 and "amber needs --amber-data" in bad.output
    bad = CliRunner().invoke(_app(), ["eval", "--metrics", "amber", "--pred", str(DATA / "responses.json"),
                                      "--amber-data", str(DATA / "data"), "--detail-option", "amber.nope=1"])
    assert bad.exit_code == 2 and "expected METRIC.KEY=VALUE" in bad.output
