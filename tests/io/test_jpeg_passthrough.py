"""JPEG pass-through: a JPEG that needs no work is sent as its own bytes (no decode ->
re-encode); everything else is re-encoded. Checked on real files through imaging.decode
and over real HTTP (the loopback server records the sha256 of every image it receives)."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.openai_backend import OpenAIBackend, encode_image
from pixscribe.imaging import PASSTHROUGH_ATTR, decode, passthrough_jpeg, strip_jpeg_metadata
from pixscribe.record import DecodeError
from pixscribe.testing import sample_photo
from pixscribe.testing.openai_server import ServerProcess

BUDGET = 1_000_000


def _save(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    ex[0x010F] = "PixCam"  # Make
    ex[0x0110] = "secret-model-name"  # Model: metadata that must not leave with the pixels
    return ex.tobytes()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    photo = sample_photo("chelsea")  # 451x300 RGB
    return {
        "plain": _save(photo, quality=85),
        "exif_upright": _save(photo, quality=85, exif=_exif(1)),
        "rotated": _save(photo, quality=85, exif=_exif(6)),
        "big": _save(photo.resize((1600, 1064)), quality=85),
        "png": _save(photo, "PNG"),
        "cmyk": _save(photo.convert("CMYK"), quality=85),
        "grey": _save(photo.convert("L"), quality=85),
    }


def _sent(img: Image.Image, max_pixels: int = BUDGET) -> bytes:
    return encode_image(img, max_pixels, None)


def test_a_qualifying_jpeg_is_sent_byte_identical(files):
    dec = decode(files["plain"], max_pixels=BUDGET)
    assert dec.passthrough and getattr(dec.image, PASSTHROUGH_ATTR)
    assert _sent(dec.image) == files["plain"]


def test_metadata_segments_are_dropped_but_the_image_data_is_not_touched(files):
    data = files["exif_upright"]
    dec = decode(data, max_pixels=BUDGET)
    assert dec.passthrough
    sent = _sent(dec.image)
    assert b"secret-model-name" in data and b"secret-model-name" not in sent
    assert len(sent) < len(data)
    sos = data.index(b"\xff\xda")
    assert sent.endswith(data[sos:])  # every scan byte as in the file: no re-encode
    assert sent == strip_jpeg_metadata(data)
    assert Image.open(io.BytesIO(sent)).size == (451, 300)


@pytest.mark.parametrize("name", ["rotated", "big", "png", "cmyk", "grey"])
def test_images_that_need_work_are_re_encoded(files, name):
    dec = decode(files[name], max_pixels=BUDGET)
    assert not dec.passthrough and passthrough_jpeg(dec.image, BUDGET) is None
    sent = _sent(dec.image)
    assert sent != files[name] and sent[:2] == b"\xff\xd8"
    back = Image.open(io.BytesIO(sent))
    assert back.mode == "RGB" and back.size == dec.image.size
    if name == "rotated":
        assert back.size == (300, 451)  # EXIF orientation applied
    if name == "big":
        assert back.width * back.height <= BUDGET


def test_derived_images_and_smaller_budgets_are_re_encoded(files):
    dec = decode(files["plain"], max_pixels=BUDGET)
    crop = dec.image.crop((0, 0, 100, 100))
    same_size = dec.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # same size, other pixels
    assert passthrough_jpeg(crop) is None and passthrough_jpeg(same_size) is None
    assert _sent(same_size) != files["plain"]
    small = _sent(dec.image, max_pixels=10_000)  # the backend's budget is smaller than decode's
    assert small != files["plain"]
    w, h = Image.open(io.BytesIO(small)).size
    assert w * h <= 10_000


def test_over_http_the_server_receives_the_files_own_bytes(files):
    imgs = {n: decode(files[n], max_pixels=BUDGET).image for n in ("plain", "rotated", "png")}
    with ServerProcess("--mode", "echo") as srv:
        b = OpenAIBackend("pixscribe-test", [srv.url], concurrency=2, max_pixels=BUDGET)
        res = b.generate(
            [GenerationRequest.simple(n, [im], sampling=Sampling(max_new_tokens=16)) for n, im in imgs.items()]
        )
        assert all(r.ok for r in res)
        got = srv.stats()["image_sha256"]
        b.close()
    assert hashlib.sha256(files["plain"]).hexdigest() in got
    assert hashlib.sha256(files["rotated"]).hexdigest() not in got
    assert hashlib.sha256(files["png"]).hexdigest() not in got
    assert len(got) == 3


def test_decode_errors_never_quote_the_file(tmp_path):
    secret = b"AWS_SECRET_ACCESS_KEY=abcd1234supersecret\n"
    with pytest.raises(DecodeError) as ei:
        decode(secret, source="/etc/credentials")
    msg = str(ei.value)
    assert "/etc/credentials" in msg and "plain text" in msg
    assert "abcd" not in msg and "AWS" not in msg
    with pytest.raises(DecodeError) as ei:
        decode(bytes(range(7, 200)), source="blob.bin")
    assert "unknown format" in str(ei.value) and "07 08" not in str(ei.value)


def test_library_messages_are_scrubbed_of_file_bytes():
    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, "PNG")
    data = good.getvalue()
    i = data.index(b"IDAT")
    for bad in (data[:i] + b"\x01SE\x02" + data[i + 4:], data[:40]):  # PIL quotes the chunk type
        with pytest.raises(DecodeError) as ei:
            decode(bad, source="x.png")
        msg = str(ei.value)
        assert "broken PNG file" in msg and "<bytes>" in msg
        assert "b'" not in msg and "\\x01" not in msg and "IDA" not in msg
