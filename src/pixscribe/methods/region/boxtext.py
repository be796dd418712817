"""Box coordinates in the text, in the convention each model family was trained on.

==================  ==========================================================  =================
convention          meaning                                                     families
==================  ==========================================================  =================
``pixels``          absolute pixels of the model's resized input (Qwen's        Qwen2.5-VL
                    ``smart_resize``: sides rounded to multiples of 28)
``norm1000``        ``[x1, y1, x2, y2]`` relative to the image, scaled to       Qwen2-VL, Qwen3-VL,
                    0-1000                                                      InternVL, CogVLM,
                                                                                GLM-V
``norm1000_yx``     ``[ymin, xmin, ymax, xmax]`` scaled to 0-1000               Gemini
``norm1_square``    ``[x1, y1, x2, y2]`` in [0, 1] with 2 decimals, relative   LLaVA-1.5, ViP-LLaVA
                    to the image padded to a centred square
==================  ==========================================================  =================

There is no default: which one a model gets is decided from what the model is
(:mod:`.frame`), or given with ``box_convention``.

Sources are in docs/region.md. The issue asked for "absolute pixels for Qwen2.5-VL and
later"; Qwen3-VL went back to 0-1000 (its 2d_grounding cookbook: "changed from the absolute
coordinates used in Qwen2.5-VL to relative coordinates ranging from 0 to 1000"), so only
Qwen2.5-VL uses ``pixels``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .types import Box

CONVENTIONS = ("pixels", "norm1000", "norm1000_yx", "norm1_square")

# (pattern on the lower-cased model id or config model_type, convention); first match wins
_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"qwen2[._]5[-_]?vl|qwen2_5_vl", "pixels"),
    (r"qwen3[._]?\d*[-_]?vl|qwen3_vl", "norm1000"),
    (r"qwen2[-_]?vl|qwen2_vl", "norm1000"),
    (r"internvl", "norm1000"),
    (r"cogvlm", "norm1000"),
    (r"glm-?4(\.\d+)?v|glm4v", "norm1000"),
    (r"gemini", "norm1000_yx"),
    (r"vip-?llava|llava-?(v)?1\.5|llava-1\.5|llava_1_5", "norm1_square"),
)


def convention_for(model: str | None, model_type: str | None = None) -> str | None:
    """The box convention of a model id (or its config ``model_type`` or an architecture
    name), the first that names a known family; None when none does (there is no default)."""
    for text in (model_type, model):
        if not text:
            continue
        t = text.lower()
        for pattern, conv in _FAMILIES:
            if re.search(pattern, t):
                return conv
    return None


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 16384) -> tuple[int, int]:  # fmt: skip
    """Qwen2.5-VL's input size for an image: sides rounded to multiples of ``factor``, the area
    kept within [min_pixels, max_pixels] (its processor's defaults). Returns (height, width)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class BoxText:
    """A box written for a model: ``text`` (``"[x1, y1, x2, y2]"``) and how to read it."""

    text: str
    values: tuple[float, ...]
    convention: str
    frame: tuple[int, int]  # (width, height) the numbers refer to (pixels) or the scale

    @property
    def explain(self) -> str:
        """The sentence that tells the model what the numbers mean."""
        if self.convention == "pixels":
            return f"[x1, y1, x2, y2] in pixels of the {self.frame[0]}x{self.frame[1]} image"
        if self.convention == "norm1000":
            return "[x1, y1, x2, y2] with coordinates relative to the image, scaled from 0 to 1000"
        if self.convention == "norm1000_yx":
            return "[ymin, xmin, ymax, xmax] with coordinates relative to the image, scaled from 0 to 1000"
        return "[x1, y1, x2, y2] with coordinates relative to the image padded to a square, from 0 to 1"


def format_box(box: Box, width: int, height: int, convention: str,
               input_size: tuple[int, int] | None = None) -> BoxText:  # fmt: skip
    """Write ``box`` (pixel xyxy of the ``width`` x ``height`` image sent) in ``convention``.

    ``input_size`` = (width, height) of the model's own resized input for ``pixels``; by
    default Qwen2.5-VL's :func:`smart_resize` of the image."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown box convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    x0, y0, x1, y1 = box
    if convention == "pixels":
        iw, ih = input_size or smart_resize(height, width)[::-1]
        vals: tuple[float, ...] = tuple(round(v) for v in (x0 * iw / width, y0 * ih / height,
                                                                 x1 * iw / width, y1 * ih / height))  # fmt: skip
        return BoxText(_fmt(vals), vals, convention, (iw, ih))
    if convention == "norm1_square":
        side = max(width, height)
        ox, oy = (side - width) / 2, (side - height) / 2
        vals = tuple(round(v, 2) for v in ((x0 + ox) / side, (y0 + oy) / side, (x1 + ox) / side, (y1 + oy) / side))
        return BoxText("[" + ", ".join(f"{v:.2f}" for v in vals) + "]", vals, convention, (1, 1))
    n = (x0 * 1000 / width, y0 * 1000 / height, x1 * 1000 / width, y1 * 1000 / height)
    order = (1, 0, 3, 2) if convention == "norm1000_yx" else (0, 1, 2, 3)
    vals = tuple(round(n[i]) for i in order)
    return BoxText(_fmt(vals), vals, convention, (1000, 1000))


def _fmt(vals: tuple[float, ...]) -> str:
    return "[" + ", ".join(str(int(v)) for v in vals) + "]"


def read_box(values: tuple[float, ...], convention: str, width: int, height: int,
             input_size: tuple[int, int] | None = None) -> Box:  # fmt: skip
    """The inverse of :func:`format_box`: numbers in ``convention`` -> pixel xyxy of the image."""
    a, b, c, d = (float(v) for v in values)
    if convention == "pixels":
        iw, ih = input_size or smart_resize(height, width)[::-1]
        return (a * width / iw, b * height / ih, c * width / iw, d * height / ih)
    if convention == "norm1_square":
        side = max(width, height)
        ox, oy = (side - width) / 2, (side - height) / 2
        return (a * side - ox, b * side - oy, c * side - ox, d * side - oy)
    if convention == "norm1000_yx":
        a, b, c, d = b, a, d, c
    return (a * width / 1000, b * height / 1000, c * width / 1000, d * height / 1000)


__all__ = ["CONVENTIONS", "BoxText", "convention_for", "format_box", "read_box", "smart_resize"]
