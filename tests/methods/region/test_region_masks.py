"""Every mask format decodes to the same mask; RLE equals pycocotools'; bad masks are clear errors."""

import base64
import gzip
import io

import numpy as np
import pytest
from PIL import Image

from pixscribe.experts import rle
from pixscribe.methods.region.masks import decode_mask, encode_b64gzip
from pixscribe.methods.region.output import region_output
from pixscribe.methods.region.parse import parse_region
from pixscribe.methods.region.types import RegionError, box_pixels

W, H = 8, 6


@pytest.fixture()
def hand_mask() -> np.ndarray:
    """Columns 2..5, rows 1..3: what the polygon with corners (2,1) (6,1) (6,4) (2,4) covers."""
    m = np.zeros((H, W), dtype=bool)
    m[1:4, 2:6] = True
    return m


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    if mode == "L":
        Image.fromarray(arr.astype(np.uint8) * 200).save(buf, "PNG")
    elif mode == "1":
        Image.fromarray(arr).convert("1").save(buf, "PNG")
    elif mode == "P":
        im = Image.fromarray(arr.astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
        im.save(buf, "PNG")
    elif mode == "RGBA":  # only the alpha band marks the region
        rgba = np.zeros((*arr.shape, 4), np.uint8)
        rgba[..., 3] = arr * 255
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    elif mode == "RGB":  # any band non-zero is in: a pure-blue pixel counts
        rgb = np.zeros((*arr.shape, 3), np.uint8)
        rgb[..., 2] = arr * 7
        Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def test_every_format_decodes_to_the_same_mask(hand_mask, tmp_path):
    m = hand_mask
    enc = rle.encode(m)
    png = _png(m, "L")
    (tmp_path / "m.png").write_bytes(png)
    specs = {
        "rle string": enc,
        "rle uncompressed counts": {"size": [H, W], "counts": rle.string_to_counts(enc["counts"])},
        "rle bytes counts": {"size": [H, W], "counts": enc["counts"].encode()},
        "polygon, list of rings": [[2, 1, 6, 1, 6, 4, 2, 4]],
        "polygon, one flat ring": [2, 1, 6, 1, 6, 4, 2, 4],
        "png path": str(tmp_path / "m.png"),
        "png relative path": "m.png",
        "png bytes": png,
        "png 1-bit": _png(m, "1"),
        "png palette": _png(m, "P"),
        "png alpha only": _png(m, "RGBA"),
        "png rgb, one band": _png(m, "RGB"),
        "png data url": "data:image/png;base64," + base64.b64encode(png).decode(),
        "png plain base64": base64.b64encode(png).decode(),
        "pixscribe bytes column": "base64:" + base64.b64encode(png).decode(),
        "b64gzip string": encode_b64gzip(m),
        "b64gzip dict": {"b64gzip": encode_b64gzip(m)},
        "gzip bytes": gzip.compress(m.astype(np.uint8).tobytes()),
        "array": m.astype(np.uint8),
        "nested list": m.astype(int).tolist(),
    }
    for name, spec in specs.items():
        got = decode_mask(spec, W, H, base_dir=str(tmp_path))
        assert got.dtype == bool and (got == m).all(), name
    # a box covers the same pixels (centre-inside rule, exclusive right/bottom edges)
    assert (box_pixels((2, 1, 6, 4), (W, H)) == m).all()


def test_rle_written_equals_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        m = rng.random((h, w)) < 0.4
        r = parse_region({"mask": encode_b64gzip(m)}, w, h)
        if not m.any():
            assert r.error
            continue
        out = region_output(r, region_id="x")
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        assert out["mask"] == {"size": [h, w], "counts": ref["counts"].decode("ascii")}
        assert out["area"] == int(mask_api.area(ref))
        x, y, bw, bh = mask_api.toBbox(ref)
        assert out["box"] == [x, y, x + bw, y + bh]


def test_polygons_are_rasterised_as_pycocotools_does():
    mask_api = pytest.importorskip("pycocotools.mask")
    rings = [[10.5, 3.2, 30.1, 8.9, 22.0, 27.7], [2, 2, 6, 2, 4, 9.5]]  # a triangle and another, unioned
    got = decode_mask(rings, 40, 30)
    ref = mask_api.decode(mask_api.merge(mask_api.frPyObjects(rings, 30, 40))).astype(bool)
    assert (got == ref).all() and got.sum() > 100
    assert rle.encode(got)["counts"] == mask_api.merge(mask_api.frPyObjects(rings, 30, 40))["counts"].decode()


@pytest.mark.parametrize(
    "spec, reason",
    [
        ({"size": [H, W + 1], "counts": rle.encode(np.ones((H, W + 1)))["counts"]}, r"mask is 9x6 .* image is 8x6"),
        ({"size": [H, W], "counts": [3, 4]}, "counts sum to 7"),
        (rle.encode(np.zeros((H, W))), "empty mask"),
        (encode_b64gzip(np.ones((H, W - 1))), r"has 42 bytes but the image is 8x6 \(48 pixels\)"),
        (encode_b64gzip(np.ones((H, W + 1))), "has more than 48 bytes"),
        ("H4sI" + "!!!notbase64", "bad base64"),
        ("data:image/png;base64,%%%", "bad base64"),
        (base64.b64encode(gzip.compress(b"\x01" * 48)[:-12]).decode(), "truncated gzip|bad gzip"),
        (b"\x89PNG\r\n\x1a\nnot really a png", "not a readable mask image"),
        ("no/such/mask.png", "mask file not found"),
        (np.zeros((H, W)), "empty mask"),
        ([[1, 2, 3]], "mask is 3x1 but the image is 8x6"),
        (3.5, "not a mask"),
    ],
)
def test_bad_masks_are_clear_errors(spec, reason):
    with pytest.raises(RegionError, match=reason):
        decode_mask(spec, W, H)


def test_png_of_the_wrong_size_names_both_sizes():
    with pytest.raises(RegionError, match=r"mask is 8x7 but the image is 8x6"):
        decode_mask(_png(np.ones((7, 8), bool), "L"), W, H)


def test_gzip_bomb_is_not_inflated():
    bomb = base64.b64encode(gzip.compress(b"\x01" * 50_000_000)).decode()  # 50 MB of ones, 49 KB of text
    with pytest.raises(RegionError, match="more than 48 bytes"):
        decode_mask(bomb, W, H)


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header (IHDR, CRC fixed) claims ``width`` x ``height``: its data is 8x6."""
    import struct
    import zlib

    png = bytearray(_png(np.ones((H, W), bool), "L"))
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    png[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    png[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(png[ihdr - 4:ihdr + 13])))
    return bytes(png)


def test_a_mask_image_of_another_size_is_refused_from_its_header():
    """Its pixels are never decoded: a 12000x12000 header on a 8x6 image is named, not inflated;
    one past PIL's own bomb limit is a region error too (it escaped as DecompressionBombError)."""
    with pytest.raises(RegionError, match=r"^mask is 12000x12000 but the image is 8x6$"):
        decode_mask(_png_claiming(12000, 12000), W, H)
    with pytest.raises(RegionError, match=r"not a readable mask image \(DecompressionBombError"):
        decode_mask(_png_claiming(15000, 13000), W, H)


def test_a_mask_file_over_the_bound_is_not_read(tmp_path, monkeypatch):
    import pixscribe.methods.region.masks as M

    monkeypatch.setattr(M, "_MAX_MASK_FILE_BYTES", 100)
    (tmp_path / "m.png").write_bytes(_png(np.ones((H, W), bool), "L") + b"\0" * 200)
    with pytest.raises(RegionError, match=r"m.png' is over 0 MiB: not read"):
        decode_mask("m.png", W, H, base_dir=str(tmp_path))


def test_an_rle_string_longer_than_its_size_allows_stops_early():
    with pytest.raises(RegionError, match="holds more than 49 counts, more than its size allows"):
        decode_mask({"size": [H, W], "counts": "1" * 1_000_000}, W, H)
    with pytest.raises(RegionError, match="has 50 counts, more than its size allows"):
        decode_mask({"size": [H, W], "counts": [1] * 50}, W, H)
