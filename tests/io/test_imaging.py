"""pixscribe.imaging: every case is made from real bytes produced here (PIL, numpy,
scikit-image / matplotlib photos) and decoded through the real code path."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, features

from pixscribe.imaging import Decoded, decode, encode_jpeg, from_pil, resize_to_budget, target_size, to_rgb
from pixscribe.record import DecodeError, format_error
from pixscribe.testing import sample_photo


# ---------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------
def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def arr(d: Decoded) -> np.ndarray:
    assert d.image.mode == "RGB"
    assert d.image.size == (d.width, d.height)
    return np.asarray(d.image).astype(np.int32)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(w: int, h: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A tiny, valid-looking PNG whose IHDR declares w x h (its IDAT holds one row)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(w, 16))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return sample_photo("astronaut")  # 512x512 RGB


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return sample_photo("chelsea")  # 451x300 RGB


# ---------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------
def test_zero_byte_file():
    with pytest.raises(DecodeError) as ei:
        decode(b"", source="shard0/empty.jpg")
    msg = str(ei.value)
    assert "shard0/empty.jpg" in msg and "empty file" in msg
    assert ei.value.kind == "decode"
    assert format_error(ei.value).startswith("decode: shard0/empty.jpg: empty file")


def test_text_named_jpg():
    with pytest.raises(DecodeError) as ei:
        decode("a caption, not a picture\n".encode(), source="img/cat.jpg")
    msg = str(ei.value)
    assert "img/cat.jpg" in msg and "not an image (" in msg and "text" in msg


def test_html_page_is_not_an_image():
    with pytest.raises(DecodeError, match=r"not an image \(an HTML page"):
        decode(b"<!DOCTYPE html><html><body>404</body></html>", source="https://example.org/a.jpg")


def test_truncated_jpeg(astronaut):
    data = save(astronaut, "JPEG", quality=90)
    with pytest.raises(DecodeError) as ei:
        decode(data[: len(data) // 2], source="broken.jpg")
    msg = str(ei.value)
    assert "broken.jpg" in msg and "truncated image" in msg and "JPEG" in msg
    # the intact file decodes
    assert decode(data, source="ok.jpg").width == 512


def test_truncated_headers():
    png = save(Image.new("RGB", (40, 30), "red"), "PNG")
    for data, fmt in ((png[:30], "PNG"), (b"\xff\xd8\xff\xe0\x00\x10JF", "JPEG"), (b"GIF89a", "GIF")):
        with pytest.raises(DecodeError, match=rf"truncated image \({fmt} header"):
            decode(data, source="x")


def test_truncated_png_pixels(chelsea):
    data = save(chelsea, "PNG")
    with pytest.raises(DecodeError, match=r"cut\.png: truncated image \(PNG"):
        decode(data[: int(len(data) * 0.6)], source="cut.png")


def test_pixel_bomb_png_header_is_refused_before_decoding():
    data = png_declaring(100_000, 100_000)
    assert len(data) < 200  # a tiny file claiming 10^10 pixels (30 GB as RGB)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's own DecompressionBombWarning must not fire
        with pytest.raises(DecodeError) as ei:
            decode(data, source="bomb.png")
    msg = str(ei.value)
    assert "bomb.png" in msg
    assert "decompression bomb guard: 100000×100000 = 10000000000 pixels exceeds --max-image-pixels 89478485" in msg


def test_pixel_bomb_jpeg_header(astronaut):
    # rewrite the SOF0 frame size of a real JPEG to 60000 x 50000
    data = bytearray(save(astronaut, "JPEG", quality=80))
    i = data.index(b"\xff\xc0")
    assert struct.unpack(">HH", data[i + 5 : i + 9]) == (512, 512)
    data[i + 5 : i + 9] = struct.pack(">HH", 50_000, 60_000)  # height, width
    with pytest.raises(DecodeError, match=r"60000×50000 = 3000000000 pixels exceeds --max-image-pixels 1000000"):
        decode(bytes(data), source="b.jpg", max_image_pixels=1_000_000)


def test_max_image_pixels_is_per_call_and_ignores_pil_global(monkeypatch, chelsea):
    data = save(chelsea, "PNG")  # 451 x 300 = 135300 px
    with pytest.raises(DecodeError, match=r"451×300 = 135300 pixels exceeds --max-image-pixels 100000"):
        decode(data, max_image_pixels=100_000)
    assert decode(data, max_image_pixels=135_300).orig_width == 451
    # PIL's process-global limit neither refuses nor warns: our per-call limit rules
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = decode(data, max_image_pixels=1_000_000)
    assert (d.width, d.height) == (451, 300)
    assert Image.MAX_IMAGE_PIXELS == 1000  # and decode did not change it


# ---------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------
def test_cmyk_jpeg():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :32] = (220, 30, 30)
    rgb[:, 32:64] = (30, 200, 40)
    rgb[:, 64:] = (40, 60, 210)
    data = save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    d = decode(data)
    assert d.format == "JPEG" and (d.width, d.height) == (96, 64)
    a = arr(d)
    for x, colour in ((16, (220, 30, 30)), (48, (30, 200, 40)), (80, (40, 60, 210))):
        assert np.abs(a[32, x] - np.array(colour)).max() <= 12, (x, a[32, x])


def test_16bit_png_is_scaled_not_clipped():
    g = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (8, 1))
    data = save(Image.fromarray(g), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    a = arr(decode(data))
    row = a[0, :, 0]
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()  # monotonic gradient, not all 255
    expected = np.round(g[0] / 257.0)
    assert np.abs(row - expected).max() <= 1
    assert 125 <= row[128] <= 130


def test_32bit_and_float_tiffs():
    i32 = np.tile(np.linspace(0, 65535, 64).astype(np.int32), (4, 1))
    a = arr(decode(save(Image.fromarray(i32, "I"), "TIFF")))
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and 120 <= a[0, 32, 0] <= 136
    f = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (4, 1))
    b = arr(decode(save(Image.fromarray(f, "F"), "TIFF")))
    assert b[0, 0, 0] == 0 and b[0, -1, 0] == 255 and 120 <= b[0, 32, 0] <= 136


def test_palette_png_with_alpha_over_white():
    p = Image.new("P", (40, 20))
    p.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 9))
    px = np.zeros((20, 40), np.uint8)
    px[:, 10:20] = 1  # blue but fully transparent
    px[:, 20:30] = 2  # green, half transparent
    p.putdata(px.flatten().tolist())
    data = save(p, "PNG", transparency=bytes([255, 0, 128]))
    im = Image.open(io.BytesIO(data))
    assert im.mode == "P" and "transparency" in im.info
    a = arr(decode(data))
    assert tuple(a[5, 5]) == (255, 0, 0)
    assert tuple(a[5, 15]) == (255, 255, 255)
    r, g, b = a[5, 25]
    assert abs(r - 127) <= 2 and g == 255 and abs(b - 127) <= 2


def test_rgba_and_la_alpha_over_white():
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :, :3] = (0, 0, 0)
    rgba[:, 10:, 3] = 255
    a = arr(decode(save(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (a[:, :10] == 255).all() and (a[:, 10:] == 0).all()

    la = Image.merge("LA", (Image.new("L", (30, 10), 0), Image.fromarray(np.repeat([[0] * 10 + [255] * 10 + [128] * 10], 10, 0).astype(np.uint8))))
    data = save(la, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "LA"
    b = arr(decode(data))
    assert (b[:, :10] == 255).all()  # transparent black -> white
    assert (b[:, 10:20] == 0).all()  # opaque black stays black
    assert np.abs(b[:, 20:] - 127).max() <= 1  # half transparent -> grey


def test_grey_png_with_colour_key():
    g = np.full((10, 10), 200, np.uint8)
    g[:, :5] = 7
    data = save(Image.fromarray(g, "L"), "PNG", transparency=7)
    a = arr(decode(data))
    assert (a[:, :5] == 255).all() and (a[:, 5:] == 200).all()


def test_1bit_and_l():
    checker = (np.indices((16, 24)).sum(0) % 2).astype(bool)
    data = save(Image.fromarray(checker), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "1"
    a = arr(decode(data))
    assert set(np.unique(a).tolist()) == {0, 255}
    assert ((a[..., 0] == 255) == checker).all()

    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (4, 1))
    b = arr(decode(save(Image.fromarray(grey, "L"), "PNG")))
    assert (b[..., 0] == grey).all() and (b[..., 2] == grey).all()


# ---------------------------------------------------------------------------------
# frames and orientation
# ---------------------------------------------------------------------------------
COLOURS = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (32, 24), c) for c in COLOURS]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    d = decode(data)
    assert d.format == "GIF" and d.frames == 3 and (d.width, d.height) == (32, 24)
    assert np.abs(arr(d)[12, 16] - np.array(COLOURS[0])).max() <= 8


def test_animated_png_and_webp_first_frame():
    frames = [Image.new("RGB", (30, 20), c) for c in COLOURS]
    apng = save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)
    d = decode(apng)
    assert d.frames == 3 and tuple(arr(d)[10, 15]) == COLOURS[0]
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    webp = save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    w = decode(webp)
    assert w.format == "WEBP" and w.frames == 3 and np.abs(arr(w)[10, 15] - np.array(COLOURS[0])).max() <= 3


def marked(w: int = 120, h: int = 80) -> np.ndarray:
    """Grey with a red block at the top-left and a blue block at the top-right."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[:20, :20] = (230, 20, 20)
    a[:20, -20:] = (20, 20, 230)
    return a


@pytest.mark.parametrize("orientation,k", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation(orientation, k):
    stored = marked()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    d = decode(data, source="rot.jpg")
    expected = np.rot90(stored, k=k)  # k=-1: clockwise (tag 6), k=1: counter-clockwise (tag 8)
    assert (d.height, d.width) == expected.shape[:2]
    assert (d.orig_width, d.orig_height) == (d.width, d.height)
    assert np.abs(arr(d) - expected.astype(np.int32)).mean() < 3
    if orientation == 6:  # displayed image is 80 wide, 120 tall; red block now top-right
        assert (d.width, d.height) == (80, 120)
        assert np.abs(arr(d)[10, 70] - np.array((230, 20, 20))).max() < 25


def test_exif_orientation_with_draft_resize(astronaut):
    big = astronaut.resize((2400, 1600))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(big, "JPEG", quality=90, exif=exif.tobytes())
    d = decode(data, max_pixels=100_000)
    assert (d.orig_width, d.orig_height) == (1600, 2400)
    assert (d.width, d.height) == target_size(1600, 2400, 100_000)
    ref = np.asarray(big.transpose(Image.Transpose.ROTATE_270).resize((d.width, d.height), Image.Resampling.BICUBIC), np.int32)
    assert np.abs(arr(d) - ref).mean() < 4


# ---------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------
def test_target_size_rules():
    assert target_size(4000, 3000, 1_000_000) == (1154, 866)
    assert target_size(640, 480, 1_000_000) == (640, 480)  # never upscales
    assert target_size(640, 480, None, 320) == (320, 240)
    assert target_size(640, 480, 1_000_000, 100) == (100, 75)
    assert target_size(1, 4000, 1000) == (1, 1000)
    assert target_size(1, 4000, 1_000_000, 100) == (1, 100)
    assert target_size(10_000_000, 1, 1000) == (1000, 1)
    rng = random.Random(0)
    for _ in range(2000):
        w, h = rng.randint(1, 20_000), rng.randint(1, 20_000)
        mp, ms = rng.choice([None, 64, 5000, 1_000_000]), rng.choice([None, 8, 333, 2048])
        tw, th = target_size(w, h, mp, ms)
        assert 1 <= tw <= w and 1 <= th <= h
        assert target_size(h, w, mp, ms) == (th, tw)  # symmetric
        if mp:
            assert tw * th <= max(mp, tw * th if min(tw, th) == 1 else mp)
        if ms:
            assert max(tw, th) <= ms
        if (tw, th) != (w, h) and min(tw, th) > 2:
            assert abs(tw / th - w / h) / (w / h) < 0.5  # aspect kept up to rounding
    with pytest.raises(ValueError):
        target_size(0, 10)


def test_one_by_4000_stays_valid():
    line = np.linspace(0, 255, 4000).astype(np.uint8).reshape(4000, 1)
    data = save(Image.fromarray(line, "L"), "PNG")
    d = decode(data)
    assert (d.width, d.height) == (1, 4000)
    s = decode(data, max_side=100)
    assert (s.width, s.height) == (1, 100) and s.image.size == (1, 100)
    p = decode(data, max_pixels=64)
    assert (p.width, p.height) == (1, 64)
    col = arr(s)[:, 0, 0]
    assert col[0] < 10 and col[-1] > 245 and (np.diff(col) >= -1).all()


def test_resize_to_budget_and_max_side(astronaut, chelsea):
    data = save(astronaut, "PNG")
    d = decode(data, max_pixels=10_000)
    assert (d.width, d.height) == (100, 100) and (d.orig_width, d.orig_height) == (512, 512)
    d = decode(data, max_side=64)
    assert (d.width, d.height) == (64, 64)
    c = decode(save(chelsea, "PNG"), max_side=100)
    assert (c.width, c.height) == (100, 66)
    ref = np.asarray(chelsea.resize((100, 66), Image.Resampling.BICUBIC), np.int32)
    assert np.abs(arr(c) - ref).mean() < 1.5
    small = resize_to_budget(chelsea, 1_000_000)
    assert small is chelsea  # already within budget: untouched
    r = resize_to_budget(chelsea, 4096)
    assert r.size == target_size(451, 300, 4096) and r.width * r.height <= 4096
    pal = chelsea.convert("P")
    assert resize_to_budget(pal, 4096).mode == "RGB"  # palette indices are not interpolated


@pytest.mark.parametrize("w,h,drafted", [(3000, 2000, (750, 500)), (3001, 2003, (751, 501))])
def test_draft_mode_on_large_jpeg(monkeypatch, astronaut, w, h, drafted):
    big = Image.fromarray(
        np.clip(np.asarray(astronaut.resize((w, h), Image.Resampling.BICUBIC), np.int16)
                + np.random.default_rng(0).normal(0, 4, (h, w, 3)).astype(np.int16), 0, 255).astype(np.uint8)
    )
    data = save(big, "JPEG", quality=90)
    calls = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = real_draft(self, mode, size)
        calls.append((size, self.size))
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    d = decode(data, max_pixels=250_000)
    tw, th = target_size(w, h, 250_000)
    assert (d.width, d.height) == (tw, th) and (d.orig_width, d.orig_height) == (w, h)
    assert calls and calls[0][1] == drafted  # libjpeg decoded at 1/4 scale, not full size
    naive = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((tw, th)), np.int32)
    diff = np.abs(arr(d) - naive)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 20
    # a small JPEG is not drafted
    calls.clear()
    decode(save(astronaut, "JPEG"), max_pixels=1_000_000)
    assert calls == []


def test_real_photo_file_grace_hopper():
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        data = f.read()
    d = decode(data, max_side=256, source="grace_hopper.jpg")
    assert d.format == "JPEG" and (d.orig_width, d.orig_height) == (512, 600)
    assert (d.width, d.height) == target_size(512, 600, None, 256)
    assert 30 < arr(d).mean() < 220


# ---------------------------------------------------------------------------------
# helpers, detachment and threads
# ---------------------------------------------------------------------------------
def test_result_is_detached_rgb(chelsea):
    d = decode(save(chelsea, "JPEG", quality=92))
    assert d.image.mode == "RGB" and d.image.info == {}
    assert getattr(d.image, "fp", None) is None
    d.image.load()
    assert d.image.getpixel((10, 10)) is not None


def test_encode_jpeg_roundtrip(chelsea):
    rgba = chelsea.convert("RGBA")
    data = encode_jpeg(rgba, quality=85)
    assert data[:3] == b"\xff\xd8\xff"
    d = decode(data)
    assert (d.width, d.height) == (451, 300)
    assert np.abs(arr(d) - np.asarray(chelsea, np.int32)).mean() < 4
    assert len(encode_jpeg(chelsea, quality=30)) < len(encode_jpeg(chelsea, quality=95))


def test_from_pil_and_to_rgb(chelsea):
    rgba = chelsea.convert("RGBA")
    d = from_pil(rgba, max_side=150)
    assert (d.width, d.height) == (150, 99) and d.image.mode == "RGB"
    with pytest.raises(DecodeError, match=r"ds\[3\]: decompression bomb guard: 451×300 = 135300 pixels"):
        from_pil(chelsea, max_image_pixels=1000, source="ds[3]")
    assert to_rgb(chelsea) is chelsea
    assert to_rgb(chelsea.convert("YCbCr")).mode == "RGB"


def test_thread_pool_gives_identical_results(astronaut, chelsea):
    blobs = [
        save(astronaut.resize((1600, 1600)), "JPEG", quality=90),
        save(chelsea, "PNG"),
        save(chelsea.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        b"not an image",
        b"",
    ] * 4

    def run(b):
        try:
            d = decode(b, max_pixels=200_000)
            return d.image.tobytes()
        except DecodeError as e:
            return str(e)

    sequential = [run(b) for b in blobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, blobs))
    assert threaded == sequential
    assert sum(isinstance(r, str) for r in threaded) == 8
