"""Method columns -> what the report draws and lists: one small parser per column shape.

Every method writes its evidence in its own columns (README "Row schema", docs/methods.md).
Each function here reads one column shape and returns plain dicts, so when a method's
columns change only its function changes. Every parser accepts JSON text or python values
(an Arrow list/struct column), skips malformed items instead of failing, and returns ``[]``
or ``None`` for an absent column, so a report renders whatever columns a run has.

Geometry comes back as normalised ``xyxy`` boxes in [0, 1] (``box_norm`` when the item has
one, else its pixel ``box`` divided by its frame: the mask's size when it has a mask, else
the row's ``width`` x ``height``, the image the model saw) and COCO RLE masks.

Shapes:

- textualize: ``objects`` [{phrase, verdict, score, box, detector}], ``hallucinations``
  [phrase], ``regions`` [{caption, box, mask, nearness, size_pct}], ``textualize_skipped``;
- panoptic: ``entities`` [{tag, box (normalised), box_px, stage}], inline ``[[x1, y1, x2, y2]]``
  boxes in ``caption`` (several boxes: ``[[...], [...]]``), ``caption_plain``;
- region: ``region`` {mask, box, area} with ``task``/``attribute``/``caption`` columns, or a
  ``regions`` list of such dicts with their captions;
- experts: ``expert_<name>``: lists of {label, box, score} (dense, grounding_dino, owlv2),
  masks {rle, box, score, label} (sam), {faces: [...]}, {lines: [{text, box}]} (ocr),
  [{box_norm, relative}] (depth), or summaries (stats, nsfw); {"error": ...} when it failed.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Sequence

from .parts import parse_json

Frame = tuple[float, float] | None  # (width, height) of the image the boxes are in

__all__ = [
    "norm_box", "text_objects", "hallucinated_phrases", "regions", "region_row", "panoptic_entities",
    "inline_boxes", "expert_items", "strike_phrases", "added_words", "skipped_reason",
]


# ---- geometry --------------------------------------------------------------------------
def _four(v: Any) -> list[float] | None:
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        return None
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(x) for x in out) else None


def _clamp01(b: Sequence[float]) -> tuple[float, float, float, float] | None:
    x0, x1 = sorted((min(max(b[0], 0.0), 1.0), min(max(b[2], 0.0), 1.0)))
    y0, y1 = sorted((min(max(b[1], 0.0), 1.0), min(max(b[3], 0.0), 1.0)))
    return (x0, y0, x1, y1)


def _mask(v: Any) -> dict[str, Any] | None:
    v = parse_json(v)
    if isinstance(v, dict) and isinstance(v.get("size"), (list, tuple)) and len(v["size"]) == 2 and "counts" in v:
        return v
    return None


def norm_box(item: dict[str, Any], frame: Frame, key: str = "box") -> tuple[float, float, float, float] | None:
    """The item's box as normalised xyxy: ``box_norm``, else ``item[key]`` in pixels of its
    mask's frame or of ``frame``."""
    b = _four(item.get("box_norm"))
    if b is not None:
        return _clamp01(b)
    b = _four(item.get(key))
    if b is None:
        return None
    m = _mask(item.get("mask") or item.get("rle"))
    w, h = (m["size"][1], m["size"][0]) if m else (frame or (0, 0))
    if not w or not h:
        return None
    return _clamp01((b[0] / w, b[1] / h, b[2] / w, b[3] / h))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dicts(v: Any) -> list[dict[str, Any]]:
    v = parse_json(v)
    return [d for d in v if isinstance(d, dict)] if isinstance(v, list) else []


# ---- textualize ------------------------------------------------------------------------
def text_objects(value: Any, frame: Frame) -> list[dict[str, Any]]:
    """``objects``: every phrase the detectors checked, with its verdict and evidence."""
    out = []
    for d in _dicts(value):
        phrase = str(d.get("phrase") or d.get("label") or "")
        if not phrase:
            continue
        verdict = str(d.get("verdict") or "")
        out.append({"phrase": phrase, "verdict": verdict, "score": _num(d.get("score")),
                    "detector": str(d.get("detector") or ""), "box": norm_box(d, frame)})
    return out


def hallucinated_phrases(value: Any) -> list[str]:
    v = parse_json(value)
    return [str(p) for p in v if isinstance(p, str) and p.strip()] if isinstance(v, list) else []


def skipped_reason(value: Any) -> str | None:
    if value is None or value == "" or value is False:
        return None
    return "skipped" if value is True else str(value)


# ---- regions (textualize and the region method) -----------------------------------------
_REGION_KEYS = ("caption", "task", "attribute", "region_id", "error", "prompt_mode")


def _region(d: dict[str, Any], frame: Frame) -> dict[str, Any]:
    mask = _mask(d.get("mask") or d.get("rle") or d.get("segmentation"))
    r = {k: (str(d[k]) if d.get(k) is not None else None) for k in _REGION_KEYS}
    r.update(mask=mask, box=norm_box(d, frame), nearness=_num(d.get("nearness")),
             size_pct=_num(d.get("size_pct")), area=_num(d.get("area")), score=_num(d.get("score")))
    return r


def regions(value: Any, frame: Frame) -> list[dict[str, Any]]:
    """A ``regions`` list (textualize's or the region method's one row per image)."""
    return [_region(d, frame) for d in _dicts(value)]


def region_row(row: dict[str, Any], frame: Frame) -> dict[str, Any] | None:
    """The region method's one row per region: a ``region`` column plus task/attribute/caption,
    or the region's keys as columns (``region_id`` with ``mask``/``box``/``box_norm``)."""
    d = parse_json(row.get("region"))
    if not isinstance(d, dict):
        if row.get("region_id") is None or all(row.get(k) is None for k in ("mask", "box", "box_norm")):
            return None
        d = {k: parse_json(row.get(k)) for k in ("region_id", "mask", "box", "box_norm", "area", "score", "error")}
    merged = dict(d)
    for k in ("task", "attribute", "caption"):
        if merged.get(k) is None and row.get(k) is not None:
            merged[k] = row[k]
    return _region(merged, frame)


# ---- panoptic --------------------------------------------------------------------------
def panoptic_entities(value: Any) -> list[dict[str, Any]]:
    """``entities``: tag, normalised box, pixel box and the stage that found it."""
    out = []
    for d in _dicts(value):
        b = _four(d.get("box"))
        out.append({"tag": str(d.get("tag") or d.get("label") or ""), "box": _clamp01(b) if b else None,
                    "box_px": _four(d.get("box_px")), "stage": str(d.get("stage") or "")})
    return out


_NUM = r"\s*-?\d+(?:\.\d+)?\s*"
_ONE = rf"\[{_NUM},{_NUM},{_NUM},{_NUM}\]"
_INLINE = re.compile(rf"\[\s*{_ONE}(?:\s*,\s*{_ONE})*\s*\]")


def inline_boxes(caption: str | None) -> list[tuple[str, Any]]:
    """A panoptic caption as parts: ``("text", str)`` and ``("boxes", [xyxy, ...], raw)``
    for every ``[[x1, y1, x2, y2]]`` group (normalised, as the reference format writes them)."""
    if not caption:
        return []
    parts: list[tuple[str, Any]] = []
    pos = 0
    for m in _INLINE.finditer(caption):
        if m.start() > pos:
            parts.append(("text", caption[pos:m.start()]))
        boxes = [_clamp01([float(x) for x in g]) for g in re.findall(rf"\[({_NUM}),({_NUM}),({_NUM}),({_NUM})\]", m.group(0)[1:-1])]
        parts.append(("boxes", boxes, m.group(0)))
        pos = m.end()
    if pos < len(caption):
        parts.append(("text", caption[pos:]))
    return parts


# ---- experts ---------------------------------------------------------------------------
def _unwrap(v: Any) -> Any:
    if isinstance(v, dict):
        for key in ("faces", "lines", "regions", "detections", "masks"):
            if isinstance(v.get(key), list):
                return v[key]
    return v


def expert_items(value: Any, frame: Frame) -> tuple[list[dict[str, Any]], str | None]:
    """An ``expert_<name>`` column as drawable items ``{label, score, box, mask, text,
    relative}`` and the expert's error, if it failed on this image."""
    v = parse_json(value)
    if isinstance(v, dict) and v.get("error"):
        return [], str(v["error"])
    items = []
    for d in _unwrap(v) if isinstance(_unwrap(v), list) else []:
        if not isinstance(d, dict):
            continue
        mask = _mask(d.get("rle") or d.get("mask"))
        box = norm_box(d, frame)
        if box is None and mask is None:
            continue
        items.append({"label": str(d.get("label") or d.get("phrase") or d.get("tag") or ""),
                      "text": str(d["text"]) if d.get("text") is not None else None,
                      "score": _num(d.get("score")), "relative": _num(d.get("relative")),
                      "box": box, "mask": mask})
    return items, None


# ---- text marking ----------------------------------------------------------------------
def strike_phrases(text: str | None, phrases: list[str]) -> list[tuple[str, bool]]:
    """``text`` as parts ``(text, struck)``: every occurrence of a hallucinated phrase (whole
    words, any case, longest first) is struck."""
    if not text:
        return []
    wanted = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
    if not wanted:
        return [(text, False)]
    pat = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in wanted) + r")(?!\w)", re.IGNORECASE)
    parts, pos = [], 0
    for m in pat.finditer(text):
        if m.start() > pos:
            parts.append((text[pos:m.start()], False))
        parts.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], False))
    return parts


_WORDS = re.compile(r"\S+|\s+")
_MAX_DIFF_WORDS = 3000


def added_words(before: str | None, after: str | None) -> list[tuple[str, bool]]:
    """``after`` as parts ``(text, added)``: the words that are not in ``before`` (a word
    diff), i.e. what a rewrite added to the description."""
    if not after:
        return []
    if not before:
        return [(after, False)]
    a = [t for t in _WORDS.findall(before) if not t.isspace()]
    tokens = _WORDS.findall(after)
    words = [t for t in tokens if not t.isspace()]
    if len(a) > _MAX_DIFF_WORDS or len(words) > _MAX_DIFF_WORDS:
        return [(after, False)]
    norm = lambda w: w.lower().strip(".,;:!?\"'()")  # noqa: E731
    added = [False] * len(words)
    sm = difflib.SequenceMatcher(None, [norm(w) for w in a], [norm(w) for w in words], autojunk=False)
    for op, _i1, _i2, j1, j2 in sm.get_opcodes():
        if op in ("insert", "replace"):
            for j in range(j1, j2):
                added[j] = True
    parts: list[tuple[str, bool]] = []
    wi = 0
    for t in tokens:
        flag = False if t.isspace() else added[wi]
        wi += 0 if t.isspace() else 1
        if parts and (parts[-1][1] == flag or t.isspace()):
            parts[-1] = (parts[-1][0] + t, parts[-1][1])
        else:
            parts.append((t, flag))
    return parts
