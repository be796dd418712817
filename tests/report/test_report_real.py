"""Reports of real engine outputs: recap with a tiny VLM over a webdataset tar, a parquet table,
a jsonl table and loose files (thumbnails re-read through every kind of source); the lite
experts (real OCR, faces, colours, NSFW); the full profile on tiny detectors, SAM and depth
(boxes and masks from the real code paths)."""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
from bs4 import BeautifulSoup
from PIL import Image

from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.report.build import build_report
from pixscribe.testing import sample_photo, write_sample_photos
from test_e2e_cli import cli


def _jpeg(name: str, fmt: str = "JPEG") -> bytes:
    b = io.BytesIO()
    sample_photo(name).save(b, fmt)
    return b.getvalue()


def _cards(rep) -> dict[str, object]:
    page = BeautifulSoup((rep / "page-0001.html").read_text(), "html.parser")
    return {c.select_one("span.source").get_text(): c for c in page.select("article.row")}


def test_recap_over_every_kind_of_source(tiny_vlms, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    with tarfile.open(inp / "shard.tar", "w") as tar:
        for key, name, ext in (("k1", "astronaut", "jpg"), ("k2", "chelsea", "png")):
            for member, data in ((f"{key}.{ext}", _jpeg(name, "PNG" if ext == "png" else "JPEG")),
                                 (f"{key}.txt", f"the original caption of {name}".encode())):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"key": ["p1", "p2"], "image": [_jpeg("coffee"), _jpeg("rocket")],
                             "caption": ["coffee <b>original</b>", None]}), inp / "table.parquet")
    (inp / "rows.jsonl").write_text("\n" + json.dumps({"key": "j1", "image": base64.b64encode(_jpeg("page")).decode()}) + "\n")
    write_sample_photos(inp / "loose", ("motorcycle",))
    out, rep = tmp_path / "out", tmp_path / "rep"
    cfg = RunConfig(inputs=[str(inp / n) for n in ("shard.tar", "table.parquet", "rows.jsonl", "loose")],
                    output=str(out), vlm=str(tiny_vlms["llava"]), max_new_tokens=4, device="cpu", progress=False)
    assert Runner(cfg).run().rows_written == 6
    p = cli("report", str(out), "-o", str(rep))
    assert "6 of 6 rows on 1 page(s), 6 thumbnails," in p.stderr and "could not be read" not in p.stderr
    cards = _cards(rep)
    sources = sorted(cards)
    assert sum("::" in s for s in sources) == 2 and sum("#row=" in s for s in sources) == 3
    for src, c in cards.items():
        img = c.select_one(".stage img")
        assert img is not None, src
        thumb = Image.open(rep / img["src"])
        assert max(thumb.size) == 384 and (int(img["width"]), int(img["height"])) == thumb.size
    tar_card = next(c for s, c in cards.items() if s.endswith("::k1.jpg"))
    assert tar_card.select_one("p.orig").get_text() == "original the original caption of astronaut"
    parquet_card = next(c for s, c in cards.items() if s.endswith("table.parquet#row=0"))
    assert parquet_card.select_one("p.orig").get_text() == "original coffee <b>original</b>"
    run = BeautifulSoup((rep / "index.html").read_text(), "html.parser").get_text(" ", strip=True)
    assert "Please generate a detailed caption of this image." in run and str(tiny_vlms["llava"]) in run
    assert f"6 rows in {len(list(out.glob('part-*')))} parts" in run and "0 error rows" in run
    prov = tar_card.select_one("details.prov").get_text(" ", strip=True)
    assert "recap" in prov and str(tiny_vlms["llava"]) in prov


def test_lite_experts(tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos, ("astronaut", "page"))
    out, rep = tmp_path / "out", tmp_path / "rep"
    cli("caption", str(photos), "-o", str(out), "--profile", "lite", "--no-progress")
    build_report(out, rep)
    cards = _cards(rep)
    astro = next(c for s, c in cards.items() if s.endswith("astronaut.jpg"))
    page = next(c for s, c in cards.items() if s.endswith("page.jpg"))
    faces = astro.select('g.layer[data-layer="faces"] g.ent')
    assert len(faces) == 1 and faces[0].title.get_text().startswith("faces · score ")  # MTCNN: 1.00
    assert "One face at the top." in astro.select_one("p.caption").get_text()
    assert len(astro.select("section.expert p.colors svg.sw rect")) >= 3  # the dominant colours
    ocr = [g.title.get_text() for g in page.select('g.layer[data-layer="ocr"] g.ent')]
    assert ocr and ocr[0].startswith("ocr · “Region-based segmentation” · score")
    nsfw = [s for s in page.select("section.expert") if s.h4.get_text().startswith("nsfw")][0]
    assert [dt.get_text() for dt in nsfw.select("dt")] == ["nsfw", "flagged"]


def test_full_profile_on_tiny_experts(tiny_vlms, tiny_experts, tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos, ("astronaut", "coffee"))
    out, rep = tmp_path / "out", tmp_path / "rep"
    cfg = RunConfig(
        inputs=[str(photos)], output=str(out), profile="full", method="experts", progress=False, device="cpu",
        experts=["stats", "faces", "owlv2", "grounding_dino", "sam", "depth"], queries=["person", "cup"],
        vlm=str(tiny_vlms["llava"]), max_new_tokens=4,
        expert_models={k: str(tiny_experts[v]) for k, v in (("owlv2", "owlv2"), ("grounding_dino", "grounding_dino"),
                                                             ("sam", "sam"), ("depth", "depth_anything"))},
        expert_options={"owlv2": {"box_threshold": 0.0}, "grounding_dino": {"box_threshold": 0.0, "text_threshold": 0.0}})
    assert Runner(cfg).run().error_rows == 0
    res = build_report(out, rep)
    assert (res.shown, res.thumbnails) == (2, 2)
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(out).to_pylist()}
    for name, c in _cards(rep).items():
        row = rows[name.rsplit("/", 1)[-1]]
        sam = json.loads(row["expert_sam"])
        masks = c.select('g.layer[data-layer="sam"] image.mask')
        assert sam and len(masks) == min(len(sam), 60)
        first = Image.open(rep / masks[0]["href"])
        assert first.mode == "P" and max(first.size) <= 384
        assert abs(first.size[0] / first.size[1] - row["width"] / row["height"]) < 0.02
        owl = json.loads(row["expert_owlv2"])
        assert len(c.select('g.layer[data-layer="owlv2"] g.ent')) == min(len(owl), 60)
        depth = c.select('g.layer[data-layer="depth"] g.ent title')
        assert depth and all("nearness" in t.get_text() for t in depth)
        assert c.select_one("p.caption").get_text() == row["caption"]
