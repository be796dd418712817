"""``pixscribe eval --metrics pancapscore`` end to end: a real tiny transformers judge and a
loopback OpenAI-compatible judge, the judge's answers cached so a rerun generates nothing.

The tiny models have random weights: their extractions are gibberish, so the scores here
say nothing about caption quality; these tests check the path, the recorded configuration
and the cache."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from pixscribe.commands import Commands
from pixscribe.metrics.eval_cli import register
from pixscribe.testing.openai_server import ServerProcess

CAPTIONS = {
    "img1": "A brown dog [[0.100, 0.200, 0.500, 0.800]] lies on a red sofa [[0.000, 0.400, 1.000, 1.000]]. Bright.",
    "img2": "A cyclist [[0.300, 0.100, 0.700, 0.900]] rides past a lamp post [[0.800, 0.000, 0.850, 0.700]] at dusk.",
}
FAST = ["--pancap-option", "extract_max_new_tokens=12", "--pancap-option", "qa_max_new_tokens=8"]


@pytest.fixture
def app():
    a = typer.Typer(cls=Commands)
    register(a)

    @a.callback()
    def _cb():
        pass

    return a


@pytest.fixture
def files(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": k, "caption": v}) + "\n" for k, v in CAPTIONS.items()))
    out = tmp_path / "run"
    out.mkdir()
    rows = [{"id": "img1", "caption": CAPTIONS["img1"].replace("red sofa", "red couch"), "error": None},
            {"id": "img2", "caption": CAPTIONS["img2"], "error": None}]
    pq.write_table(pa.Table.from_pylist(rows), out / "part-00000.parquet")
    return refs, out


def _eval(app, refs, out, report, *extra, name="pancapscore_unofficial"):
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(refs), "--metrics", name,
                                 "--bootstrap", "20", "-o", str(report), *FAST, *extra])
    assert r.exit_code == 0, r.output
    return json.loads(report.read_text()), r.output


def test_tiny_transformers_judge_then_rerun_from_cache(app, files, stopping_llm, tmp_path):
    # a tiny model that ends its answers (random weights never emit EOS; a cut answer is never data)
    tiny_llm = stopping_llm
    refs, out = files
    cache = tmp_path / "judge.sqlite3"
    args = ["--judge", str(tiny_llm), "--judge-cache", str(cache)]
    rep, text = _eval(app, refs, out, tmp_path / "r1.json", *args)
    pc = rep["info"]["pancapscore_unofficial"]
    assert pc["status"].startswith("unofficial: ")
    assert pc["judge"]["backend"] == "transformers" and pc["judge"]["model"] == str(tiny_llm)
    assert pc["judge"]["generated"] >= 3 and pc["judge"]["cache_hits"] == 0  # 3 distinct captions extracted
    assert pc["judge"]["failed"] == 0
    assert pc["sampling"]["extract"] == {"max_new_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": None}
    assert pc["config"]["iou_threshold"] == 0.5 and pc["config"]["extract_max_new_tokens"] == 12
    assert len(pc["prompts"]["sha256"]) == 16 and "-->>" in pc["prompts"]["extract_system"]
    assert pc["tags"]["wordnet"]["version"] == "3.0"
    assert set(rep["corpus"]) == {"pancap_unofficial_tag", "pancap_unofficial_location", "pancap_unofficial_attribute",
                                  "pancap_unofficial_relation", "pancap_unofficial_global", "pancapscore_unofficial"}
    assert f"judge {tiny_llm} (transformers)" in text and "PancapScore (unofficial" in text and cache.is_file()
    assert "note:" not in text
    t1 = rep["info"]["judge"]["transcript"]
    assert t1["path"] == str(tmp_path / "r1.judge.jsonl") and t1["exchanges"] == pc["judge"]["generated"]
    # the old name still works, says what it is now, and gives the same numbers (from the cache)
    again, text = _eval(app, refs, out, tmp_path / "r2.json", *args, name="pancapscore")
    assert "note: 'pancapscore' is now 'pancapscore_unofficial'" in text
    assert again["info"]["notes"] and "pancapscore" not in again["corpus"]
    j2 = again["info"]["pancapscore_unofficial"]["judge"]
    assert j2["generated"] == 0 and j2["cache_hits"] == j2["asked"] == pc["judge"]["asked"]
    assert json.dumps(again["corpus"]) == json.dumps(rep["corpus"])  # NaN-safe equality
    assert again["info"]["pancapscore_unofficial"]["per_image"] == pc["per_image"]
    # the transcript alone (no model, no cache) gives the same numbers and the same transcript hash
    replayed, _ = _eval(app, refs, out, tmp_path / "r3.json", "--judge-replay", t1["path"])
    j3 = replayed["info"]["judge"]
    assert j3["replay_only"] and j3["replayed"] == j3["asked"] == pc["judge"]["asked"] and j3["generated"] == 0
    assert json.dumps(replayed["corpus"]) == json.dumps(rep["corpus"])
    assert j3["transcript"]["sha256"] == t1["sha256"]


def test_loopback_server_judge_is_asked_once(app, files, tmp_path):
    refs, out = files
    cache = tmp_path / "judge.sqlite3"
    with ServerProcess("--mode", "echo", "--model", "judge-m") as srv:
        # limits the echo's answers fit in (an answer cut at its limit is asked again at twice it)
        args = ["--judge", "judge-m", "--judge-base-url", srv.url, "--judge-cache", str(cache),
                "--pancap-option", "extract_max_new_tokens=200", "--pancap-option", "qa_max_new_tokens=200"]
        rep, _ = _eval(app, refs, out, tmp_path / "r1.json", *args)
        first = srv.stats()
        assert first["chat_requests"] == rep["info"]["pancapscore_unofficial"]["judge"]["generated"] >= 3
        assert rep["info"]["pancapscore_unofficial"]["judge"]["backend"] == "openai"
        _eval(app, refs, out, tmp_path / "r2.json", *args)
        later = srv.stats()
        assert (later["chat_requests"], later["model_requests"]) == (first["chat_requests"], first["model_requests"])
        assert first["model_requests"] == 1  # checked once before the first generation; not at all on the rerun


def test_errors_name_what_is_missing(app, files, tmp_path):
    refs, out = files
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(refs), "--metrics", "pancapscore"])
    assert r.exit_code == 2 and "needs an LLM judge: --judge" in r.output
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(refs), "--metrics", "pancapscore",
                                 "--judge", str(tmp_path / "no-model"), "--judge-cache", str(tmp_path / "c.sqlite3")])
    assert r.exit_code == 2 and "no such directory" in r.output
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(refs), "--metrics", "pancapscore",
                                 "--judge", "m", "--pancap-option", "iou=0.5"])
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output
    two = tmp_path / "two.jsonl"
    two.write_text(json.dumps({"id": "img1", "refs": ["a", "b"]}) + "\n")
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(two), "--metrics", "pancapscore",
                                 "--judge", "m", "--judge-base-url", "http://127.0.0.1:9/v1",
                                 "--judge-cache", str(tmp_path / "c.sqlite3")])
    assert r.exit_code == 2 and "one reference caption per image" in r.output


def test_readers_take_one_caption_per_image(tmp_path):
    from pixscribe.metrics.io import MetricsInputError, read_predictions, read_references

    rows = [{"image": "sam/sa_000045/sa_1.jpg", "caption": CAPTIONS["img1"]}, {"id": "img2", "caption": CAPTIONS["img2"]}]
    want = {"sam/sa_000045/sa_1.jpg": [CAPTIONS["img1"]], "img2": [CAPTIONS["img2"]]}
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "map.json").write_text(json.dumps({r.get("image", r.get("id")): r["caption"] for r in rows}))
    pq.write_table(pa.Table.from_pylist([{"id": k, "caption": v[0]} for k, v in want.items()]), tmp_path / "r.parquet")
    for name in ("list.json", "map.json", "r.parquet"):
        assert read_references(tmp_path / name) == want, name
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "x"}]))
    with pytest.raises(MetricsInputError, match="rows need 'id' \\(or 'image'\\) and 'refs' or 'caption'"):
        read_references(tmp_path / "bad.json")
    (tmp_path / "pred.json").write_text(json.dumps({"img2": CAPTIONS["img2"], "img3": None}))
    assert read_predictions(tmp_path / "pred.json") == ({"img2": CAPTIONS["img2"]}, ["img3"])
