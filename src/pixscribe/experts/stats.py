"""Image statistics: named dominant colours, brightness, contrast, sharpness, colourfulness,
aspect, and EXIF camera/time when the file had them. Pure numpy + PIL, no weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..imaging import resize_to_budget
from .base import Expert

# A small palette of everyday colour names (sRGB). Cluster centres are named by the
# nearest entry in CIE Lab, so "brown" and "orange" are told apart as people would.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "dark gray": (70, 70, 70),
    "gray": (128, 128, 128),
    "light gray": (195, 195, 195),
    "white": (245, 245, 245),
    "red": (200, 30, 35),
    "dark red": (120, 15, 20),
    "pink": (240, 160, 185),
    "orange": (240, 140, 30),
    "brown": (125, 75, 35),
    "dark brown": (70, 40, 20),
    "tan": (205, 170, 125),
    "beige": (230, 215, 185),
    "yellow": (240, 215, 40),
    "olive": (120, 120, 30),
    "green": (50, 150, 50),
    "dark green": (25, 75, 30),
    "light green": (150, 210, 120),
    "teal": (20, 125, 125),
    "cyan": (70, 200, 220),
    "light blue": (155, 195, 235),
    "blue": (40, 80, 200),
    "navy": (20, 30, 85),
    "purple": (115, 50, 145),
    "lavender": (185, 165, 220),
    "magenta": (200, 40, 160),
}


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (..., 3) -> CIE Lab (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAMES = list(PALETTE)
_PAL_LAB = srgb_to_lab(np.array(list(PALETTE.values())))


def color_name(rgb: tuple[int, int, int] | np.ndarray) -> str:
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64)[None])[0]
    return _NAMES[int(np.argmin(((_PAL_LAB - lab) ** 2).sum(1)))]


def dominant_colors(img: Image.Image, k: int = 6, min_fraction: float = 0.05) -> list[dict[str, Any]]:
    """Named dominant colours with their share of the picture, largest first. Median-cut
    quantisation on a 96 px thumbnail; clusters with the same name are merged."""
    small = img.convert("RGB").resize((96, 96), Image.Resampling.BILINEAR)
    q = small.quantize(colors=k, method=Image.Quantize.MEDIANCUT)
    pal = np.array(q.getpalette()[: 3 * k], dtype=np.float64).reshape(-1, 3)
    counts = np.bincount(np.asarray(q).ravel(), minlength=len(pal))[: len(pal)]
    total = counts.sum()
    merged: dict[str, dict[str, Any]] = {}
    for rgb, n in zip(pal, counts):
        if n == 0:
            continue
        name = color_name(rgb)
        e = merged.setdefault(name, {"name": name, "fraction": 0.0, "rgb": np.zeros(3)})
        e["rgb"] = (e["rgb"] * e["fraction"] + rgb * n / total) / (e["fraction"] + n / total)
        e["fraction"] += n / total
    out = [
        {"name": e["name"], "fraction": round(float(e["fraction"]), 4), "rgb": [int(round(v)) for v in e["rgb"]],
         "hex": "#" + "".join(f"{int(round(v)):02x}" for v in e["rgb"])}
        for e in merged.values()
        if e["fraction"] >= min_fraction
    ]
    return sorted(out, key=lambda e: -e["fraction"])


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low means blurry."""
    g = gray.astype(np.float64)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk (2003): 0 for grey, ~15 slightly colourful, > 80 extremely."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def image_stats(img: Image.Image, exif: dict[str, Any] | None = None, orig_size: tuple[int, int] | None = None) -> dict[str, Any]:
    w, h = orig_size or img.size
    work = img.convert("RGB")
    work = resize_to_budget(work, None, 512, Image.Resampling.BILINEAR)  # statistics are stable at 512 px
    rgb = np.asarray(work)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    brightness = float(luma.mean() / 255)
    contrast = float(luma.std() / 255)
    sharp = laplacian_variance(luma)
    colourful = colourfulness(rgb)
    chroma_spread = float(np.abs(rgb.astype(np.int16) - rgb.mean(axis=-1, keepdims=True)).mean())
    aspect = w / h if h else 0.0
    out: dict[str, Any] = {
        "width": w,
        "height": h,
        "aspect": round(aspect, 4),
        "orientation": "square" if 0.95 <= aspect <= 1.05 else ("landscape" if aspect > 1 else "portrait"),
        "brightness": round(brightness, 4),
        "contrast": round(contrast, 4),
        "sharpness": round(sharp, 2),
        "blurry": bool(sharp < 60.0),
        "colourfulness": round(colourful, 2),
        # both: a mostly black colour photo (hubble_deep_field) has a tiny mean chroma spread
        "grayscale": bool(chroma_spread < 3.0 and colourful < 8.0),
        "dominant_colors": dominant_colors(img),
    }
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

    @classmethod
    def from_config(cls, config: Any) -> "ImageStatsExpert":
        return cls()

    def run(self, images: list[Any], exif: list[dict[str, Any] | None] | None = None,
            sizes: list[tuple[int, int] | None] | None = None, **query: Any) -> list[dict[str, Any]]:
        """Per image: the statistics dict; ``exif`` and original ``sizes`` are optional, per image."""
        exif = exif or [None] * len(images)
        sizes = sizes or [None] * len(images)
        return [image_stats(img, e, s) for img, e, s in zip(images, exif, sizes)]
