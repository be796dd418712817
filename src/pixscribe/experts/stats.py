"""Image statistics: colour words (see colours.py), brightness, contrast, sharpness and blur,
colourfulness, aspect, and EXIF camera/time when the file had them. Pure numpy + PIL, no weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..imaging import resize_to_budget
from .base import Expert
from .colours import COLOUR_NAMES, PALETTE, color_name, colour_words, named_colours

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

__all__ = ["COLOUR_NAMES", "PALETTE", "color_name", "image_stats", "ImageStatsExpert"]

BLUR_RATIO = 0.45  # edges at full scale / edges at 1/4 scale: ~0.5-1.7 on sharp photos, <= 0.4 blurred
MIN_EDGES = 8.0  # below this the picture has no edges to judge (flat, or a smooth gradient)
SPARSE_Q = 100 - 0.5 / 4  # a line covers a quarter of the share at full scale it covers at quarter scale
DRAWN_SHARE = 0.2  # this share of pure colours makes a drawing: 0-0.8 % on photos, 100 % on an HSV wheel


def _edge_p(a: np.ndarray, q: float = 99.5) -> float:
    """A high percentile of the largest neighbour difference over the colour channels."""
    if a.shape[0] < 2 or a.shape[1] < 2:
        return 0.0
    a = a.astype(np.int16)
    gx = np.abs(np.diff(a, axis=1))[:-1]
    gy = np.abs(np.diff(a, axis=0))[:, :-1]
    return float(np.percentile(np.maximum(gx, gy).max(-1), q, method="nearest"))


def pure_colour_share(rgb: np.ndarray) -> float:
    """Share of pixels in a pure colour: a channel at 200 or more, the lowest at most 5 % of it
    (HSV saturation >= 0.95). Drawings are made of them; a camera records them only on small
    clipped highlights (0.8 % at most on the photos of scikit-image, matplotlib and scikit-learn)."""
    a = rgb.astype(np.int16)
    top, low = a.max(-1), a.min(-1)
    return float(((top >= 200) & (20 * low <= top)).mean())


def blur_measure(work: Image.Image) -> tuple[float, bool | None]:
    """``(ratio, blurry)``: the strongest edges at full scale over those at a quarter scale.

    A sharp edge is as steep at full scale as at a quarter (ratio near 1); a blurred one is
    spread over pixels and is about 4x less steep (ratio near 0.25-0.4). Measured on the colour
    channels, so a saturated graphic with little luminance contrast still shows its edges.
    Edges are the top 0.5 % of neighbour differences (0.125 % at full scale when that finds
    none: a few lines cover four times the share of the pixels at quarter scale).
    ``blurry`` is None when there is nothing to judge (tiny, flat or smooth pictures), and when
    a drawing in pure colours (a colour wheel, a spectrum) has no sharp edge: its gradients are
    smooth by design, and from one picture they look the same as a defocused edge."""
    if min(work.size) < 32:
        return 0.0, None
    rgb = np.asarray(work)
    fine = _edge_p(rgb)
    if fine < MIN_EDGES:  # edges on under 0.5 % of the pixels (a flag's few lines): p99.5 is flat ground,
        fine = _edge_p(rgb, SPARSE_Q)  # so take the share those lines have at full scale
    quarter = work.resize((work.width // 4, work.height // 4), Image.Resampling.BOX)
    coarse = _edge_p(np.asarray(quarter))
    if coarse < MIN_EDGES:
        return 0.0, None
    ratio = fine / coarse
    if ratio < BLUR_RATIO and pure_colour_share(rgb) >= DRAWN_SHARE:
        return ratio, None
    return ratio, bool(ratio < BLUR_RATIO)


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low means blurry."""
    g = gray.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk (2003): 0 for grey, ~15 slightly colourful, > 80 extremely."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def image_stats(img: Image.Image, exif: dict[str, Any] | None = None, orig_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Statistics of one picture, measured on at most 512 px (clamped, said in ``bounds``)."""
    w, h = orig_size or img.size
    work = resize_to_budget(img, None, 512, Image.Resampling.BILINEAR).convert("RGB")  # edges: 512 px
    small = resize_to_budget(work, None, 256, Image.Resampling.BILINEAR)  # colour and tone: 256 px is enough
    rgb = np.asarray(small)
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    colourful = colourfulness(rgb)
    rgb16 = rgb.astype(np.int16)
    chroma_spread = float(np.abs(3 * rgb16 - rgb16.sum(axis=-1, keepdims=True)).mean() / 3)
    ratio, blurry = blur_measure(work)
    colours = named_colours(small)
    work_luma = np.asarray(work.convert("L"), dtype=np.float32)
    aspect = w / h if h else 0.0
    out: dict[str, Any] = {
        "width": w,
        "height": h,
        "aspect": round(aspect, 4),
        "orientation": "square" if 0.95 <= aspect <= 1.05 else ("landscape" if aspect > 1 else "portrait"),
        "brightness": round(float(luma.mean() / 255), 4),
        # mean of each pixel's brightest channel: a saturated blue is bright to the eye, dim in luma
        "value": round(float(np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).mean() / 255), 4),
        "contrast": round(float(luma.std() / 255), 4),
        "sharpness": round(laplacian_variance(work_luma), 2),
        "edge_ratio": round(ratio, 3),
        "blurry": blurry,
        "colourfulness": round(colourful, 2),
        # both: a mostly black colour photo (hubble_deep_field) has a tiny mean chroma spread
        "grayscale": bool(chroma_spread < 3.0 and colourful < 8.0),
        "dominant_colors": colours,
        "colour_words": colour_words(colours),
    }
    if work.size != img.size:
        out["bounds"] = {"action": "clamp", "from": list(img.size), "to": list(work.size)}
    if exif:
        out["exif"] = dict(exif)
        cam = camera_and_time(exif)
        if cam:
            out.update(cam)
    return out


def _clean(v: Any, limit: int = 64) -> str:
    """EXIF strings are data from the file: one line, no control characters, capped."""
    t = "".join(ch if ch.isprintable() else " " for ch in str(v))
    return " ".join(t.split())[:limit]


def camera_and_time(exif: dict[str, Any]) -> dict[str, str]:
    """``{"camera": "Canon EOS 5D", "taken": "2024-05-01 10:00:00"}`` from an EXIF summary
    (keys as :func:`exif_summary` writes them, or the raw tag names Make/Model/DateTimeOriginal)."""
    e = {str(k).lower(): v for k, v in (exif or {}).items()}
    make = _clean(e.get("make") or "")
    model = _clean(e.get("model") or "")
    camera = model if make and model.lower().startswith(make.lower().split()[0]) else " ".join(x for x in (make, model) if x)
    when = _clean(e.get("datetime_original") or e.get("datetimeoriginal") or e.get("datetime") or "", 32)
    if len(when) >= 10 and when[4] == ":" and when[7] == ":":  # EXIF writes 2024:05:01 10:00:00
        when = when[:4] + "-" + when[5:7] + "-" + when[8:]
    out = {}
    if camera:
        out["camera"] = camera
    if when:
        out["taken"] = when
    return out


class ImageStatsExpert(Expert):
    name = "stats"
    model = "pixscribe/image-stats"
    needs_modules = ("numpy", "PIL")  # computed here: no weights

    def __init__(self) -> None:
        # in the fingerprint: 2 judges pure-colour drawings and sparse sharp edges (not blurry),
        # so runs made with the first rule do not resume into it
        self.blur_rule = 2

    @classmethod
    def from_config(cls, config: "RunConfig") -> "ImageStatsExpert":
        return cls()

    def run(self, images: list[Any], exif: list[dict[str, Any] | None] | None = None,
            sizes: list[tuple[int, int] | None] | None = None, **query: Any) -> list[dict[str, Any]]:
        """Per image: the statistics dict; ``exif`` and original ``sizes`` are optional, per image."""
        exif = exif or [None] * len(images)
        sizes = sizes or [None] * len(images)
        return [image_stats(img, e, s) for img, e, s in zip(images, exif, sizes)]
