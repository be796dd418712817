"""The entity list of the PancapEngine-style variant: proposals re-detected by their tags.

Florence-2 proposes boxes (``<OD>`` classes, dense region phrases, or class-agnostic regions
tagged by the VLM); an open-vocabulary detector (Grounding DINO, OWLv2) is then asked for
each proposal's tag. :func:`merge_redetections` decides, with IoU gates:

1. a proposal is *confirmed* by a detector when one of that detector's boxes for the same
   tag overlaps it with IoU >= ``match_iou``; ``confirmed_by`` keeps each detector's best
   score; unconfirmed proposals are kept (``keep_unconfirmed``) or dropped;
2. a detection that matches no proposal of its tag, scoring at least its detector's
   ``add_threshold``, is a new entity (``found_by: redetect``), best scores first;
3. de-duplication: an entity with the same tag as an earlier one and IoU >= ``dedup_iou``
   with it is merged into it (its detectors' scores join the earlier one's).

The order is proposals first (as Florence-2 gave them), then new detections. Boxes are
compared in pixels of the image the experts saw; the list keeps PancapChain's model format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ...spatial import iou
from .boxes import ModelItem, model_to_pixels, pixels_to_model
from .entities import entity_row, norm_tag


@dataclass
class _Candidate:
    item: ModelItem
    px: tuple[float, float, float, float]
    found_by: str
    expert: str
    confirmed_by: dict[str, float] = field(default_factory=dict)


def _support(c: _Candidate, detections: Mapping[str, Sequence[Any]], match_iou: float) -> None:
    tag = norm_tag(c.item.tag)
    for name, dets in detections.items():
        scores = [float(d.score) for d in dets
                  if norm_tag(d.label) == tag and iou(d.box, c.px, degenerate=0.0) >= match_iou]
        if scores:
            c.confirmed_by[name] = round(max(scores), 4)


def _threshold(add_threshold: float | Mapping[str, float], name: str) -> float:
    if isinstance(add_threshold, Mapping):
        return float(add_threshold.get(name, 1.0))
    return float(add_threshold)


def _new_detections(cands: list[_Candidate], detections: Mapping[str, Sequence[Any]], width: int, height: int,
                    match_iou: float, add_threshold: float | Mapping[str, float]) -> list[_Candidate]:
    out: list[_Candidate] = []
    for name, dets in detections.items():
        th = _threshold(add_threshold, name)
        for d in dets:
            if float(d.score) < th:
                continue
            tag = norm_tag(d.label)
            if any(norm_tag(c.item.tag) == tag and iou(d.box, c.px, degenerate=0.0) >= match_iou for c in cands):
                continue
            item = ModelItem(str(d.label).strip(), pixels_to_model(d.box, width, height))
            out.append(_Candidate(item, model_to_pixels(item.box, width, height), "redetect", name,
                                  {name: round(float(d.score), 4)}))
    return sorted(out, key=lambda c: -max(c.confirmed_by.values()))


def _dedupe(cands: list[_Candidate], dedup_iou: float) -> tuple[list[_Candidate], int]:
    kept: list[_Candidate] = []
    merged = 0
    for c in cands:
        twin = next((k for k in kept if norm_tag(k.item.tag) == norm_tag(c.item.tag)
                     and iou(k.px, c.px, degenerate=0.0) >= dedup_iou), None)
        if twin is None:
            kept.append(c)
            continue
        merged += 1
        for name, s in c.confirmed_by.items():
            twin.confirmed_by[name] = max(s, twin.confirmed_by.get(name, 0.0))
    return kept, merged


def merge_redetections(
    proposals: Sequence[ModelItem],
    detections: Mapping[str, Sequence[Any]],
    width: int,
    height: int,
    *,
    match_iou: float = 0.5,
    dedup_iou: float = 0.7,
    add_threshold: float | Mapping[str, float] = 0.35,
    keep_unconfirmed: bool = True,
    proposal_expert: str = "dense",
) -> tuple[list[ModelItem], list[dict[str, Any]], dict[str, Any]]:
    """``(merged list, entities rows, report)``. ``detections`` maps a detector name to its
    detections (anything with ``box`` in pixels, ``score`` and ``label``). See the module
    docstring for the rules."""
    cands = [_Candidate(p, model_to_pixels(p.box, width, height), "proposals", proposal_expert) for p in proposals]
    for c in cands:
        _support(c, detections, match_iou)
    confirmed = sum(1 for c in cands if c.confirmed_by)
    kept = [c for c in cands if keep_unconfirmed or c.confirmed_by]
    new = _new_detections(cands, detections, width, height, match_iou, add_threshold)
    final, merged = _dedupe(kept + new, dedup_iou)
    rows = [entity_row(c.item, width, height, c.found_by, expert=c.expert, confirmed_by=dict(c.confirmed_by))
            for c in final]
    report = {"proposals": len(cands), "confirmed": confirmed, "dropped_unconfirmed": len(cands) - len(kept),
              "added": len(new), "duplicates_merged": merged, "entities": len(final)}
    return [c.item for c in final], rows, report


__all__ = ["merge_redetections"]
