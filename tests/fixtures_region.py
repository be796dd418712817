"""Region fixtures: a picture with a red and a blue square, and a backend that *looks*.

``ColourBackend`` is a real :class:`Backend` subclass that answers with the colour name of the
region it was shown, read from the pixels (and, for ``box`` prompts, from the coordinates in
the text) the way each visual prompt presents a region:

- set-of-mark (a JSON schema is asked): finds the white number labels, reads each number by
  matching rendered glyphs, and names the colour of the pixels around the label;
- box coordinates in the text: parses them in the stated convention and names the box's colour
  in the image the model would see (Qwen2.5-VL's resized input for pixel coordinates);
- two images (focal): looks at the close-up; one image: at that image. Inside a magenta
  outline if there is one; otherwise the bright (undimmed) pixels, or the centre of a close-up.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.experts import rle
from pixscribe.experts.stats import color_name

RED_BOX = (40, 40, 100, 100)
BLUE_BOX = (200, 120, 270, 190)
SCENE_SIZE = (320, 240)


def scene() -> tuple[Image.Image, dict[str, np.ndarray]]:
    """Grey 320x240 picture; a red and a blue square; their masks."""
    w, h = SCENE_SIZE
    arr = np.full((h, w, 3), 128, dtype=np.uint8)
    masks = {}
    for name, (x0, y0, x1, y1), rgb in (("red", RED_BOX, (255, 0, 0)), ("blue", BLUE_BOX, (0, 0, 255))):
        arr[y0:y1, x0:x1] = rgb
        m = np.zeros((h, w), dtype=bool)
        m[y0:y1, x0:x1] = True
        masks[name] = m
    return Image.fromarray(arr), masks


def _magenta(a: np.ndarray) -> np.ndarray:
    a = a.astype(int)
    return (a[..., 0] > 150) & (a[..., 2] > 150) & (a[..., 1] < 110) & (np.abs(a[..., 0] - a[..., 2]) < 60)


def _name(pixels: np.ndarray) -> str:
    return color_name(pixels.reshape(-1, 3).mean(0))


def _inside_outline(a: np.ndarray) -> np.ndarray | None:
    ring = _magenta(a)
    if ring.sum() < 8:
        return None
    ys, xs = np.nonzero(ring)
    inner = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    keep = ~_magenta(inner)
    return inner[keep]


def _look(img: Image.Image, closeup: bool) -> str:
    a = np.asarray(img.convert("RGB"))
    inside = _inside_outline(a)
    if inside is not None:
        return _name(inside)
    if closeup:
        h, w = a.shape[:2]
        return _name(a[int(h * 0.45) : int(h * 0.55) + 1, int(w * 0.45) : int(w * 0.55) + 1])
    bright = a.max(axis=2) >= 200
    return _name(a[bright]) if bright.any() else _name(a)


def _read_box_text(text: str, img: Image.Image) -> str:
    from pixscribe.methods.region.boxtext import smart_resize

    nums = [float(v) for v in re.search(r"bounding box \[([^\]]+)\]", text).group(1).split(",")]
    w, h = img.size
    if "in pixels of the" in text:  # what Qwen2.5-VL sees: its own resized input
        ih, iw = smart_resize(h, w)
        img, (x0, y0, x1, y1) = img.resize((iw, ih)), nums
    elif "padded to a square" in text:
        side = max(w, h)
        sq = Image.new("RGB", (side, side), (0, 0, 0))
        sq.paste(img, ((side - w) // 2, (side - h) // 2))
        img, (x0, y0, x1, y1) = sq, [v * side for v in nums]
    elif "[ymin, xmin" in text:
        y0, x0, y1, x1 = (nums[0] * h / 1000, nums[1] * w / 1000, nums[2] * h / 1000, nums[3] * w / 1000)
    else:
        x0, y0, x1, y1 = (nums[0] * w / 1000, nums[1] * h / 1000, nums[2] * w / 1000, nums[3] * h / 1000)
    return _name(np.asarray(img.crop((round(x0), round(y0), round(x1), round(y1)))))


def _read_number(badge: np.ndarray, n_max: int) -> int | None:
    from pixscribe.methods.region.draw import render_badge

    best, best_d = None, None
    for n in range(1, n_max + 1):
        for fs in range(8, 64):
            t = render_badge(n, fs)
            if t.shape != badge.shape:
                continue
            d = np.abs(t.astype(int) - badge.astype(int)).mean()
            if best_d is None or d < best_d:
                best, best_d = n, d
    return best if best_d is not None and best_d < 8 else None


def _read_marks(img: Image.Image, n_max: int) -> dict[str, str]:
    from skimage.measure import label, regionprops

    a = np.asarray(img.convert("RGB"))
    white = (a >= 250).all(axis=2)
    out = {}
    for p in regionprops(label(white, connectivity=1)):
        y0, x0, y1, x1 = p.bbox
        n = _read_number(a[y0:y1, x0:x1], n_max)
        if n is None:
            continue
        ya, xa = max(0, y0 - 8), max(0, x0 - 8)
        around = a[ya : y1 + 8, xa : x1 + 8]
        keep = ~_magenta(around)
        keep[max(0, y0 - ya - 2) : y1 - ya + 2, max(0, x0 - xa - 2) : x1 - xa + 2] = False  # not the label itself
        out[str(n)] = _name(around[keep])
    return out


class ColourBackend(Backend):
    """Answers with the colour of the region it was shown (see the module doc)."""

    name = "colour"

    def __init__(self) -> None:
        super().__init__()
        self.model = "colour-reader"
        self.seen: list[GenerationRequest] = []

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            self.seen.append(r)
            text = next(p["text"] for m in r.messages for p in m["content"] if p.get("type") == "text")
            if r.json_schema is not None:
                marks = _read_marks(r.images[0], len(r.json_schema["properties"]))
                out.append(GenerationResult(text=json.dumps(marks)))
            elif "bounding box [" in text:
                out.append(GenerationResult(text=_read_box_text(text, r.images[0])))
            else:
                out.append(GenerationResult(text=_look(r.images[-1], closeup=len(r.images) == 2)))
        return out


@pytest.fixture()
def colour_backend() -> ColourBackend:
    return ColourBackend()


@pytest.fixture()
def red_blue():
    """(image, {"red": COCO RLE, "blue": COCO RLE})."""
    img, masks = scene()
    return img, {k: rle.encode(m) for k, m in masks.items()}
