"""The region output dict, its Arrow column, and the docs' explode snippets run for real."""

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixscribe.experts import rle
from pixscribe.methods.region.output import REGIONS_ARROW, region_output, regions_column
from pixscribe.methods.region.parse import region_ids, regions_from_columns

DOC = Path(__file__).resolve().parents[3] / "docs" / "region.md"


def _image_rows():
    m = np.zeros((60, 80), bool)
    m[10:20, 30:50] = True
    rows = []
    for image_id, items in (("img1", [{"mask": rle.encode(m), "attribute": "color"}, {"box": [1, 2, 11, 22], "id": "own"},
                                      {"box": [500, 0, 600, 10]}]),
                            ("img2", [{"bbox": [0, 0, 80, 60]}]), ("img3", [])):  # fmt: skip
        rs = regions_from_columns({"regions": items}, 80, 60)
        outs = [region_output(r, region_id=rid, task="attribute", caption=f"cap {rid}", prompt_mode="focal")
                for r, rid in zip(rs, region_ids(image_id, rs))]  # fmt: skip
        rows.append((image_id, outs))
    return rows


def test_region_output_dict():
    (_, outs), *_ = _image_rows()
    a, b, bad = outs
    assert a["region_id"] == "img1:0" and a["source"] == "mask" and a["attribute"] == "color"
    assert a["mask"] == rle.encode(rle.decode(a["mask"])) and a["area"] == 200
    assert a["box"] == [30.0, 10.0, 50.0, 20.0] and a["box_norm"] == [0.375, 0.166667, 0.625, 0.333333]
    assert b["region_id"] == "own" and b["mask"] is None and b["area"] == 200 and b["source"] == "box"
    assert bad["caption"] is None and bad["area"] is None and "outside the 80x60 image" in bad["error"]
    assert a["caption"] == "cap img1:0" and a["error"] is None


@pytest.fixture()
def out_dir(tmp_path, monkeypatch):
    rows = _image_rows()
    t = pa.table({"id": [r[0] for r in rows], "regions": regions_column([r[1] for r in rows])})
    assert t.schema.field("regions").type == REGIONS_ARROW
    (tmp_path / "out").mkdir()
    pq.write_table(t, tmp_path / "out" / "part-00000.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "out"


def _snippet(name: str) -> str:
    m = re.search(rf"<!-- tested: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert m, f"docs/region.md has no tested snippet {name!r}"
    return m.group(1)


def test_docs_explode_with_pyarrow(out_dir):
    ns: dict = {}
    exec(compile(_snippet("explode-pyarrow"), str(DOC), "exec"), ns)
    per = ns["per_region"]
    assert per.num_rows == 4  # 3 + 1 + 0 regions
    assert per.column("image_id").to_pylist() == ["img1", "img1", "img1", "img2"]
    assert per.column("region_id").to_pylist() == ["img1:0", "own", "img1:2", "img2:0"]
    assert per.column("mask").to_pylist()[0]["counts"] == _image_rows()[0][1][0]["mask"]["counts"]


def test_docs_explode_and_regroup_with_duckdb(out_dir):
    pytest.importorskip("duckdb")
    ns: dict = {}
    exec(compile(_snippet("explode-duckdb"), str(DOC), "exec"), ns)
    per = ns["per_region"]  # pandas
    assert len(per) == 4 and {"image_id", "region_id", "caption", "mask", "area"} <= set(per.columns)
    assert list(per["caption"])[1] == "cap own"
    back = ns["per_image"]
    assert list(back["image_id"]) == ["img1", "img2"]  # img3 had no regions
    assert [x["region_id"] for x in back["regions"][0]] == ["img1:0", "own", "img1:2"]


def test_readme_explode_snippet(out_dir):
    pytest.importorskip("duckdb")
    readme = DOC.parents[1] / "README.md"
    section = readme.read_text().split("## Region captioning", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(readme), "exec"), ns)
    per = ns["per_region"]
    assert list(per["region_id"]) == ["img1:0", "own", "img1:2", "img2:0"] and list(per["image_id"])[-1] == "img2"
