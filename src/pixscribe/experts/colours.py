"""Colour words a person would use for a picture.

Every pixel of a small thumbnail is named in CIE LCh (lightness, chroma, hue angle): hue
bands give the family (red, orange, yellow, green, teal/cyan, blue, purple), lightness and
chroma the shade (dark red, brown, tan, light blue...), and low chroma the greys. Naming by hue
band, not by the nearest palette entry, keeps an orange spacesuit orange: its Lab distance to a
palette "red" is smaller than to a bright "orange", but its hue is orange's.

The words for a picture are:

- ``main``: the colours covering most of it (at least ``MAIN_SHARE`` of the pixels, two at most);
- ``accents``: colours that stand out although they cover little area (a red motorcycle in a
  grey garage): a colour's *salience* is its colour difference from the picture's mean colour
  (CIE76 ΔE, so lightness and chroma contrast count) plus half its chroma, times how
  concentrated it is (:func:`_cohesion`); accents are ranked by salience x sqrt(share), so a
  large salient colour beats a speck of highlight;
- ``multicoloured``: at least four hue families each on ``HUE_SHARE`` of the picture.

A dark scene (night, dusk, a dim room) is seen as the eye adapted to it: when its brightest
solid region is a pale warm tint (tan or beige of low chroma), it is a white surface under warm
light, named white and an accent whatever its area, as the eye goes to it first (a white rocket
under floodlights at dusk, whose pixels are tan). See :func:`_relight_dark_scene`.

The thresholds were set on the photos of scikit-image and matplotlib (see
tests/methods/experts/test_lite_truth.py) and checked on generated flat and blurred images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

# representative sRGB of each word (for ``rgb``/``hex`` of named colours and for the docs)
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15), "dark gray": (70, 70, 70), "gray": (128, 128, 128),
    "light gray": (195, 195, 195), "white": (245, 245, 245),
    "red": (200, 30, 35), "dark red": (120, 15, 20), "pink": (240, 160, 185),
    "orange": (235, 120, 40), "brown": (125, 75, 35), "dark brown": (70, 40, 20),
    "tan": (205, 170, 125), "beige": (230, 215, 185), "yellow": (240, 215, 40), "olive": (120, 120, 30),
    "green": (50, 150, 50), "dark green": (25, 75, 30), "light green": (150, 210, 120),
    "teal": (20, 125, 125), "cyan": (70, 200, 220), "light blue": (155, 195, 235), "blue": (40, 80, 200),
    "dark blue": (20, 30, 85), "purple": (115, 50, 145), "lavender": (185, 165, 220), "magenta": (200, 40, 160),
}
COLOUR_NAMES = tuple(PALETTE)
NEUTRALS = frozenset({"black", "dark gray", "gray", "light gray", "white"})
# the hue family of each chromatic word (for "multicoloured")
FAMILY = {"red": "red", "dark red": "red", "pink": "red", "orange": "orange", "brown": "orange",
          "dark brown": "orange", "tan": "orange", "beige": "yellow", "yellow": "yellow", "olive": "yellow",
          "green": "green", "dark green": "green", "light green": "green", "teal": "cyan", "cyan": "cyan",
          "light blue": "blue", "blue": "blue", "dark blue": "blue", "purple": "purple", "lavender": "purple",
          "magenta": "purple"}

MAIN_SHARE = 0.15  # a main colour covers at least this share of the picture
ACCENT_MIN_SHARE = 0.005  # an accent covers at least this share...
ACCENT_SCORE = 8.0  # ...and salience x sqrt(share) of at least this
CHROMA_WEIGHT = 0.5  # salience = cohesion x (ΔE from the mean colour + CHROMA_WEIGHT x chroma)
HUE_SHARE = 0.03  # a hue family counts for "multicoloured" from this share
THUMB = 256  # naming is done on a thumbnail of at most this side (thin objects survive it)
# the white surface of a dark scene (see _relight_dark_scene)
DARK_SCENE_L = 35.0  # a scene whose mean CIE lightness is under this is dark
LIT_MIN_SHARE = 0.01  # the surface covers at least this share...
LIT_COHESION = 0.6  # ...in a solid region (not specks of glare or stars)...
LIT_LIFT = 25.0  # ...and is at least this much lighter than the scene's mean
PALE_TINTS = frozenset({"tan", "beige"})  # a white surface under warm light has these pixels
LIT_MAX_CHROMA = 22.0  # a tan dog (chroma ~27 and up) keeps its colour
# shades counted with their base word when choosing the words (dark red + red = red)
BASE = {"dark red": "red", "dark brown": "brown", "dark green": "green", "light green": "green",
        "dark blue": "blue", "light blue": "blue"}


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (..., 3) -> CIE Lab (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_IDX = {n: i for i, n in enumerate(PALETTE)}


def _c(*names: str) -> list[int]:
    return [_IDX[n] for n in names]


def _grey(L: np.ndarray) -> np.ndarray:
    return np.select([L < 22, L < 40, L < 60, L < 82], _c("black", "dark gray", "gray", "light gray"), _IDX["white"])


def _shade(L: np.ndarray, C: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The word (index into ``COLOUR_NAMES``) of chromatic pixels, by hue band (degrees of CIE
    hue angle), then lightness and chroma."""
    i = _IDX
    red = np.select([L >= 62, L < 33], _c("pink", "dark red"), i["red"])
    orange = np.select([L < 30, (C < 35) & (L >= 85), (C < 35) & (L >= 65), (L < 55) | (C < 45)],
                       _c("dark brown", "beige", "tan", "brown"), i["orange"])
    yellow = np.select([(C < 35) & (L >= 85), C < 35, L < 60], _c("beige", "tan", "olive"), i["yellow"])
    green = np.select([L < 35, L >= 75], _c("dark green", "light green"), i["green"])
    cyan = np.where(L < 60, i["teal"], i["cyan"])
    blue = np.select([L < 30, L >= 70], _c("dark blue", "light blue"), i["blue"])
    purple = np.select([L < 45, (L >= 65) & (C < 50)], _c("purple", "lavender"), i["magenta"])
    pinkish = np.where(L >= 60, i["pink"], np.where(L < 33, i["dark red"], i["red"]))
    return np.select(
        [h < 20, h < 42, h < 75, h < 110, h < 180, h < 225, h < 318, h < 345],
        [pinkish, red, orange, yellow, green, cyan, blue, purple], pinkish)


def name_codes(lab: np.ndarray) -> np.ndarray:
    """The colour word of each Lab colour (..., 3), as indices into ``COLOUR_NAMES``."""
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    C = np.hypot(a, b)
    h = np.degrees(np.arctan2(b, a)) % 360
    chromatic = (C >= 8 + 0.06 * L) & ~((L < 12) & (C < 30))
    return np.where(chromatic, _shade(L, C, h), _grey(L))


def name_lab(lab: np.ndarray) -> np.ndarray:
    """The colour word of each Lab colour (..., 3) -> (...) array of str."""
    return np.asarray(COLOUR_NAMES)[name_codes(lab)]


def color_name(rgb: Any) -> str:
    """The word for one sRGB colour, e.g. ``color_name((221, 106, 70)) == "orange"``."""
    return str(name_lab(srgb_to_lab(np.asarray(rgb, dtype=np.float64))[None])[0])


def _cohesion(groups: np.ndarray, n: int) -> np.ndarray:
    """How concentrated each group is: the mean share of its pixels' 8 neighbours in the same
    group (1 for one solid region, near 0 for scattered specks). Unlike a grid density, it
    keeps a thin object (a rocket) as concentrated as a round one. One pass for all groups."""
    h, w = groups.shape
    pad = np.pad(groups, 1, constant_values=-1)
    same = np.zeros((h, w), dtype=np.int16)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                same += pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == groups
    count = np.bincount(groups.ravel(), minlength=n)
    total = np.bincount(groups.ravel(), weights=same.ravel().astype(np.float64), minlength=n)
    return total / np.maximum(count, 1) / 8.0


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb)


_BASE_CODE = np.array([list(PALETTE).index(BASE.get(n, n)) for n in PALETTE])


def _entry(name: str, share: float, m_lab: np.ndarray, m_rgb: np.ndarray, mean_lab: np.ndarray,
           cohesion: float) -> dict[str, Any]:
    chroma = float(np.hypot(m_lab[1], m_lab[2]))
    salience = float(cohesion) * (float(np.linalg.norm(m_lab - mean_lab)) + CHROMA_WEIGHT * chroma)
    return {"name": name, "fraction": round(float(share), 4), "rgb": [int(round(float(v))) for v in m_rgb],
            "hex": _hex(m_rgb), "lightness": round(float(m_lab[0]), 1), "chroma": round(chroma, 1),
            "cohesion": round(float(cohesion), 3), "salience": round(salience, 2)}


def named_colours(img: Image.Image, min_fraction: float = 0.005) -> list[dict[str, Any]]:
    """The colours of the picture, shades merged with their base word (``dark red`` and ``red``
    are one "red", called by a shade only when it makes up 2/3 of the group): each with its
    share, mean colour, chroma, cohesion and salience, largest share first; groups under
    ``min_fraction`` are left out. Per-group sums are bincounts: one pass over the pixels."""
    small = img.convert("RGB")
    small.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float64)
    lab = srgb_to_lab(rgb)
    n = len(COLOUR_NAMES)
    codes = name_codes(lab)
    bases = _BASE_CODE[codes]
    cohesion = _cohesion(bases, n)
    b, c = bases.ravel(), codes.ravel()
    count = np.bincount(b, minlength=n).astype(np.float64)
    lab_sum = np.stack([np.bincount(b, weights=lab[..., k].ravel(), minlength=n) for k in range(3)], axis=1)
    rgb_sum = np.stack([np.bincount(b, weights=rgb[..., k].ravel(), minlength=n) for k in range(3)], axis=1)
    shades = np.bincount(b * n + c, minlength=n * n).reshape(n, n)  # [base, shade] pixel counts
    mean_lab = lab.reshape(-1, 3).mean(0)
    out = []
    for g in np.flatnonzero(count >= min_fraction * max(b.size, 1)):
        top = int(np.argmax(shades[g]))
        name = COLOUR_NAMES[top] if shades[g, top] >= 2 / 3 * count[g] else COLOUR_NAMES[g]
        out.append(_entry(name, count[g] / b.size, lab_sum[g] / count[g], rgb_sum[g] / count[g], mean_lab, cohesion[g]))
    _relight_dark_scene(out, float(mean_lab[0]))
    return sorted(out, key=lambda e: -e["fraction"])


def _relight_dark_scene(colours: list[dict[str, Any]], scene_lightness: float) -> None:
    """In a dark scene whose brightest solid region is a pale warm tint, name that region white
    and keep the word of its pixels as ``cast`` (which makes it an accent): the eye adapts to the
    light on the brightest surface (white-patch colour constancy), and taking that surface as a
    solid region, not the brightest pixels, leaves out lamps, glare and stars."""
    if scene_lightness >= DARK_SCENE_L:
        return
    solid = [c for c in colours if c["fraction"] >= LIT_MIN_SHARE and c["cohesion"] >= LIT_COHESION]
    if not solid:
        return
    top = max(solid, key=lambda c: c["lightness"])
    if top["lightness"] < scene_lightness + LIT_LIFT:
        return
    if top["name"] in PALE_TINTS and top["chroma"] <= LIT_MAX_CHROMA:
        top["cast"], top["name"] = top["name"], "white"


def colour_words(colours: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"main": [...], "accents": [...], "multicoloured": bool}`` from :func:`named_colours`."""
    # (dict.fromkeys: a re-lit white may stand beside a white group of its own)
    main = list(dict.fromkeys(c["name"] for c in colours if c["fraction"] >= MAIN_SHARE))[:2]
    main = main or [c["name"] for c in colours[:1]]
    families: dict[str, float] = {}
    for c in colours:
        if c["name"] in FAMILY:
            families[FAMILY[c["name"]]] = families.get(FAMILY[c["name"]], 0.0) + c["fraction"]
    multicoloured = sum(v >= HUE_SHARE for v in families.values()) >= 4
    rest = [c for c in colours if c["name"] not in main and c["fraction"] >= ACCENT_MIN_SHARE]
    if multicoloured:  # name the hues, largest first, one word per family
        seen = {FAMILY.get(n) for n in main}
        accents = []
        for c in sorted(rest, key=lambda c: -c["fraction"]):
            fam = FAMILY.get(c["name"])
            if fam and fam not in seen and families[fam] >= HUE_SHARE:
                seen.add(fam)
                accents.append(c["name"])
        return {"main": main, "accents": accents[:5], "multicoloured": True}
    scored = sorted(((c["salience"] * c["fraction"] ** 0.5, c["name"]) for c in rest), reverse=True)
    accents = list(dict.fromkeys(n for score, n in scored[:2] if score >= ACCENT_SCORE))
    lit = next((c["name"] for c in rest if c.get("cast")), None)
    if lit is not None and lit not in accents:  # a dark scene's white surface is seen first
        accents = [lit, *accents[:1]]
    return {"main": main, "accents": accents, "multicoloured": False}
