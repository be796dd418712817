"""`pixscribe report`: the HTML structure of reports of sample rows in every documented method
shape (textualize, panoptic, region), with an error row and hostile text; --where/--sort/--sample
and paging; replacing a report; the run page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from PIL import Image

from fixtures_report import HOSTILE, SAMPLE_RUN, sample_rows, write_output
from pixscribe.report.build import ReportOptions, build_report
from test_e2e_cli import cli


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def card(page: BeautifulSoup, row_id: str):
    for art in page.select("article.row"):
        if art.select_one("code.id").get_text() == row_id:
            return art
    raise AssertionError(f"no card for {row_id!r}")


def rows_index(report: Path) -> list[dict]:
    text = (report / "assets" / "rows.js").read_text()
    assert "<" not in text  # a caption's '<' is \u003c even in the script data
    return json.loads(text.split("=", 1)[1].rstrip().rstrip(";"))


def test_every_row_and_shape_rendered(sample_out, tmp_path):
    rep = tmp_path / "rep"
    p = cli("report", str(sample_out), "-o", str(rep))
    assert "7 of 7 rows on 1 page(s), 6 thumbnails (source 1 could not be read)" in p.stderr
    page = soup(rep / "page-0001.html")
    rows = sample_rows(sample_out.parent / "photos")
    assert [c.select_one("code.id").get_text() for c in page.select("article.row")] == [r["id"] for r in rows]

    # textualize: the hallucinated phrase struck in the description, the added words marked, the evidence
    t = card(page, "astronaut")
    assert [d.get_text() for d in t.select("p.desc del.halluc")] == ["dog"]
    assert "NASA" in " ".join(i.get_text() for i in t.select("p.final ins.added"))
    assert "holds" not in " ".join(i.get_text() for i in t.select("p.final ins.added"))
    evidence = t.select("table.evidence tbody tr")
    assert [tr.select("td")[2].get_text() for tr in evidence] == ["grounded", "grounded", "hallucinated"]
    assert evidence[2].select_one("del.halluc").get_text() == "dog" and not evidence[2].get("data-ent")
    objects = t.select_one('g.layer[data-layer="objects"]').select("g.ent")
    assert len(objects) == 2 and objects[0].title.get_text().startswith("astronaut · grounded · score 0.87")
    rect = objects[0].select_one("rect.box")  # pixel box [150, 40, 380, 500] in the 512x512 frame
    assert [float(rect[k]) for k in ("x", "y", "width", "height")] == [150, 40, 230, 460]
    assert evidence[0]["data-ent"] == objects[0]["data-ent"]
    (mask,) = t.select('g.layer[data-layer="regions"] image.mask')
    m = Image.open(rep / mask["href"])
    assert m.mode == "P" and m.size == (256, 256) and m.info["transparency"] == 0  # every 2nd pixel of 512
    assert m.getpixel((130, 160)) == 1 and m.getpixel((70, 160)) == 0 and m.getpixel((130, 70)) == 0  # x 150-380, y 150-500
    assert "nearness 0.82" in t.select_one("ol.regions").get_text()

    skipped = card(page, "coffee")
    assert "skipped: no objects detected" in skipped.select_one(".badge.skip").get_text()
    assert skipped["data-flags"].split() == ["skipped"]

    # panoptic: every inline box is a link to an entity drawn on the overlay and listed in the table
    pan = card(page, "chelsea")
    refs = pan.select("a.boxref")
    assert [a.get_text(strip=True) for a in refs] == ["[[0.200, 0.100, 0.800, 0.950]]", "[[0.000, 0.600, 1.000, 1.000]]"]
    drawn = {g["data-ent"] for g in pan.select('g.layer[data-layer="entities"] g.ent')}
    listed = {tr["data-ent"] for tr in pan.select("table.entities tr[data-ent]")}
    assert {a["data-ent"] for a in refs} == drawn == listed and len(drawn) == 2
    assert not pan.select('g.layer[data-layer="inline boxes"]')
    assert "A tabby cat lies on a blanket." in pan.select_one("p.plain").get_text()

    # region: one row per region, and one row per image with a regions list (one region box-only)
    reg = card(page, "rocket")
    assert len(reg.select('g.layer[data-layer="regions"] image.mask')) == 1
    assert "attribute: color" in reg.select_one("ol.regions").get_text()
    moto = card(page, "motorcycle")
    assert [li.select_one(".searchable").get_text() for li in moto.select("ol.regions li")] == ["a red motorcycle",
                                                                                               "a brick wall"]
    assert len(moto.select('g.layer[data-layer="regions"] g.ent')) == 2
    assert len(moto.select('g.layer[data-layer="regions"] image.mask')) == 1

    # the error row: its error, no thumbnail and why
    err = card(page, "missing-1")
    assert err["data-error"] == "decode" and "truncated image" in err.select_one("p.error").get_text()
    assert "image unavailable:" in err.select_one(".noimg").get_text() and "no such file" in err.get_text()

    idx = rows_index(rep)
    assert [r["k"] for r in idx] == [a["id"] for a in page.select("article.row")]
    assert "hallucinations" in idx[0]["f"] and "skipped" in idx[1]["f"] and idx[5]["e"] == "decode"
    thumbs = sorted((rep / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 6 and all(max(Image.open(f).size) == 384 for f in thumbs)


def test_untrusted_text_is_escaped(sample_out, tmp_path):
    rep = tmp_path / "rep"
    build_report(sample_out, rep)
    raw = (rep / "page-0001.html").read_text()
    page = BeautifulSoup(raw, "html.parser")
    assert "<script>window.__pwned" not in raw and '<img src="x"' not in raw and "<b id=" not in raw
    assert [s.get("src") for s in page.find_all("script")] == ["assets/rows.js", "assets/report.js"]
    assert not page.find_all(attrs={"onerror": True}) and not page.find_all(attrs={"onload": True})
    assert not page.find_all("b", id="bold")
    hostile = card(page, '"><svg onload="window.__pwned=3">')
    assert hostile.select_one("p.caption").get_text() == HOSTILE
    assert "bold</b>" in hostile.select_one("p.orig").get_text()
    run = (rep / "index.html").read_text()
    assert "<script>window.__pwned" not in run and "Describe. &lt;script&gt;" in run
    assert "Content-Security-Policy" in raw and "script-src 'self'" in raw


def test_run_page(sample_out, tmp_path):
    rep = tmp_path / "rep"
    report_json = tmp_path / "eval.json"
    judge = {"model": "judge-m", "backend": "openai",
             "transcript": {"path": "eval.judge.jsonl", "exchanges": 12, "sha256": "ab" * 32}}
    report_json.write_text(json.dumps({"corpus": {"cider_d": 0.8123, "bleu_4": 0.3}, "ci95": {"cider_d": [0.7, 0.9]},
                                       "n_images": 6, "missing": {"count": 1, "ids": ["x"]}, "info": {"judge": judge}}))
    build_report(sample_out, rep, ReportOptions(eval_path=report_json))
    run = soup(rep / "index.html")
    text = run.get_text(" ", strip=True)
    assert "7 rows in 1 part" in text and "1 error rows" in text
    assert [td.get_text() for td in run.select("table.errors td")][:2] == ["decode", "1"]
    assert len(run.select("svg.hist")) == 3  # caption words, hallucinations per image, seconds per row
    hall = run.select("svg.hist")[1]
    assert [r.title.get_text() for r in hall.select("rect.bar")] == ["0: 1", "1: 1"]  # coffee 0, astronaut 1
    metrics = {tr.select("td")[0].get_text(): [td.get_text() for td in tr.select("td")[1:]]
               for tr in run.select("table.metrics tbody tr")}
    assert metrics["cider_d"] == ["0.8123", "[0.7000, 0.9000]"] and metrics["bleu_4"] == ["0.3000", ""]
    assert "tiny/model" in text and "stage textualize" in text and "ok 2" in text
    judge_line = run.select_one("p.judge").get_text()
    assert judge_line == f"Judge judge-m (openai): transcript eval.judge.jsonl, 12 exchanges, sha256 {'ab' * 32}."


def test_where_sort_sample_and_pages(sample_out, tmp_path):
    rep = tmp_path / "rep"
    res = build_report(sample_out, rep, ReportOptions(where="error is null", sort="id desc", page_size=4))
    assert (res.rows, res.shown, res.pages) == (7, 6, 2)
    ids = [c.select_one("code.id").get_text() for n in (1, 2) for c in soup(rep / f"page-000{n}.html").select("article.row")]
    assert ids == sorted((r["id"] for r in sample_rows(sample_out.parent / "photos") if r["error"] is None), reverse=True)
    assert [a.get_text() for a in soup(rep / "page-0002.html").select("#pager a")] == ["1", "2"]
    first = soup(rep / "page-0001.html").select_one("article.row")
    assert first["data-idx"] == "0" and soup(rep / "page-0002.html").select_one("article.row")["data-idx"] == "4"

    def sample(seed, n=3):
        build_report(sample_out, rep, ReportOptions(sample=n, seed=seed))
        return [c.select_one("code.id").get_text() for c in soup(rep / "page-0001.html").select("article.row")]

    a = sample(1)
    assert len(a) == 3 and sample(1) == a and sample(2) != a
    file_order = [r["id"] for r in sample_rows(sample_out.parent / "photos")]
    assert [x for x in file_order if x in a] == a  # a sample is shown in file order
    assert sample(1, n=0) == file_order  # --sample 0: every row
    assert not (rep / "page-0002.html").exists()  # the earlier report was replaced whole

    p = cli("report", str(sample_out), "-o", str(rep), "--where", "no_such_column > 1", check=False)
    assert p.returncode == 2 and "--where" in p.stderr and "no_such_column" in p.stderr and "Traceback" not in p.stderr
    p = cli("report", str(sample_out), "-o", str(rep), "--where", "true; drop table x", check=False)
    assert p.returncode == 2 and "without ';'" in p.stderr


def test_refuses_a_directory_that_is_not_a_report(sample_out, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    p = cli("report", str(sample_out), "-o", str(busy), check=False)
    assert p.returncode == 2 and "is not a pixscribe report" in p.stderr
    assert (busy / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".busy.tmp-*"))
    p = cli("report", str(tmp_path / "nope"), "-o", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and "not a directory" in p.stderr


def test_jsonl_and_tar_parts_and_mixed_schemas(tmp_path):
    photos = tmp_path / "photos"
    from pixscribe.testing import write_sample_photos

    write_sample_photos(photos)
    rows = sample_rows(photos)
    out = tmp_path / "out"
    write_output(out, rows[:3], SAMPLE_RUN, fmt="jsonl", part=0)
    write_output(out, rows[3:], fmt="tar", part=1)
    res = build_report(out, tmp_path / "rep", ReportOptions(sort="id"))
    assert (res.rows, res.shown) == (7, 7)
    page = soup(tmp_path / "rep" / "page-0001.html")
    assert sorted(c.select_one("code.id").get_text() for c in page.select("article.row")) == sorted(r["id"] for r in rows)
    assert [d.get_text() for d in card(page, "astronaut").select("p.desc del.halluc")] == ["dog"]


def test_a_column_named_like_duckdbs_row_number_is_a_clear_error(tmp_path):
    rows = [{"id": "a", "source": "x", "file_row_number": "7", "caption": "c", "error": None}]
    out = write_output(tmp_path / "out", rows)
    p = cli("report", str(out), "-o", str(tmp_path / "rep"), check=False)
    assert p.returncode == 2 and "'file_row_number'" in p.stderr and "rename" in p.stderr


@pytest.mark.parametrize("caption,expected", [
    ("a dog [[0.1, 0.2, 0.3, 0.4]]", [("text", "a dog "), ("boxes", [(0.1, 0.2, 0.3, 0.4)])]),
    ("two [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]] boxes", [("text", "two "), ("boxes", [(0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)]),
                                                         ("text", " boxes")]),
    ("not a box [[1, 2, 3]] here", [("text", "not a box [[1, 2, 3]] here")]),
])
def test_inline_boxes(caption, expected):
    from pixscribe.report.adapters import inline_boxes

    got = [(p[0], p[1]) for p in inline_boxes(caption)]
    assert got == expected


def test_strike_and_added_words():
    from pixscribe.report.adapters import added_words, strike_phrases

    assert strike_phrases("A Dog and a dogma, a red dog.", ["dog", "red dog"]) == [
        ("A ", False), ("Dog", True), (" and a dogma, a ", False), ("red dog", True), (".", False)]
    parts = added_words("A cat on a mat.", "A grey cat sleeps on a mat.")
    assert "".join(t for t, _ in parts) == "A grey cat sleeps on a mat."
    assert [t.strip() for t, added in parts if added] == ["grey", "sleeps"]
    assert re.sub(r"\s+", " ", "".join(t for t, a in added_words(None, "x y"))) == "x y"


def test_without_duckdb_the_error_says_what_to_install(sample_out, tmp_path, monkeypatch):
    import sys

    from pixscribe.deps import MissingDependency

    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now fails
    with pytest.raises(MissingDependency, match=r"'duckdb' is needed for pixscribe report.*pip install 'pixscribe\[report\]'"):
        build_report(sample_out, tmp_path / "rep")
    assert not (tmp_path / "rep").exists() and not list(tmp_path.glob(".rep.tmp-*"))


def test_pager_lists_a_window_of_pages():
    from pixscribe.report.build import pager

    pages = [{"n": n, "href": f"page-{n:04d}.html"} for n in range(1, 1001)]
    got = [p.get("n", "…") for p in pager(pages, 500)]
    assert got == [1, "…", *range(495, 506), "…", 1000]
    assert [p.get("n", "…") for p in pager(pages[:3], 2)] == [1, 2, 3]
    assert [p.get("n", "…") for p in pager(pages, 1)] == [1, 2, 3, 4, 5, 6, "…", 1000]


def test_region_rows_as_arrow_structs_and_as_columns(tmp_path):
    """The region method's own shapes: a ``regions`` list<struct> column (one row per image) and
    the region's keys as columns (one row per region)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fixtures_report import rect_rle

    mask_t = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
    region_t = pa.struct([("region_id", pa.string()), ("mask", mask_t), ("box", pa.list_(pa.float64())),
                          ("box_norm", pa.list_(pa.float64())), ("area", pa.int64()), ("caption", pa.string())])
    m = rect_rle(100, 200, (20, 10, 120, 60))
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({
        "id": ["img", "img:0"], "source": ["/nowhere/a.jpg", "/nowhere/a.jpg"], "width": pa.array([200, 200], pa.int32()),
        "height": pa.array([100, 100], pa.int32()), "method": ["region", "region"], "caption": [None, "a red box"],
        "regions": pa.array([[{"region_id": "img:0", "mask": m, "box": [20.0, 10.0, 120.0, 60.0],
                               "box_norm": [0.1, 0.1, 0.6, 0.6], "area": 5000, "caption": "a red box"}], None],
                            pa.list_(region_t)),
        "region_id": [None, "img:0"], "mask": [None, m], "box_norm": [None, [0.1, 0.1, 0.6, 0.6]],
        "error": [None, None]}), out / "part-00000.parquet")
    build_report(out, tmp_path / "rep", ReportOptions(images=False))
    page = soup(tmp_path / "rep" / "page-0001.html")
    for c in page.select("article.row"):
        (rect,) = c.select('g.layer[data-layer="regions"] rect.mbox')
        assert [float(rect[k]) for k in ("x", "y", "width", "height")] == [20, 10, 100, 50]
        assert len(c.select('g.layer[data-layer="regions"] image.mask')) == 1
        assert "a red box" in c.select_one("ol.regions").get_text()


def test_empty_fields_and_negative_zero_are_not_shown(tmp_path):
    """An expert that found nothing says nothing (no "lines []", "text", "confidence null"), and a
    value that rounds to zero is never "-0.00"."""
    from pixscribe.testing import write_sample_photos

    (photo,) = write_sample_photos(tmp_path / "photos", ("page",))
    row = {"id": "p", "source": str(photo), "width": 384, "height": 191, "sha256": None, "method": "experts",
           "caption": "a page", "error": None, "seconds": -0.0001,
           "expert_ocr": json.dumps({"lines": [], "text": "", "confidence": None, "regions": 0}),
           "expert_faces": json.dumps({"faces": [], "count": 0}),
           "expert_stats": json.dumps({"brightness": -0.0, "tilt": -0.25, "notes": {}}),
           "expert_dense": json.dumps([{"label": "a page", "box": [-0.0001, 0, 100, 100], "score": -0.001}]),
           "regions": json.dumps([{"caption": "the page", "box": [0, 0, 10, 10], "nearness": -0.0004, "size_pct": -0.01}])}
    build_report(write_output(tmp_path / "out", [row]), tmp_path / "rep")
    c = soup(tmp_path / "rep" / "page-0001.html").select_one("article.row")
    facts = {dt.get_text(): dd.get_text() for dt, dd in zip(c.select("dl.facts dt"), c.select("dl.facts dd"))}
    assert facts == {"regions": "0", "count": "0", "brightness": "0.0", "tilt": "-0.25"}
    text = c.get_text(" ", strip=True)
    assert not re.search(r"-0\.0+\b", text) and "null" not in text and "[]" not in text, text
    assert "nearness 0.00" in text and "0.000 s" in text


def test_fmt_num_never_writes_a_negative_zero():
    from pixscribe.report.rowview import fmt_num

    assert [fmt_num(x, f) for x, f in ((-0.001, "%.2f"), (-0.004, "%.0f"), (-1e-9, "%.3f"), (-0.006, "%.2f"),
                                       (-0.5, "%.2f"), (-10, "%.0f"), (0.0, "%.1f"))] == \
        ["0.00", "0", "0.000", "-0.01", "-0.50", "-10", "0.0"]
