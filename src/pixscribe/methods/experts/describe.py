"""The plain-language description of the lite profile, composed from expert outputs only.

    A bright image of 1024×768, mostly blue and white, with red. One face in the upper left. Text: "OPEN 24H".

Every clause is traceable to one expert's output (stats, faces, ocr, nsfw). Text read by OCR
is quoted as data: it is cleaned of control characters and quotes, capped in length, and
never interpreted.
"""

from __future__ import annotations

import re
from typing import Any

from ...spatial import position_phrase

_NUMBERS = ["No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]


def quote_text(text: str, limit: int = 120) -> str:
    """OCR text as a safe quoted literal: one line, no quotes or control characters, capped."""
    t = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(text))
    t = t.replace('"', "'").replace("`", "'")
    t = re.sub(r"\s+", " ", t).strip()
    if len(t) > limit:
        t = t[: limit - 1].rstrip() + "…"
    return f'"{t}"'


def _brightness_word(stats: dict[str, Any]) -> str | None:
    """From ``value`` (mean of each pixel's brightest channel: a saturated colour wheel is not
    dim), or from luma ``brightness`` for rows written before ``value`` existed."""
    v = float(stats.get("value", stats.get("brightness", 0.5)))
    if v < 0.2:
        return "dark"
    if v < 0.35:
        return "dim"
    if v > 0.85:
        return "very bright"
    if v > 0.7:
        return "bright"
    return None


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def colour_phrase(stats: dict[str, Any]) -> str:
    """"mostly gray and black, with orange": the main colours, then the salient ones."""
    words = stats.get("colour_words")
    if not isinstance(words, dict):  # a row from before colour_words: area alone
        names = [c["name"] for c in stats.get("dominant_colors", []) if c.get("fraction", 0) >= 0.15][:2]
        return f"mostly {_join(names)}" if names else "colourful"
    main, accents = list(words.get("main") or []), list(words.get("accents") or [])
    phrase = f"mostly {_join(main)}" if main else ""
    if accents:
        phrase += (", with " if phrase else "") + _join(accents)
    if words.get("multicoloured"):
        phrase = "multicoloured" + (f", {phrase}" if phrase else "")
    return phrase or "colourful"


def describe_stats(stats: dict[str, Any]) -> str:
    adjs: list[str] = []
    bw = _brightness_word(stats)
    if bw:
        adjs.append(bw)
    if stats.get("contrast", 0.2) < 0.08:
        adjs.append("low-contrast")
    if stats.get("blurry") is True:
        adjs.append("blurry")
    grey = bool(stats.get("grayscale"))
    head = ", ".join(adjs) + (" " if adjs else "") + ("black-and-white image" if grey else "image")
    article = "An" if head[:1].lower() in "aeiou" else "A"
    size = f" of {stats.get('width')}×{stats.get('height')}" if stats.get("width") else ""
    return f"{article} {head}{size}" + ("." if grey else f", {colour_phrase(stats)}.")


def describe_camera(stats: dict[str, Any]) -> str | None:
    """'Camera: "Canon EOS 5D", 2024-05-01.' from EXIF; the camera name is quoted as data and
    the time is kept only when it reads as a date."""
    cam = stats.get("camera")
    m = re.match(r"(\d{4}-\d{2}-\d{2})", str(stats.get("taken") or ""))
    if not cam and not m:
        return None
    parts = [f"Camera: {quote_text(cam, 48)}" if cam else "Taken"]
    if m:
        parts.append(m.group(1) if cam else f"on {m.group(1)}")
    return (", " if cam else " ").join(parts) + "."


def describe_faces(faces: dict[str, Any]) -> str | None:
    items = faces.get("faces") or []
    if not items:
        return None
    n = len(items)
    count = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    noun = "face" if n == 1 else "faces"
    places = list(dict.fromkeys(position_phrase(f["box_norm"]) for f in items))
    where = _join(places[:3])
    return f"{count} {noun} {where}."


def _wordlike(text: str, score: float) -> bool:
    """As the OCR expert keeps lines: two letters, or two letters or digits read at >= 0.95."""
    return sum(ch.isalpha() for ch in text) >= 2 or (sum(ch.isalnum() for ch in text) >= 2 and score >= 0.95)


def describe_text(ocr: dict[str, Any], max_chars: int = 120, min_score: float = 0.8) -> str | None:
    """The confidently read lines (score >= ``min_score``, at least two letters), as the OCR
    expert keeps them (rows written by older versions are filtered here too)."""
    lines = (ocr or {}).get("lines")
    if lines is not None:
        keep = [ln["text"] for ln in lines
                if float(ln.get("score", 0)) >= min_score and _wordlike(ln.get("text", ""), float(ln.get("score", 0)))]
        text = " ".join(keep)
    else:
        text = (ocr or {}).get("text") or ""
    if not text.strip():
        return None
    return f"Text: {quote_text(text, max_chars)}."


def describe_nsfw(nsfw: dict[str, Any]) -> str | None:
    if nsfw and nsfw.get("flagged"):
        return "Possibly not safe for work."
    return None


def lite_description(outputs: dict[str, Any]) -> str:
    """``outputs`` maps expert name to its (JSON-ready) output for one image."""
    parts: list[str] = []
    stats = outputs.get("stats")
    if isinstance(stats, dict) and "error" not in stats:
        parts.append(describe_stats(stats))
    for name, fn in (("faces", describe_faces), ("ocr", describe_text), ("nsfw", describe_nsfw)):
        v = outputs.get(name)
        if isinstance(v, dict) and "error" not in v:
            s = fn(v)
            if s:
                parts.append(s)
    if isinstance(stats, dict) and "error" not in stats:
        cam = describe_camera(stats)
        if cam:
            parts.append(cam)
    return " ".join(parts)
