"""Entity lists of PancapChain: parse a stage's answer, remove duplicates, merge, convert.

A stage answers in the model format (:mod:`.boxes`): bare boxes at stage 1, ``tag <box>..</box>``
pairs at stages 2 and 3. These functions turn such an answer into the cleaned list the next
stage is given, and count what they dropped, so the stage can record it in provenance:

- :func:`clean_boxes` (stage 1): the boxes in order, exact duplicates removed;
- :func:`clean_pairs` (stages 2, 3): the (tag, box) pairs in order, duplicates removed (the
  same box and the same tag, compared without case or repeated spaces);
- :func:`says_none` (stage 3): the answer means "nothing is missing";
- :func:`merge_pairs`: stage-2 pairs then the new stage-3 ones, de-duplicated;
- :func:`entity_rows`: pairs -> the ``entities`` column (tag, normalised box, pixel box, the
  stage that found it).

A malformed item is a :class:`~.boxes.BoxProblem` (reported, skipped); nothing here raises
on model output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .boxes import (
    BoxProblem,
    IntBox,
    ModelItem,
    model_to_pixels,
    parse_model,
    pixels_to_reference,
    render_model,
)

# "None", "none.", "No missing entities", "Nothing is missing", "There are no more entities"
_NONE = re.compile(r"^\W*(none\b|nothing\b|no\s+(more|other|additional|further|new|missing)\b|"
                   r"there\s+(are|is)\s+no\s+(more|other|additional|further|new|missing)\b)", re.I)


@dataclass
class Cleaned:
    """A stage's answer after cleaning: the items, and what was dropped on the way."""

    items: list[ModelItem]
    problems: list[BoxProblem] = field(default_factory=list)
    duplicates: int = 0
    untagged: int = 0
    none: bool = False
    outside: int = 0

    def text(self) -> str:
        """The model-format list the next stage is given (empty when there is none)."""
        return render_model(self.items)

    def report(self) -> dict[str, Any]:
        """What provenance records about the cleaning (only what happened)."""
        out: dict[str, Any] = {"items": len(self.items)}
        if self.duplicates:
            out["duplicates_removed"] = self.duplicates
        if self.untagged:
            out["untagged_skipped"] = self.untagged
        if self.outside:
            out["outside_image"] = self.outside
        if self.none:
            out["none"] = True
        if self.problems:
            out["problems"] = [str(p) for p in self.problems[:20]]
            out["problem_count"] = len(self.problems)
        return out


def keep_inside(c: Cleaned, width: int, height: int) -> Cleaned:
    """Drop the items whose box, clipped to the W x H image, has no area: a box that lies
    wholly in the padding of the square (or is a line) marks nothing in the image."""
    kept = []
    for it in c.items:
        x1, y1, x2, y2 = model_to_pixels(it.box, width, height)
        if x2 > x1 and y2 > y1:
            kept.append(it)
    c.outside += len(c.items) - len(kept)
    c.items = kept
    return c


def norm_tag(tag: str | None) -> str:
    """How tags are compared: lower case, spaces collapsed."""
    return re.sub(r"\s+", " ", (tag or "")).strip().lower()


def _tidy(tag: str) -> str:
    return re.sub(r"\s+", " ", tag).strip()


def clean_boxes(text: str | None) -> Cleaned:
    """Stage 1: every box of the answer (a tag, if the model wrote one, is dropped), in order,
    exact duplicates removed."""
    items, problems = parse_model(text or "")
    seen: set[IntBox] = set()
    out: list[ModelItem] = []
    for it in items:
        if it.box in seen:
            continue
        seen.add(it.box)
        out.append(ModelItem(None, it.box))
    return Cleaned(out, problems, duplicates=len(items) - len(out))


def _dedupe_pairs(items: Iterable[ModelItem], seen: set[tuple[str, IntBox]]) -> tuple[list[ModelItem], int, int]:
    out: list[ModelItem] = []
    dup = untagged = 0
    for it in items:
        if not it.tag or not norm_tag(it.tag):
            untagged += 1
            continue
        key = (norm_tag(it.tag), it.box)
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        out.append(ModelItem(_tidy(it.tag), it.box))
    return out, dup, untagged


def clean_pairs(text: str | None) -> Cleaned:
    """Stages 2 and 3: ``tag <box>..</box>`` pairs in order; a pair equal to an earlier one
    (same box, same tag without case) is removed, an item without a tag is skipped."""
    items, problems = parse_model(text or "")
    out, dup, untagged = _dedupe_pairs(items, set())
    return Cleaned(out, problems, duplicates=dup, untagged=untagged)


def says_none(text: str | None) -> bool:
    """The answer means "no entity is missing": it is empty or starts with None / Nothing /
    No more (other, additional, missing...) / There are no more... (the official inference
    code checks for a leading ``None``)."""
    t = (text or "").strip()
    return not t or bool(_NONE.match(t))


def parse_missing(text: str | None, known: Sequence[ModelItem]) -> Cleaned:
    """Stage 3: the new pairs of the answer, without those already ``known`` (stage 2's) and
    without repeats; an answer meaning "none" adds nothing, whatever follows it."""
    if says_none(text):
        return Cleaned([], none=True)
    items, problems = parse_model(text or "")
    seen = {(norm_tag(k.tag), k.box) for k in known}
    out, dup, untagged = _dedupe_pairs(items, seen)
    return Cleaned(out, problems, duplicates=dup, untagged=untagged)


def merge_pairs(base: Sequence[ModelItem], more: Sequence[ModelItem]) -> list[ModelItem]:
    """``base`` then the pairs of ``more`` that are not in it (same tag and box), in order."""
    seen: set[tuple[str, IntBox]] = set()
    out, _, _ = _dedupe_pairs([*base, *more], seen)
    return out


def parse_list(text: str | None) -> list[ModelItem]:
    """A cleaned list read back from a field (the stages store it as model-format text)."""
    items, _ = parse_model(text or "")
    return items


def entity_row(item: ModelItem, width: int, height: int, found_by: str, **extra: Any) -> dict[str, Any]:
    """One entry of the ``entities`` column: tag, ``box_norm`` (x1, y1, x2, y2 in [0, 1], 3
    decimals, the reference format), ``box`` (pixels of the W x H image the model saw, 2
    decimals), ``box_model`` (the model-format integers) and the stage that found it."""
    px = model_to_pixels(item.box, width, height)
    return {"tag": item.tag, "box_norm": list(pixels_to_reference(px, width, height)),
            "box": [round(float(v), 2) for v in px], "box_model": list(item.box), "found_by": found_by, **extra}


def entity_rows(tagged: Sequence[ModelItem], missing: Sequence[ModelItem], width: int, height: int,
                located: Iterable[IntBox] = (), names: tuple[str, str, str] = ("localize", "tag", "discover"),
                ) -> list[dict[str, Any]]:
    """The ``entities`` column of PancapChain: the tagged pairs, then the missing ones found
    later. A tagged pair is credited to the localising stage when its box is one of the
    boxes that stage gave (``located``), else to the tagging stage (the model moved or added
    a box); the missing ones to the discovering stage."""
    loc = set(located)
    rows = [entity_row(it, width, height, names[0] if it.box in loc else names[1]) for it in tagged]
    return rows + [entity_row(it, width, height, names[2]) for it in missing]


__all__ = [
    "Cleaned",
    "clean_boxes",
    "clean_pairs",
    "entity_row",
    "entity_rows",
    "keep_inside",
    "merge_pairs",
    "norm_tag",
    "parse_list",
    "parse_missing",
    "says_none",
]
