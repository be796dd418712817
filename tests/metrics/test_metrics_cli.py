"""pixscribe eval: readers, report, CLI via register(app) and as a real subprocess."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from fixtures_metrics import varied_sets
from pixscribe.commands import Commands
from pixscribe.metrics.coco import coco_scores
from pixscribe.metrics.eval_cli import register
from pixscribe.metrics.evaluate import evaluate
from pixscribe.metrics.io import MetricsInputError, read_predictions, read_references
from pixscribe.metrics.tokenize import ptb_tokenize


@pytest.fixture
def data(tmp_path):
    gts, res = varied_sets(40, 5, seed=13)
    anns = [{"image_id": int(k), "id": n, "caption": c}
            for n, (k, c) in enumerate((k, c) for k, cs in gts.items() for c in cs)]
    refs = tmp_path / "captions.json"
    refs.write_text(json.dumps({"images": [{"id": int(k)} for k in gts], "annotations": anns}))
    out = tmp_path / "run"
    out.mkdir()
    ids = list(res)
    # a pixscribe output dir: two parquet parts + one jsonl part, one error row, one image left out
    rows = [{"id": k, "caption": res[k][0], "alt": "x " + res[k][0], "error": None} for k in ids]
    rows[5] = {"id": ids[5], "caption": None, "alt": None, "error": "decode: broken"}
    del rows[7]
    pq.write_table(pa.Table.from_pylist(rows[:15]), out / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[15:30]), out / "part-00001.parquet")
    (out / "part-00002.jsonl").write_text("\n".join(json.dumps(r) for r in rows[30:]) + "\n")
    return gts, res, refs, out, ids


def test_readers_and_report(data, tmp_path):
    gts, res, refs, out, ids = data
    preds, empty = read_predictions(out)
    assert len(preds) == 38 and empty == [ids[5]]
    assert read_predictions(out, "alt")[0][ids[0]] == "x " + res[ids[0]][0]
    with pytest.raises(MetricsInputError, match="no column 'nope'"):
        read_predictions(out, "nope")
    r = read_references(refs)
    assert r == gts
    jl = tmp_path / "refs.jsonl"
    jl.write_text("\n".join(json.dumps({"id": k, "refs": v}) for k, v in gts.items()))
    assert read_references(jl) == gts
    rep = evaluate(preds, r, "bleu,rouge_l,cider_d", bootstrap=200, seed=1, missing_preds=empty)
    assert rep["missing"]["count"] == 2 and set(rep["missing"]["ids"]) == {ids[5], ids[7]}
    assert rep["n_images"] == 38
    # corpus numbers equal a direct computation on the same 38 images
    keep = [k for k in gts if k in preds]
    c, _, _ = coco_scores(ptb_tokenize({k: gts[k] for k in keep}), ptb_tokenize({k: [preds[k]] for k in keep}))
    for m in ("bleu_4", "rouge_l", "cider_d"):
        assert rep["corpus"][m] == pytest.approx(c[m], abs=1e-12)
    lo, hi = rep["ci95"]["rouge_l"]
    assert lo < rep["corpus"]["rouge_l"] < hi
    again = evaluate(preds, r, "bleu,rouge_l,cider_d", bootstrap=200, seed=1, missing_preds=empty)
    assert again["ci95"] == rep["ci95"] and again["per_image"] == rep["per_image"]  # seeded
    assert set(rep["per_image"][keep[0]]) >= {"bleu_1", "bleu_4", "rouge_l", "cider_d"}
    with pytest.raises(ValueError, match="pancapscore_unofficial needs an LLM judge"):
        evaluate(preds, r, "pancapscore")


def test_cli_via_register(data, tmp_path):
    gts, res, refs, out, ids = data
    app = typer.Typer(cls=Commands)
    register(app)

    @app.callback()
    def _cb():
        pass

    rep = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--pred", str(out), "--refs", str(refs), "--metrics",
                                      "bleu,rouge,cider_d,chair,lin", "-o", str(rep), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "cider_d" in result.output and "2 reference ids have no prediction" in result.output
    j = json.loads(rep.read_text())
    for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d", "chair_s", "chair_i", "lin_ari"):
        assert k in j["corpus"] and k in j["ci95"]
    bad = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "missing"), "--refs", str(refs)])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_cli_subprocess_coco_results(data, tmp_path):
    gts, res, refs, out, ids = data
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps([{"image_id": int(k), "caption": v[0]} for k, v in res.items()]))
    rep = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "pixscribe.metrics.eval_cli", "eval", "--pred", str(pred),
                        "--refs", str(refs), "--metrics", "bleu,cider_d", "-o", str(rep)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(rep.read_text())
    c, _, _ = coco_scores(ptb_tokenize(gts), ptb_tokenize(res))
    assert j["corpus"]["cider_d"] == pytest.approx(c["cider_d"], abs=1e-9)
    assert j["missing"]["count"] == 0


def test_readers_name_the_flag_of_a_broken_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MetricsInputError, match=r"^--pred .*bad.json: not valid JSON"):
        read_predictions(bad)
    with pytest.raises(MetricsInputError, match=r"^--refs .*bad.json: not valid JSON"):
        read_references(bad)
