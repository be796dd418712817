"""A real `pixscribe caption` run for the export layout tests: a parquet table of images in
every input image type under hostile ids, captioned by the loopback OpenAI-compatible test
server, whose scripted replies (chosen by image size) are hostile captions: line breaks of
every kind, control characters, a byte-order mark, markup, a 3,000-byte caption and a blank
one. Two rows in different shards share an id."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixscribe.testing import sample_photo
from pixscribe.testing.openai_server import ServerProcess
from test_e2e_cli import cli

# (id, image type, width): every image is 40 px high, so the server can tell them apart by size
ROWS = [("plain-1", "JPEG", 64), ("A/../b.c", "PNG", 72), ("IMG_0001", "GIF", 80), ("img_0001", "WEBP", 88),
        ("CON", "BMP", 96), ("../../etc/passwd", "TIFF", 104), ("x-masklabel", "JPEG", 112),
        ("猫 🐱.jpg", "JPEG", 120), ("dup", "JPEG", 128), ("blank", "JPEG", 136), ("dup", "PNG", 144)]
SHARD = 9  # rows 0-8 one shard, 9-10 the next: the two "dup" rows keep the same id
ORIGINAL = {"plain-1": "alt text one", "IMG_0001": "alt text of a gif", "dup": "alt dup"}
CAPTIONS = {
    72: "line one\r\nline two <b>x</b>\u2028three\x00nul\x07 \ufeffbom\ttab",
    80: "<script>alert(1)</script> \"quoted\" & 'apos' ``` # not a heading {x}",
    88: "\u00e9" * 1500 + " end",
    136: "  \n ",
}
ONE_LINE_72 = "line one line two <b>x</b> threenul bom tab"  # what a trainer's .txt holds for width 72


@dataclass
class Run:
    root: Path
    out: Path
    table: Path
    images: dict[int, bytes]  # width -> the input bytes

    def digest(self) -> str:
        return hashlib.sha256(self.table.read_bytes()).hexdigest()


def _encode(fmt: str, width: int) -> bytes:
    b = io.BytesIO()
    sample_photo("astronaut").resize((width, 40)).save(b, fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("layouts")
    images = {w: _encode(fmt, w) for _, fmt, w in ROWS}
    table = root / "in" / "t.parquet"
    table.parent.mkdir()
    pq.write_table(pa.table({"key": [k for k, _, _ in ROWS], "image": [images[w] for _, _, w in ROWS],
                             "caption": [ORIGINAL.get(k) for k, _, _ in ROWS]}), table)
    replies = [{"image": f"{w}x40", "content": c} for w, c in CAPTIONS.items()]
    (root / "replies.json").write_text(json.dumps(replies))
    with ServerProcess("--mode", "echo", "--model", "m", "--replies", str(root / "replies.json")) as srv:
        cli("caption", str(table), "-o", str(root / "out"), "--backend", "openai", "--base-url", srv.url,
            "--vlm", "m", "--shard-size", str(SHARD), "--no-progress")
    return Run(root, root / "out", table, images)


def rows_by_width(out: Path) -> dict[int, dict]:
    return {r["width"]: r for r in pq.read_table(out).to_pylist()}
