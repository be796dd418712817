"""`pixscribe export --to folder`: a trainer's image folder, read back the way kohya's sd-scripts,
SimpleTuner, ai-toolkit and OneTrainer read one (their loaders' rules restated below, each
from the function named), from the CLI on a real caption run with hostile ids and captions
(tests/fixtures_export.py). Also: file stems for hostile ids, and the seeded caption mix."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_export import CAPTIONS, ONE_LINE_72, ROWS, hostile_run, rows_by_width  # noqa: F401
from pixscribe.imaging import decode
from pixscribe.report.captions import one_line, uniform
from pixscribe.report.stems import claim, stem_of
from test_e2e_cli import cli

PREFIX = "ohwx, "


def kohya(d: Path) -> dict[str, str]:
    """sd-scripts (library/train_util.py): glob_images over IMAGE_EXTENSIONS, then read_caption:
    splitext(image) + caption_extension (.txt here), UTF-8, an empty file is an error, and
    without enable_wildcard the first line, stripped."""
    exts = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
    out = {}
    for img in sorted(p for p in d.iterdir() if p.suffix in exts + [e.upper() for e in exts]):
        with open(os.path.splitext(img)[0] + ".txt", "rt", encoding="utf-8") as f:
            lines = f.readlines()
        assert len(lines) > 0, f"caption file is empty: {img}"
        out[img.name] = lines[0].strip()
    return out


def simpletuner(d: Path) -> dict[str, list[str]]:
    """SimpleTuner (helpers/prompts.py, prepare_instance_prompt_from_textfile): splitext + ".txt",
    decoded as UTF-8; a text with a newline is split into several captions, empty ones dropped."""
    out = {}
    for img in sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
        text = Path(os.path.splitext(img)[0] + ".txt").read_bytes().decode("utf-8")
        out[img.name] = [x for x in text.split("\n") if x] if "\n" in text else [text]
    return out


def ai_toolkit(d: Path) -> dict[str, str]:
    """ai-toolkit (toolkit/dataloader_mixins.py, load_caption): jpg/jpeg/png/webp, the whole
    splitext + caption_ext (".txt") file read as the caption."""
    out = {}
    for img in sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")):
        with open(os.path.splitext(img)[0] + ".txt", "r", encoding="utf-8") as f:
            out[img.name] = f.read()
    return out


def onetrainer(d: Path) -> dict[str, list[str]]:
    """OneTrainer (modules/util/path_util.py, DataLoaderText2ImageMixin): images of
    SUPPORTED_IMAGE_EXTENSIONS except names ending -masklabel/-condlabel, the prompt file the
    same path with ".txt", one prompt per line."""
    exts = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".avif"}
    out = {}
    for img in sorted(d.iterdir()):
        if img.suffix.lower() in exts and not img.stem.endswith(("-masklabel", "-condlabel")):
            lines = img.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
            out[img.name] = [x.strip() for x in lines if x.strip()]
    return out


def _expected(row: dict) -> str:
    return PREFIX + (ONE_LINE_72 if row["width"] == 72 else one_line(row["caption"]))


def test_every_trainer_pairs_each_image_with_its_caption(hostile_run, tmp_path):
    before = hostile_run.digest()
    outside = sorted(p for p in hostile_run.root.rglob("*"))
    dest = tmp_path / "train" / "10_ohwx"  # sd-scripts' DreamBooth folder naming: repeats_concept
    p = cli("export", str(hostile_run.out), "--to", "folder", str(dest), "--sidecars", "--prefix", PREFIX)
    assert "export: 10 rows as folder" in p.stderr and "1 rows with no caption text left out" in p.stderr, p.stderr
    rows = rows_by_width(hostile_run.out)
    sidecars = {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in dest.glob("*.json") if f.name[0] != "_"}
    images = {f.name: f for f in dest.iterdir() if f.suffix in (".jpg", ".png", ".webp")}
    assert len(images) == len(sidecars) == 10 and len(list(dest.glob("*.txt"))) == 10
    want = {name: _expected(rows[sidecars[f.stem]["width"]]) for name, f in images.items()}
    assert kohya(dest) == want and ai_toolkit(dest) == want
    assert simpletuner(dest) == onetrainer(dest) == {k: [v] for k, v in want.items()}
    # the 3,000-byte caption whole, the markup as text, nothing but the caption in the file
    assert want[next(n for n, f in images.items() if sidecars[f.stem]["width"] == 88)].endswith("\u00e9 end")
    assert all(not f.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r" not in f.read_bytes() for f in dest.glob("*.txt"))
    blank = next(json.loads(x) for x in (dest / "_export_errors.jsonl").read_text().splitlines())
    assert blank["id"] == "blank" and "no caption text" in blank["error"]
    assert hostile_run.digest() == before and sorted(hostile_run.root.rglob("*")) == outside  # nothing else touched


def test_images_are_the_originals_or_their_pixels_as_png(hostile_run, tmp_path):
    dest = tmp_path / "f"
    cli("export", str(hostile_run.out), "--to", "folder", str(dest), "--sidecars")
    fmt = {w: f for _, f, w in ROWS}
    for side in (f for f in dest.glob("*.json") if f.name[0] != "_"):
        row = json.loads(side.read_text(encoding="utf-8"))
        (img,) = [f for f in dest.glob(side.stem + ".*") if f.suffix not in (".json", ".txt")]
        data = img.read_bytes()
        if fmt[row["width"]] in ("JPEG", "PNG", "WEBP"):  # what every trainer reads: the very bytes
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        else:  # GIF, BMP, TIFF: the pixels pixscribe captioned, losslessly as PNG
            assert img.suffix == ".png" and Image.open(img).format == "PNG"
            seen = decode(hostile_run.images[row["width"]], max_pixels=None).image
            assert np.array_equal(np.asarray(Image.open(img).convert("RGB")), np.asarray(seen))


def test_stems_are_safe_unique_and_never_differ_only_by_case(hostile_run, tmp_path):
    dest = tmp_path / "f"
    cli("export", str(hostile_run.out), "--to", "folder", str(dest), "--sidecars")
    stems = sorted(f.stem for f in dest.glob("*.txt"))
    by_id: dict[str, list[str]] = {}
    for s in stems:
        by_id.setdefault(json.loads((dest / f"{s}.json").read_text(encoding="utf-8"))["id"], []).append(s)
    assert sorted(by_id["dup"]) == ["dup", "dup~2"]  # the same id in two shards: two rows, two names
    assert by_id["plain-1"] == ["plain-1"] and by_id["img_0001"] == ["img_0001"]
    assert by_id["IMG_0001"][0].startswith("img_0001~")  # not the case twin's name
    assert by_id["CON"][0].startswith("con~") and by_id["x-masklabel"][0].startswith("x-masklabel~")
    assert by_id["../../etc/passwd"][0].startswith("etc-passwd~")
    assert len({s.casefold() for s in stems}) == len(stems)
    assert all(s == s.lower() and "." not in s and "/" not in s and len(s) < 100 for s in stems)
    assert {f.parent for f in dest.rglob("*")} == {dest}  # nothing below or beside DEST


@pytest.mark.parametrize("id_", ["", "..", ".", "a" * 300, "\x00\n", "Ünïcode", "a b", "-x", "nul", "lpt1",
                                 "x-condlabel", "~", "a~b"])
def test_stem_of_hostile_ids(id_):
    s = stem_of(id_)
    assert s and s == s.lower() and "." not in s and "/" not in s and len(s) <= 70
    assert s[0].isalnum() and s not in ("con", "nul", "lpt1") and not s.endswith("-condlabel")
    assert stem_of(id_) == s and stem_of(id_ + "x") != s


def test_claim_takes_the_next_free_name(tmp_path):
    got = [claim(tmp_path, "dup", "txt")[0] for _ in range(3)]
    assert got == ["dup", "dup~2", "dup~3"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["dup.txt", "dup~2.txt", "dup~3.txt"]


def test_mix_and_lines(hostile_run, tmp_path):
    rows = {r["id"]: r for r in rows_by_width(hostile_run.out).values()}
    dest = tmp_path / "mix"
    p = cli("export", str(hostile_run.out), "--to", "folder", str(dest), "--sidecars", "--seed", "1",
            "--mix", "org_caption=1,caption=1")
    assert "text from caption 9, org_caption 1" in p.stderr, p.stderr  # seed 1: IMG_0001 takes its original
    firsts = {Path(name).stem: text for name, text in kohya(dest).items()}
    for side in (f for f in dest.glob("*.json") if f.name[0] != "_"):
        row = json.loads(side.read_text(encoding="utf-8"))
        if row["org_caption"]:  # two columns with a value: an even coin per id
            source = "org_caption" if uniform(row["id"], 1, "mix") * 2 < 1 else "caption"
        else:
            source = "caption"
        assert row["text_source"] == source and firsts[side.stem] == one_line(row[source])
    dest = tmp_path / "lines"
    cli("export", str(hostile_run.out), "--to", "folder", str(dest), "--mix", "org_caption,caption", "--lines",
        "--prefix", PREFIX)
    tuner = simpletuner(dest)
    both = {k: v for k, v in tuner.items() if len(v) == 2}
    assert len(both) == sum(1 for r in rows.values() if r["org_caption"]) + 1  # "dup" twice
    assert all(v[0] in {PREFIX + o for o in ("alt text one", "alt text of a gif", "alt dup")} for v in both.values())
    assert onetrainer(dest) == tuner and all(kohya(dest)[k] == v[0] for k, v in tuner.items())


def test_folder_refusals(hostile_run, tmp_path):
    def refused(*args: str) -> str:
        p = cli("export", str(hostile_run.out), *args, check=False)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
        return p.stderr

    assert "only with --to folder and --mix" in refused("--to", "hub", str(tmp_path / "a"), "--lines")
    assert "--text-only" in refused("--to", "folder", str(tmp_path / "b"), "--text-only")
    assert "no column 'nope'" in refused("--to", "folder", str(tmp_path / "c"), "--caption-column", "nope")
    assert "no column 'alt'" in refused("--to", "folder", str(tmp_path / "c2"), "--mix", "alt,caption")
    assert "not a number" in refused("--to", "folder", str(tmp_path / "d"), "--mix", "caption=x")
    assert "give one" in refused("--to", "folder", str(tmp_path / "e"), "--mix", "caption", "--mix-original", "0.5")
    assert not [p for p in tmp_path.iterdir()]
