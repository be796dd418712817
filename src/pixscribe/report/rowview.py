"""One output row -> the view a report card renders: overlay layers, sections, flags.

The card's overlay is an SVG over the thumbnail whose viewBox is the row's frame (the image
the model saw), so normalised boxes from every method land on the same pixels. Each entity
(a detection, a mask, a region, a textualize object, a panoptic entity) gets an id unique in
the row and a colour; tables, evidence lists and inline caption boxes point at that id, so
hovering one highlights the other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..experts.rle import to_xyxy
from ..record import error_kind
from . import adapters as ad
from .parts import parse_json

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#000075")
MAX_SHAPES_PER_LAYER = 60
BASE = ("id", "source", "width", "height", "sha256", "method", "caption", "model", "prompt_sha", "seconds",
        "error", "provenance", "stages")
SHOWN_ELSEWHERE = {"description", "objects", "hallucinations", "regions", "textualize_skipped", "entities",
                   "caption_plain", "region", "task", "attribute", "org_caption", "re_caption"}

_HEX = re.compile(r"#[0-9a-fA-F]{6}")
MaskWriter = Callable[[dict[str, Any], str, str], str | None]  # (rle, entity id, colour) -> href


@dataclass
class Shape:
    ent: str
    label: str
    color: str
    box: tuple[float, float, float, float] | None = None
    mask_href: str | None = None
    css: str = ""


@dataclass
class Layer:
    name: str
    shapes: list[Shape] = field(default_factory=list)
    hidden: int = 0  # shapes over the cap, not drawn


@dataclass
class RowView:
    row: dict[str, Any]
    key: str
    frame: tuple[float, float]
    layers: list[Layer] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    thumb: str | None = None
    thumb_error: str | None = None
    changed: bool = False
    n: int = 0  # position in the report (1-based)
    idx: int = 0  # position in the rows index (assets/rows.js)
    display: tuple[int, int] = (0, 0)  # pixels the card shows the image at
    _n: int = 0

    @property
    def caption_in_section(self) -> bool:
        """A textualize or panoptic section shows the caption marked up, so not again plain."""
        return any(s["kind"] in ("textualize", "panoptic") for s in self.sections)

    @property
    def error_kind(self) -> str | None:
        return error_kind(self.row.get("error"))

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        lay = Layer(name)
        self.layers.append(lay)
        return lay

    def add(self, layer: str, label: str, box: Any = None, mask: dict[str, Any] | None = None,
            masks: MaskWriter | None = None, css: str = "") -> str | None:
        """Add an entity to a layer; returns its id (None if it has no geometry or is over the cap)."""
        if box is None and mask is None:
            return None
        lay = self.layer(layer)
        if len(lay.shapes) >= MAX_SHAPES_PER_LAYER:
            lay.hidden += 1
            return None
        self._n += 1
        ent, color = f"{self.key}-e{self._n}", PALETTE[(self._n - 1) % len(PALETTE)]
        href = masks(mask, ent, color) if (mask is not None and masks is not None) else None
        if box is None and mask is not None:
            h, w = mask["size"]
            x0, y0, x1, y1 = to_xyxy(mask)
            box = (x0 / max(w, 1), y0 / max(h, 1), x1 / max(w, 1), y1 / max(h, 1))
        lay.shapes.append(Shape(ent, label, color, tuple(box) if box else None, href, css))
        return ent

    def color_of(self, ent: str | None) -> str | None:
        for lay in self.layers:
            for s in lay.shapes:
                if s.ent == ent:
                    return s.color
        return None


def _frame(row: dict[str, Any]) -> tuple[float, float] | None:
    w, h = row.get("width"), row.get("height")
    return (float(w), float(h)) if w and h else None


def _label(*bits: Any) -> str:
    return " · ".join(str(b) for b in bits if b not in (None, ""))


def fmt_num(x: Any, fmt: str = "%.2f") -> str:
    """``fmt % x``, with no minus sign on a value that rounds to zero (never ``-0.00``); the
    templates' ``num`` filter."""
    text = fmt % x
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _score(v: float | None, name: str = "score") -> str | None:
    return f"{name} {fmt_num(v)}" if v is not None else None


# ---- sections, one per kind of evidence ---------------------------------------------------
def _textualize(v: RowView, masks: MaskWriter | None) -> None:
    row, frame = v.row, _frame(v.row)
    cols = ("objects", "hallucinations", "textualize_skipped")
    if all(row.get(c) is None for c in cols):  # parts share one schema: absent columns read as null
        return
    objects = ad.text_objects(row.get("objects"), frame)
    phrases = ad.hallucinated_phrases(row.get("hallucinations"))
    phrases += [o["phrase"] for o in objects if o["verdict"] == "hallucinated" and o["phrase"] not in phrases]
    evidence = []
    for o in objects:
        css = "hallucinated" if o["verdict"] == "hallucinated" else "grounded"
        ent = v.add("objects", _label(o["phrase"], o["verdict"], _score(o["score"]), o["detector"]), o["box"],
                    masks=masks, css=css)
        evidence.append(dict(o, ent=ent, color=v.color_of(ent)))
    skipped = ad.skipped_reason(row.get("textualize_skipped"))
    if phrases:
        v.flags.add("hallucinations")
    if skipped:
        v.flags.add("skipped")
    v.sections.append({"kind": "textualize", "description": ad.strike_phrases(row.get("description"), phrases),
                       "caption": ad.added_words(row.get("description"), row.get("caption")),
                       "hallucinations": phrases, "evidence": evidence, "skipped": skipped})


def _regions(v: RowView, masks: MaskWriter | None) -> None:
    frame = _frame(v.row)
    regs = ad.regions(v.row.get("regions"), frame)
    one = ad.region_row(v.row, frame)
    if one is not None:
        regs = [one] + regs
    if not regs:
        return
    listed = []
    for i, r in enumerate(regs, 1):
        size = f"size {fmt_num(r['size_pct'], '%.1f')}%" if r["size_pct"] is not None else None
        near = _score(r["nearness"], "nearness")
        ent = v.add("regions", _label(f"region {r['region_id'] or i}", r["caption"], near, size), r["box"],
                    r["mask"], masks)
        listed.append(dict(r, ent=ent, color=v.color_of(ent), n=i))
        if r.get("error"):
            v.flags.add("region-error")
    v.sections.append({"kind": "regions", "regions": listed})


def _panoptic(v: RowView, masks: MaskWriter | None) -> None:
    if v.row.get("entities") is None and v.row.get("method") != "panoptic":
        return
    ents = ad.panoptic_entities(v.row.get("entities"))
    table = []
    for e in ents:
        ent = v.add("entities", _label(e["tag"], e["stage"]), e["box"])
        table.append(dict(e, ent=ent, color=v.color_of(ent)))
    parts: list[dict[str, Any]] = []
    for p in ad.inline_boxes(v.row.get("caption")):
        if p[0] == "text":
            parts.append({"text": p[1]})
            continue
        refs = [_match_entity(b, table) or v.add("inline boxes", p[2], b) for b in p[1]]
        parts.append({"text": p[2], "refs": [r for r in refs if r], "color": v.color_of(refs[0]) if refs else None})
    v.sections.append({"kind": "panoptic", "entities": table, "caption": parts,
                       "caption_plain": v.row.get("caption_plain")})


def _match_entity(box: tuple[float, ...], table: list[dict[str, Any]]) -> str | None:
    """The entity whose box is this inline box (to the 3 decimals a caption writes)."""
    for e in table:
        if e["box"] and e["ent"] and all(abs(a - b) <= 0.0015 for a, b in zip(box, e["box"])):
            return e["ent"]
    return None


def _experts(v: RowView, masks: MaskWriter | None) -> None:
    frame = _frame(v.row)
    for col in sorted(c for c in v.row if c.startswith("expert_")):
        name = col[len("expert_"):]
        raw = parse_json(v.row[col])
        items, err = ad.expert_items(raw, frame)
        listed = []
        for it in items:
            label = _label(name, it["label"], f"“{it['text']}”" if it["text"] else None, _score(it["score"]),
                           _score(it["relative"], "nearness"))
            ent = v.add(name, label, it["box"], it["mask"], masks)
            listed.append(dict(it, ent=ent, color=v.color_of(ent)))
        facts = raw if isinstance(raw, dict) and not items and not err else None
        v.sections.append({"kind": "expert", "name": name, "items": listed, "error": err,
                           "facts": _facts(facts), "colors": _colors(facts)})
        if err:
            v.flags.add("expert-error")


def _facts(d: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not d:
        return []
    out = []
    for k, val in d.items():
        if k in ("dominant_colors",) or val is None or val == "" or val == [] or val == {}:
            continue  # an empty field says nothing: no "lines []", no "confidence null"
        if isinstance(val, float) and val == 0.0:
            val = 0.0  # never "-0.0"
        text = val if isinstance(val, str) else json.dumps(val, ensure_ascii=False)
        out.append((str(k), text[:300]))
    return out


def _colors(d: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for c in (d or {}).get("dominant_colors") or []:
        if isinstance(c, dict) and isinstance(c.get("hex"), str) and _HEX.fullmatch(c["hex"]):  # into an attribute
            out.append({"hex": c["hex"], "name": str(c.get("name", "")), "fraction": ad._num(c.get("fraction"))})
    return out


def _provenance(v: RowView) -> None:
    prov = parse_json(v.row.get("provenance"))
    stages = parse_json(v.row.get("stages"))
    rows = []
    for fld, p in sorted(prov.items()) if isinstance(prov, dict) else []:
        if isinstance(p, dict):
            rows.append({"field": fld, **{k: p.get(k) for k in ("stage", "model", "prompt_sha", "seconds", "reused")},
                         "expert": p.get("expert")})
    st = []
    for name, s in stages.items() if isinstance(stages, dict) else []:
        if isinstance(s, dict):
            st.append({"stage": name, **{k: s.get(k) for k in ("status", "fp", "seconds", "reused")},
                       "fields": ", ".join(str(f) for f in s.get("fields") or [])})
    v.sections.append({"kind": "provenance", "fields": rows, "stages": st})


def _other_columns(v: RowView) -> None:
    extra = [(k, val) for k, val in v.row.items()
             if k not in BASE and k not in SHOWN_ELSEWHERE and not k.startswith("expert_") and val is not None]
    shown = [(k, val if isinstance(val, str) else json.dumps(val, ensure_ascii=False, default=str)) for k, val in extra]
    v.sections.append({"kind": "columns", "columns": [(k, s[:2000] + ("…" if len(s) > 2000 else "")) for k, s in shown]})


def build_view(row: dict[str, Any], key: str, masks: MaskWriter | None = None) -> RowView:
    """The view of one row; ``masks`` writes a mask image and returns its href."""
    row = {**dict.fromkeys(BASE + ("org_caption",)), **row}  # an output may lack base columns
    v = RowView(row=row, key=key, frame=_frame(row) or (1000.0, 1000.0))
    for part in (_textualize, _panoptic, _regions, _experts):
        part(v, masks)
    _provenance(v)
    _other_columns(v)
    if row.get("error"):
        v.flags.add("error")
    if any(lay.shapes for lay in v.layers):
        v.flags.add("overlays")
    return v
