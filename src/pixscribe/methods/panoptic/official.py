"""PancapChain's lists between stages as the official inference code passes them on
(``--prompt-set official``; Visual-AI/Pancap, ``llava/eval/model_vqa_loader_pancapchain.py``).

The official code reads a stage's stripped answer by cutting it at every ``"</box>, "``
(``</box>`` is then removed from the last piece only), and each piece is one item:

- stage 1 (:func:`read_boxes`): the piece without ``<box>``, its leading ``[`` and trailing
  ``]`` removed, split at ``", "`` into four Python ``int`` values;
- stages 2 and 3 (:func:`read_pairs`): the tag is the piece's text before its first
  ``" <box>"``, the box the text after it, read as above. Tags are kept as written and
  compared exactly (``dog`` and ``Dog`` are two entities).

Reading stops at the first piece that is not such an item; the items before it are kept
and nothing after it is read. An item equal to an earlier one (same box; at stages 2 and 3
the same tag and box) is dropped. At stage 3 (:func:`merge`) the stage-2 list is read again
and the answer's new items are appended to it, unless the answer starts with ``None``, which
adds nothing (an answer read as a list also adds nothing when its first piece is not an
item). Coordinates are not checked: any four integers are a box. The list a stage is given
is :func:`render`: ``[tag ]<box>[[x1, y1, x2, y2]]</box>`` items joined by ``", "``.

pixscribe's own cleaning (:mod:`.entities`) differs: it reads on past a malformed item,
compares tags without case, checks coordinates, drops boxes outside the image and knows more
ways of saying "none". That is the default; these functions are only for the official set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .boxes import IntBox, ModelItem

_ITEM_END = "</box>, "


@dataclass
class OfficialList:
    """Items read the official way, and what was dropped on the way (for provenance)."""

    items: list[ModelItem] = field(default_factory=list)
    duplicates: int = 0
    stopped_at: str | None = None
    none: bool = False

    def text(self) -> str:
        return render(self.items)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"items": len(self.items), "rules": "official"}
        if self.duplicates:
            out["duplicates_removed"] = self.duplicates
        if self.stopped_at is not None:
            out["stopped_at"] = self.stopped_at[:200]
        if self.none:
            out["none"] = True
        return out


def _pieces(text: str) -> list[str]:
    parts = text.split(_ITEM_END)
    parts[-1] = parts[-1].replace("</box>", "")
    return parts


def _four_ints(s: str) -> IntBox | None:
    try:
        vals = [int(v) for v in s.lstrip("[").rstrip("]").split(", ")]
    except ValueError:
        return None
    return (vals[0], vals[1], vals[2], vals[3]) if len(vals) == 4 else None


def _bare(piece: str) -> ModelItem | None:
    box = _four_ints(piece.replace("<box>", ""))
    return None if box is None else ModelItem(None, box)


def _pair(piece: str) -> ModelItem | None:
    parts = piece.split(" <box>")
    box = _four_ints(parts[1]) if len(parts) > 1 else None
    return None if box is None else ModelItem(parts[0], box)


def _read(text: str, one: Any, into: OfficialList, key: Any) -> OfficialList:
    seen = {key(it) for it in into.items}
    for piece in _pieces(text):
        it = one(piece)
        if it is None:
            into.stopped_at = piece if piece.strip() else None
            break
        if key(it) in seen:
            into.duplicates += 1
            continue
        seen.add(key(it))
        into.items.append(it)
    return into


def read_boxes(text: str | None) -> OfficialList:
    """Stage 1: the boxes of the answer, in order, exact repeats dropped."""
    return _read((text or "").strip(), _bare, OfficialList(), lambda it: it.box)


def read_pairs(text: str | None, none_rule: bool = False, into: OfficialList | None = None) -> OfficialList:
    """Stages 2 and 3: the (tag, box) pairs of the answer, in order, exact repeats dropped;
    with ``none_rule`` an answer starting with ``None`` gives nothing. ``into``: add to these."""
    t = (text or "").strip()
    out = into if into is not None else OfficialList()
    if none_rule and t.startswith("None"):
        out.none = True
        return out
    return _read(t, _pair, out, lambda it: (it.tag, it.box))


def merge(tagged_text: str | None, answer: str | None) -> tuple[list[ModelItem], OfficialList]:
    """Stage 3: ``(stage-2 items, merged list)``; the merged list's report says what the
    answer added or why it added nothing (its items after the stage-2 ones are the new ones)."""
    base = read_pairs(tagged_text, none_rule=True).items
    merged = read_pairs(answer, none_rule=True, into=OfficialList(list(base)))
    return base, merged


def render(items: Sequence[ModelItem]) -> str:
    """``[tag ]<box>[[x1, y1, x2, y2]]</box>`` items joined by ``", "`` (a tag, even an empty
    one read at stage 2, is followed by a space, as the official format writes it)."""
    out = []
    for it in items:
        b = "<box>[[" + ", ".join(str(int(v)) for v in it.box) + "]]</box>"
        out.append(b if it.tag is None else f"{it.tag} {b}")
    return ", ".join(out)


__all__ = ["OfficialList", "merge", "read_boxes", "read_pairs", "render"]
