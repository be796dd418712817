"""`pixscribe export --to embed`: copies of the images with the caption in their XMP
dc:description, IPTC Caption-Abstract (UTF-8 declared) and EXIF ImageDescription, read back
by exiftool (Debian's libimage-exiftool-perl; dev/setup installs it) or, where it is absent,
by exiv2 itself; the pixels are the originals' and the user's files are never rewritten.
From the CLI on real caption runs: hostile ids and captions over a table, and loose files."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_export import CAPTIONS, ROWS, hostile_run, rows_by_width  # noqa: F401
from pixscribe.imaging import decode
from pixscribe.report.embed import IPTC_CAPTION_MAX, clean_text
from pixscribe.testing import write_sample_photos
from test_e2e_cli import cli

pytest.importorskip("pyexiv2")

FIELDS = ("XMP-dc:Description", "IPTC:Caption-Abstract", "EXIF:ImageDescription")


def read_captions(files: list[Path]) -> dict[str, dict[str, str]]:
    """file name -> {field: text}: exiftool where installed (no charset option: the file's own
    CodedCharacterSet must say UTF-8), else exiv2 through pyexiv2."""
    if shutil.which("exiftool"):
        p = subprocess.run(["exiftool", "-j", "-G1", *(f"-{f}" for f in FIELDS), *map(str, files)],
                           capture_output=True, text=True, check=True)
        names = {"XMP-dc:Description": "xmp", "IPTC:Caption-Abstract": "iptc", "IFD0:ImageDescription": "exif"}
        return {Path(d["SourceFile"]).name: {names[k]: str(v) for k, v in d.items() if k in names}
                for d in json.loads(p.stdout)}
    import pyexiv2

    out = {}
    for f in files:
        with pyexiv2.Image(str(f)) as im:
            xmp, iptc, exif = im.read_xmp(), im.read_iptc(), im.read_exif()
        got = {"xmp": (xmp.get("Xmp.dc.description") or {}).get('lang="x-default"'),
               "iptc": iptc.get("Iptc.Application2.Caption"), "exif": exif.get("Exif.Image.ImageDescription")}
        out[f.name] = {k: v for k, v in got.items() if v is not None}
    return out


def _pixels(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_captions_read_back_from_every_image_type(hostile_run, tmp_path):
    before = hostile_run.digest()
    dest = tmp_path / "photos"
    p = cli("export", str(hostile_run.out), "--to", "embed", str(dest), "--sidecars")
    assert "export: 10 rows as embed" in p.stderr and "1 rows with no caption text" in p.stderr, p.stderr
    fmt = {w: f for _, f, w in ROWS}
    images = sorted(f for f in dest.iterdir() if f.suffix not in (".json", ".jsonl"))
    got = read_captions(images)
    assert len(got) == 10
    for img in images:
        row = json.loads(img.with_suffix(".json").read_text(encoding="utf-8"))
        text = clean_text(row["caption"])
        cut = text.encode()[:IPTC_CAPTION_MAX].decode("utf-8", "ignore")
        want = {"xmp": text, "exif": text} if img.suffix == ".webp" else {"xmp": text, "iptc": cut, "exif": text}
        assert got[img.name] == want, (img.name, got[img.name])
        original = hostile_run.images[row["width"]]
        if fmt[row["width"]] in ("GIF", "BMP"):  # no metadata there: the pixels pixscribe saw, as PNG
            assert img.suffix == ".png"
            assert np.array_equal(_pixels(img.read_bytes()), np.asarray(decode(original, max_pixels=None).image))
        else:  # the same file with new tags: pixels not re-encoded
            assert img.suffix == "." + {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}[fmt[row["width"]]]
            assert np.array_equal(_pixels(img.read_bytes()), _pixels(original))
    long = next(v for v in got.values() if v["xmp"].endswith(" end"))
    assert len(long["xmp"]) == 1504 and long.get("iptc", "\u00e9" * 1000) == "\u00e9" * 1000  # IIM's 2,000 bytes
    assert hostile_run.digest() == before


def test_loose_files_are_copied_never_rewritten(tmp_path):
    photos = write_sample_photos(tmp_path / "photos", ("astronaut", "coffee"))
    sums = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in photos}
    out = tmp_path / "out"
    cli("caption", str(tmp_path / "photos"), "-o", str(out), "--method", "experts", "--experts", "stats",
        "--no-progress")
    dest = tmp_path / "captioned"
    cli("export", str(out), "--to", "embed", str(dest))
    copies = sorted(dest.glob("*.jpg"))
    assert len(copies) == 2 and all(v.get("xmp") and v["xmp"] == v["iptc"] == v["exif"]
                                    for v in read_captions(copies).values())
    assert {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in photos} == sums
    assert not read_captions(list(photos))[photos[0].name].get("xmp")  # the originals carry no caption


def test_without_pyexiv2_the_export_says_what_to_install(hostile_run, tmp_path):
    code = ("import sys; sys.modules['pyexiv2'] = None; from pixscribe.cli import app; "
            f"sys.argv = ['pixscribe', 'export', {str(hostile_run.out)!r}, '--to', 'embed', {str(tmp_path / 'd')!r}]; app()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2 and "pip install 'pixscribe[embed]'" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "d").exists()
