"""The panoptic caption: a model's answer turned into the reference format, and the prose of
the structured (JSON) variant.

:func:`to_reference` rewrites every box a caption holds into the reference format
(``[[x1, y1, x2, y2]]`` normalised to the image, 3 decimals):

- ``<box>[[x1, y1, x2, y2]]</box>`` (several boxes allowed): the model format, integers
  0..999 on the image padded to a square (un-padded with :mod:`.boxes`);
- a bare ``[[...]]`` of integers: the model format too (so ``[[0, 0, 1, 1]]`` is a tiny box
  at the top-left, not the whole image);
- a bare ``[[...]]`` with a decimal point: already normalised, re-rendered canonically.

A box that fits neither is removed from the text and reported. The plain caption is the
same text with the boxes removed (:func:`~.boxes.strip_reference`).

:func:`render_structured` writes the prose of a JSON answer (entities with tags, boxes and
attributes, relations between entity ids, global state) in the reference format.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .boxes import (
    MODEL_SCALE,
    Box,
    BoxProblem,
    model_to_reference,
    render_reference,
    strip_reference,
)

_BOXED = re.compile(r"<box>\s*\[\[(.*?)\]\]\s*</box>", re.S)
_BARE = re.compile(r"\[\[(.*?)\]\]", re.S)
_GROUP_SEP = re.compile(r"\]\s*,\s*\[")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)")


def _numbers(part: str, pattern: re.Pattern[str]) -> list[float] | None:
    vals = [p.strip() for p in part.split(",")]
    if len(vals) != 4 or not all(pattern.fullmatch(v) for v in vals):
        return None
    return [float(v) for v in vals]


def _convert_group(body: str, model: bool, width: int, height: int) -> tuple[list[Box], str | None]:
    """The boxes of one ``[[...], [...]]`` group in the reference format, or a reason."""
    out: list[Box] = []
    for part in _GROUP_SEP.split(body):
        if model:
            v = _numbers(part, _INT)
            if v is None:
                return [], "not four integers"
            if min(v) < 0 or max(v) > MODEL_SCALE or v[2] < v[0] or v[3] < v[1]:
                return [], f"not an ordered box in 0..{MODEL_SCALE}"
            out.append(model_to_reference([int(x) for x in v], width, height))
        else:
            v = _numbers(part, _FLOAT)
            if v is None:
                return [], "not four numbers"
            if min(v) < 0 or max(v) > 1 or v[2] < v[0] or v[3] < v[1]:
                return [], "not an ordered box in [0, 1]"
            out.append((v[0], v[1], v[2], v[3]))
    return out, None


def _render_group(boxes: Sequence[Box]) -> str:
    return "[[" + "], [".join(render_reference(b)[2:-2] for b in boxes) + "]]"


def to_reference(text: str | None, width: int, height: int) -> tuple[str, list[BoxProblem]]:
    """``text`` with every box in the reference format, and the boxes that could not be read
    (removed from the text). See the module docstring for which box is read how."""
    problems: list[BoxProblem] = []

    def boxed(m: re.Match[str]) -> str:
        boxes, why = _convert_group(m.group(1), True, width, height)
        if why:
            problems.append(BoxProblem(m.group(0), m.start(), why))
            return ""
        return "\x00" + _render_group(boxes) + "\x01"  # protected from the bare pass

    def bare(m: re.Match[str]) -> str:
        body = m.group(1)
        model = "." not in body
        boxes, why = _convert_group(body, model, width, height)
        if why:
            problems.append(BoxProblem(m.group(0), m.start(), why))
            return ""
        return _render_group(boxes)

    step = _BOXED.sub(boxed, text or "")
    parts = re.split(r"(\x00.*?\x01)", step, flags=re.S)
    out = "".join(p[1:-1] if p.startswith("\x00") else _BARE.sub(bare, p) for p in parts)
    out = re.sub(r"</?box>", "", out)
    out = re.sub(r"[ \t]+([,.;:])", r"\1", re.sub(r"[ \t]{2,}", " ", out))
    return out.strip(), problems


def plain(caption: str) -> str:
    """The caption without its boxes."""
    text = strip_reference(caption)
    return re.sub(r"[ \t]+([,.;:])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


# ---- the structured variant ----------------------------------------------------------------

STRUCTURED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {"type": "array", "items": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "tag": {"type": "string"},
                           "box": {"type": "array", "items": {"type": "integer"}},
                           "attributes": {"type": "array", "items": {"type": "string"}}},
            "required": ["id", "tag", "box", "attributes"]}},
        "relations": {"type": "array", "items": {
            "type": "object",
            "properties": {"subject": {"type": "string"}, "predicate": {"type": "string"},
                           "object": {"type": "string"}},
            "required": ["subject", "predicate", "object"]}},
        "global": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["entities", "relations", "global"],
}


def _clean(s: Any) -> str:
    return re.sub(r"\s+", " ", str(s or "")).strip().strip(".")


def _and(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _entity_box(e: dict[str, Any], width: int, height: int) -> tuple[str, str | None]:
    b = e.get("box")
    if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, int) for v in b)):
        return "", "box is not four integers"
    if min(b) < 0 or max(b) > MODEL_SCALE or b[2] < b[0] or b[3] < b[1]:
        return "", f"box is not ordered in 0..{MODEL_SCALE}"
    return render_reference(model_to_reference(b, width, height)), None


def render_structured(obj: dict[str, Any], width: int, height: int) -> tuple[str, list[str]]:
    """Prose in the reference format from a JSON answer of :data:`STRUCTURED_SCHEMA`, and the
    problems met (an entity with a bad box is written without one; a relation naming an
    unknown id is left out). Entity boxes are model-format integers."""
    problems: list[str] = []
    names: dict[str, str] = {}
    sentences: list[str] = []
    tags = [_clean(e.get("tag")).lower() for e in obj.get("entities", [])]
    for e, tag in zip(obj.get("entities", []), tags):
        box, why = _entity_box(e, width, height)
        if why:
            problems.append(f"entity {e.get('id')!r}: {why}")
        name = f"the {tag} {box}".strip() if tags.count(tag) > 1 or not box else f"the {tag}"
        names[str(e.get("id"))] = name
        attrs = _and([_clean(a) for a in e.get("attributes", [])])
        head = f"The {tag} {box}".strip()
        sentences.append(f"{head} is {attrs}." if attrs else f"There is a {tag} {box}".strip() + ".")
    for r in obj.get("relations", []):
        s, o = names.get(str(r.get("subject"))), names.get(str(r.get("object")))
        if s is None or o is None:
            problems.append(f"relation {r.get('subject')!r} -> {r.get('object')!r}: unknown entity id")
            continue
        sentences.append(f"{s[0].upper() + s[1:]} {_clean(r.get('predicate'))} {o}.")
    glob = [_clean(g) for g in obj.get("global", []) if _clean(g)]
    if glob:
        sentences.append("Global state of the image: " + "; ".join(glob) + ".")
    return " ".join(sentences), problems


__all__ = ["STRUCTURED_SCHEMA", "plain", "render_structured", "to_reference"]
