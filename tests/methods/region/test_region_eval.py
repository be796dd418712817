"""Region evaluation: per prompting mode and attribute, equal to the metrics on each subset;
``pixscribe eval-regions`` end to end on jsonl and on a pixscribe-style regions column."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixscribe.metrics.evaluate import evaluate
from pixscribe.methods.region.evaluate import evaluate_regions, explode_regions
from pixscribe.methods.region.output import regions_column

REFS = {
    "r1": ["a red cotton shirt with short sleeves", "a short sleeved red shirt"],
    "r2": ["a shiny blue metal car door", "the door of a blue car"],
    "r3": ["a smiling face", "the woman is smiling broadly"],
    "r4": ["curly brown hair down to the shoulders", "shoulder length curly hair"],
    "r5": ["a wooden table top", "the top of a table made of wood"],
    "r6": ["green grass in the sun", "a patch of sunny grass"],
}
ATTRS = {"r1": "Colour", "r2": "material", "r3": "expression", "r4": "hairstyle", "r5": "material", "r6": "color"}


def _rows():
    focal = [{"region_id": k, "caption": v[0], "prompt_mode": "focal"} for k, v in REFS.items()]
    box = [{"region_id": k, "caption": "a thing in the picture", "prompt_mode": "box", "attribute": "ignored"}
           for k in list(REFS)[:5]]  # fmt: skip
    box.append({"region_id": "r6", "caption": None, "prompt_mode": "box", "error": "region: empty mask"})
    return focal + box


def test_breakdown_by_mode_and_attribute_equals_the_metrics_on_each_subset():
    metrics = "bleu,rouge_l,cider_d"
    rep = evaluate_regions(_rows(), REFS, ATTRS, metrics, bootstrap=0)
    assert rep["modes"] == ["box", "focal"] and rep["n_refs"] == 6
    focal, box = rep["by_prompt_mode"]["focal"], rep["by_prompt_mode"]["box"]
    assert focal["n"] == 6 and box["n"] == 5 and box["missing"] == {"count": 1, "ids": ["r6"]}
    direct = evaluate({k: v[0] for k, v in REFS.items()}, REFS, metrics, bootstrap=0)["corpus"]
    assert focal["corpus"] == direct
    assert focal["corpus"]["cider_d"] > box["corpus"]["cider_d"]
    # attributes from the references, spelled any way ("Colour" is color)
    assert set(focal["by_attribute"]) == {"color", "material", "expression", "hairstyle"}
    mat = focal["by_attribute"]["material"]
    sub = {k: REFS[k] for k in ("r2", "r5")}
    assert mat["n"] == 2 and mat["corpus"] == evaluate({k: v[0] for k, v in sub.items()}, sub, metrics, bootstrap=0)["corpus"]
    assert box["by_attribute"]["color"]["n"] == 1 and box["by_attribute"]["color"]["missing"]["ids"] == ["r6"]


def test_attribute_from_predictions_when_references_have_none_and_empty_groups():
    rows = [{"region_id": "r1", "caption": REFS["r1"][0], "attribute": "color", "prompt_mode": "som"},
            {"region_id": "r2", "caption": REFS["r2"][0], "prompt_mode": "som"}]  # fmt: skip
    rep = evaluate_regions(rows, {k: REFS[k] for k in ("r1", "r2", "r3")}, None, "bleu", bootstrap=0)
    by = rep["by_prompt_mode"]["som"]["by_attribute"]
    assert by["color"]["n"] == 1 and by["none"]["n"] == 1 and by["none"]["missing"]["ids"] == ["r3"]
    rep = evaluate_regions([{"region_id": "zz", "caption": "x", "prompt_mode": "crop"}], REFS, None, "bleu", bootstrap=0)
    assert rep["by_prompt_mode"]["crop"]["n"] == 0 and rep["by_prompt_mode"]["crop"]["corpus"] == {}
    with pytest.raises(ValueError, match="no 'region_id'"):
        evaluate_regions([{"caption": "x"}], REFS, None, "bleu")


def test_explode_regions_rows():
    rows = [{"id": "a", "regions": [{"region_id": "a:0"}, {"region_id": "a:1"}]}, {"id": "b", "regions": None},
            {"id": "c", "regions": json.dumps([{"region_id": "c:0"}])}, {"region_id": "d", "caption": "x"}]  # fmt: skip
    assert [r.get("region_id") for r in explode_regions(rows)] == ["a:0", "a:1", "c:0", "d"]


@pytest.fixture()
def tiny_bert(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for v in REFS.values() for s in v for w in s.split()} | {"thing", "in", "picture"})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    d = tmp_path / "bert"
    BertTokenizer(vocab=vocab).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(d)  # fmt: skip
    return d


@pytest.mark.slow  # METEOR's jar takes ~20 s to start on 2 busy cores
def test_eval_regions_cli(tmp_path, tiny_bert):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"region_id": k, "refs": v, "attribute": ATTRS[k]}) + "\n" for k, v in REFS.items()))
    rows = _rows()
    focal = tmp_path / "focal.jsonl"
    focal.write_text("".join(json.dumps(r) + "\n" for r in rows if r["prompt_mode"] == "focal"))
    # the box run as a pixscribe output directory: one row per image with a regions list column
    out = tmp_path / "out_box"
    out.mkdir()
    box = [dict(r, index=i) for i, r in enumerate(r for r in rows if r["prompt_mode"] == "box")]
    pq.write_table(pa.table({"id": ["img1", "img2"], "regions": regions_column([box[:3], box[3:]])}),
                   out / "part-00000.parquet")  # fmt: skip
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pixscribe", "eval-regions", "--pred", str(focal), "--pred", str(out), "--refs", str(refs),
           "--metrics", "bleu,meteor,rouge_l,cider_d,bertscore", "--bertscore-model", str(tiny_bert),
           "--bootstrap", "20", "-o", str(report)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, COLUMNS="200"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "focal" in res.stdout and "hairstyle" in res.stdout and "cider_d" in res.stdout
    rep = json.loads(report.read_text())
    f, b = rep["by_prompt_mode"]["focal"], rep["by_prompt_mode"]["box"]
    assert {"bleu_4", "meteor", "rouge_l", "cider_d", "bertscore_f1"} <= set(f["corpus"])
    assert f["corpus"]["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)  # every caption is one of its references
    assert f["corpus"]["meteor"] > b["corpus"]["meteor"] and b["n"] == 5 and b["missing"]["ids"] == ["r6"]
    assert set(f["ci95"]) >= {"cider_d", "bleu_4"}
    bad = subprocess.run([sys.executable, "-m", "pixscribe", "eval-regions", "--pred", str(tmp_path / "nope.jsonl"),
                          "--refs", str(refs)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "no such file" in bad.stderr
