"""Re-reading row images for the report and export: every kind of source, the engine's address
guard for URLs (a loopback server: refused by default, read with --allow-private-urls, never
touched with --no-fetch), a source that changed since the run, and clear errors."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup

from fixtures_http import photo_server
from fixtures_report import write_output
from pixscribe.io.plan import PathGuard
from pixscribe.report.build import ReportOptions, build_report
from pixscribe.report.images import SourceError, SourceReader, split_source
from pixscribe.testing import sample_photo


def _jpeg(name: str) -> bytes:
    b = io.BytesIO()
    sample_photo(name).save(b, "JPEG", quality=85)
    return b.getvalue()


@pytest.fixture()
def server():
    """Every path answers the coffee photo; ``server.hits`` lists the paths asked for."""
    with photo_server(alias=lambda n: "coffee") as srv:
        yield srv


def test_split_source(tmp_path):
    odd = tmp_path / "a::b#row=1.jpg"
    odd.write_bytes(b"x")
    assert split_source(str(odd))[0] == "file"  # an existing file wins over the patterns
    assert split_source("/d/s.tar::k1.jpg") == ("tar", "/d/s.tar", {"member": "k1.jpg"})
    assert split_source("/d/t.parquet#row=12") == ("table", "/d/t.parquet", {"row": "12"})
    assert split_source("/d/ds#split=train&row=3") == ("table", "/d/ds", {"split": "train", "row": "3"})
    assert split_source("https://example.org/x.jpg")[0] == "url"
    assert split_source("/d/t.parquet#rows=0:10")[0] == "file"  # a failed range, not a row


def test_every_kind_of_source(tmp_path):
    a, b, c = _jpeg("astronaut"), _jpeg("chelsea"), _jpeg("rocket")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        info = tarfile.TarInfo("k1.jpg")
        info.size = len(a)
        tar.addfile(info, io.BytesIO(a))
    pq.write_table(pa.table({"image": [b"", b], "caption": ["x", "y"]}), tmp_path / "t.parquet", row_group_size=1)
    import base64
    import json

    (tmp_path / "t.jsonl").write_text("\n\n" + "\n".join(json.dumps({"image": base64.b64encode(x).decode()}) for x in (a, c)) + "\n")
    import datasets

    datasets.Dataset.from_dict({"image": [{"bytes": a, "path": None}, {"bytes": c, "path": None}]},
                               features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(tmp_path / "hf"))
    r = SourceReader(guard=PathGuard([str(tmp_path)]), fetch_urls=False)
    sha = lambda d: hashlib.sha256(d).hexdigest()  # noqa: E731
    assert r.load(f"{tmp_path}/s.tar::k1.jpg", sha(a)).data == a
    assert r.load(f"{tmp_path}/t.parquet#row=1", sha(b)).data == b
    assert r.load(f"{tmp_path}/t.jsonl#row=1", sha(c)).data == c  # blank lines are not rows, as the reader counts
    assert r.load(f"{tmp_path}/hf#row=1", sha(c)).data == c
    assert r.load(f"{tmp_path}/t.jsonl#row=0", sha(c)).changed  # another image than the row's
    with pytest.raises(SourceError, match=r"t\.parquet#row=0 has no image"):
        r.load(f"{tmp_path}/t.parquet#row=0")
    with pytest.raises(SourceError, match="has no row 5"):
        r.load(f"{tmp_path}/t.jsonl#row=5")
    with pytest.raises(SourceError, match="s.tar::nope.jpg: cannot read"):
        r.load(f"{tmp_path}/s.tar::nope.jpg")
    with pytest.raises(SourceError, match="no such file"):
        r.load(f"{tmp_path}/gone.jpg")
    r.close()


def test_urls_go_through_the_address_guard(server, tmp_path):
    url = server.url + "/img.jpg"
    with pytest.raises(SourceError, match="refusing to connect to 127.0.0.1.*loopback.*--allow-private-urls"):
        SourceReader().load(url)
    with pytest.raises(SourceError, match="not fetched"):
        SourceReader(fetch_urls=False).load(url)
    assert server.hits == []  # neither touched the server
    assert SourceReader(allow_private=True).load(url).data == _jpeg("coffee")
    assert server.hits == ["/img.jpg"]

    row = {"id": "u1", "source": url, "width": 600, "height": 400, "sha256": hashlib.sha256(_jpeg("coffee")).hexdigest(),
           "method": "recap", "caption": "a cup", "error": None}
    out = write_output(tmp_path / "out", [row])
    res = build_report(out, tmp_path / "rep")
    assert res.thumbnails == 0 and res.thumbnail_errors == {"fetch": 1}
    page = BeautifulSoup((tmp_path / "rep" / "page-0001.html").read_text(), "html.parser")
    assert "refusing to connect" in page.select_one(".noimg").get_text()
    res = build_report(out, tmp_path / "rep", ReportOptions(allow_private_urls=True))
    assert res.thumbnails == 1 and len(server.hits) == 2


def test_changed_source_is_marked(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(_jpeg("astronaut"))
    row = {"id": "p", "source": str(photo), "width": 512, "height": 512, "sha256": "0" * 64, "method": "recap",
           "caption": "x", "error": None}
    build_report(write_output(tmp_path / "out", [row]), tmp_path / "rep")
    page = BeautifulSoup((tmp_path / "rep" / "page-0001.html").read_text(), "html.parser")
    assert page.select_one(".badge.warn").get_text() == "image changed since the run"
