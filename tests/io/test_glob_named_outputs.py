"""Output folders whose names hold ``[1]``, ``*`` or ``?`` (issue 23, point 8).

DuckDB expands glob characters in every path it is given, even in an explicit list, so the
report of ``run[1]`` read its neighbour ``run1`` (wrong counts, rows never shown) and the
report of ``runs*`` read ``runsx`` too (an IndexError). Each folder here is a real caption
run with a neighbour its name matches as a pattern; report (real DuckDB), export and eval
must read exactly the folder named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup

from pixscribe.report.parts import OutputDir
from pixscribe.report.query import Query
from pixscribe.testing import write_sample_photos
from test_e2e_cli import cli

# (the glob-named folder, its rows), (a neighbour its name matches as a pattern, its rows)
PAIRS = [("run[1]", 3, "run1", 1), ("runs*", 3, "runsx", 1), ("r?n", 3, "ran", 1)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("globs")
    write_sample_photos(root / "three", ("astronaut", "coffee", "rocket"))
    write_sample_photos(root / "one", ("chelsea",))
    args = ("--method", "experts", "--experts", "stats", "--no-progress")
    cli("caption", str(root / "three"), "-o", str(root / "run[1]"), *args)
    cli("caption", str(root / "one"), "-o", str(root / "run1"), *args)
    for name, _, neighbour, _ in PAIRS[1:]:  # the same runs under the other names
        shutil.copytree(root / "run[1]", root / name)
        shutil.copytree(root / "run1", root / neighbour)
    return root


def _ids(out: Path) -> list[str]:
    return sorted(pq.read_table(out / "part-00000.parquet", columns=["id"]).column("id").to_pylist())


@pytest.mark.parametrize("name,rows,neighbour,other", PAIRS)
def test_report_reads_exactly_the_folder_named(root, tmp_path, name, rows, neighbour, other):
    out = root / name
    p = cli("report", str(out), "-o", str(tmp_path / "rep"), check=False)
    assert p.returncode == 0 and f"{rows} of {rows} rows" in p.stderr, p.stderr
    page = BeautifulSoup((tmp_path / "rep" / "page-0001.html").read_text(), "html.parser")
    assert sorted(c.select_one("code.id").get_text() for c in page.select("article.row")) == _ids(out)
    assert f"{rows} rows in 1 part " in BeautifulSoup((tmp_path / "rep" / "index.html").read_text(),
                                                      "html.parser").get_text(" ", strip=True)
    p = cli("report", str(root / neighbour), "-o", str(tmp_path / "rep2"))
    assert f"{other} of {other} rows" in p.stderr


@pytest.mark.parametrize("name,rows,neighbour,other", PAIRS)
def test_duckdb_sees_one_file_per_part(root, tmp_path, name, rows, neighbour, other):
    from pixscribe.report.query import literal_path

    q = Query(OutputDir(root / name), tmp_path)
    assert q.count() == rows
    assert q.scalar("SELECT count(DISTINCT __pixscribe_file) FROM rows") == 1
    import duckdb

    part = root / name / "part-00000.parquet"
    raw = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(part)]).fetchone()[0]
    assert raw != rows  # DuckDB itself takes the name as a pattern: the neighbour is what it reads
    lit = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [literal_path(part)]).fetchone()[0]
    assert lit == rows


def test_export_and_eval_read_exactly_the_folder_named(root, tmp_path):
    out = root / "run[1]"
    cli("export", str(out), "--to", "jsonl", str(tmp_path / "x.jsonl"))
    assert sorted(json.loads(x)["id"] for x in (tmp_path / "x.jsonl").read_text().splitlines()) == _ids(out)
    rows = pq.read_table(out).to_pylist()
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({r["id"]: [r["caption"]] for r in rows}))
    rep = tmp_path / "eval.json"
    p = cli("eval", "--pred", str(out), "--refs", str(refs), "--metrics", "bleu", "-o", str(rep), "--bootstrap", "10")
    assert "have no prediction" not in p.stdout + p.stderr
    assert sorted(json.loads(rep.read_text())["per_image"]) == _ids(out)
