"""The expert stages of the PancapEngine-style variant (``--method panoptic --entities experts``).

- :class:`ProposalStage` (``proposals``): Florence-2 proposes boxes (``task``: ``<OD>``,
  ``<DENSE_REGION_CAPTION>`` or the class-agnostic ``<REGION_PROPOSAL>``). With ``tagger:
  label`` each proposal's tag is its Florence-2 label, and the stage gives the tagged list
  (``tagged``); with ``tagger: vlm`` it gives the bare boxes (``boxes``) and PancapChain's
  ``tag`` stage asks the VLM for the tags.
- :class:`RedetectStage` (``redetect``): each image's tags are the text queries of Grounding
  DINO and/or OWLv2; :func:`~pixscribe.methods.panoptic.redetect.merge_redetections` confirms,
  adds and de-duplicates, giving ``merged`` (the list the caption prompt carries) and
  ``entities``.

Boxes go between the stages in PancapChain's model format (integers 0..999 on the image
padded to a square), converted from and to the experts' pixels with
:mod:`pixscribe.methods.panoptic.boxes`.
"""

from __future__ import annotations

import time
from typing import Any

from ...api.stage import Stage
from ...experts.base import Expert
from ...experts.florence import clean_label
from ...record import PixscribeError, Record
from . import entities as E
from .boxes import ModelItem, pixels_to_model, render_model
from .redetect import merge_redetections

# a detector's box threshold, and the higher score a detection needs to add an entity of its own
DEFAULTS = {"box_threshold": {"grounding_dino": 0.3, "owlv2": 0.1},
            "add_threshold": {"grounding_dino": 0.4, "owlv2": 0.2}}


def _identity(e: Expert) -> dict[str, Any]:
    """What changes an expert's output: its model and its public scalar settings."""
    keep = (str, int, float, bool, type(None))
    return {"expert": e.name, "model": e.model, **{k: v for k, v in vars(e).items()
                                                   if not k.startswith("_") and isinstance(v, keep)}}


def _setup(experts: list[Expert]) -> None:
    for e in experts:
        try:
            e.setup()
        except Exception as exc:
            raise PixscribeError(f"expert {e.name!r} ({e.model}) could not be loaded: {exc}. Point expert_models."
                                 f"{e.name} at a local copy, or leave out --entities experts", kind="expert") from exc


def _run_each(expert: Expert, records: list[Record], **kw: Any) -> list[Any]:
    """The expert on the batch; when the batch fails, one record at a time (an exception per
    record that still fails). ``kw`` values that are per-record lists are split."""
    try:
        return list(expert.run([r.image for r in records], **kw))
    except Exception:
        if len(records) == 1:
            raise
    out: list[Any] = []
    for i, r in enumerate(records):
        one = {k: ([v[i]] if isinstance(v, list) and len(v) == len(records) else v) for k, v in kw.items()}
        try:
            out.append(expert.run([r.image], **one)[0])
        except Exception as exc:
            out.append(exc)
    return out


class ProposalStage(Stage):
    name = "proposals"
    needs_image = True

    def __init__(self, expert: Expert, options: dict[str, Any]):
        self.expert = expert
        self.opts = dict(options)
        self.label_tags = self.opts["tagger"] == "label"
        self.provides = ("proposals", "tagged" if self.label_tags else "boxes")

    def options(self) -> dict[str, Any]:
        return {"expert": _identity(self.expert), **self.opts}

    def models(self) -> list[Any]:
        return [self.expert]

    def setup(self) -> None:
        _setup([self.expert])

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, **self.expert.describe(), **self.opts}

    def __call__(self, records: list[Record]) -> list[Record]:
        t = time.perf_counter()
        try:
            outs = _run_each(self.expert, records, task=self.opts["task"])
        except Exception as exc:
            outs = [exc]
        dt = (time.perf_counter() - t) / max(len(records), 1)
        for r, dets in zip(records, outs):
            if isinstance(dets, BaseException):
                r.fail(dets, "proposals")
                continue
            self._keep(r, list(dets)[: int(self.opts["max_proposals"])], dt)
        return records

    def _keep(self, r: Record, dets: list[Any], seconds: float) -> None:
        w, h = r.image.width, r.image.height
        props, items = [], []
        for d in dets:
            tag = clean_label(d.label).lower() or None
            box = pixels_to_model(d.box, w, h)
            props.append({"tag": tag, "box": list(d.box), "box_norm": list(d.box_norm), "box_model": list(box)})
            items.append(ModelItem(tag, box))
        if self.label_tags:
            c = E.clean_pairs(render_model(items))
            field, value = "tagged", c.text()
        else:
            c = E.clean_boxes(render_model(items))
            field, value = "boxes", c.text()
        meta = dict(stage=self.name, model=self.expert.model, expert=self.expert.name, parse=c.report())
        r.set("proposals", props, seconds=seconds, **meta)
        r.set(field, value, **meta)


class RedetectStage(Stage):
    name = "redetect"
    needs = ("tagged",)
    provides = ("merged", "entities")
    needs_image = True

    def __init__(self, detectors: list[Expert], options: dict[str, Any], proposal_expert: str = "dense"):
        if not detectors:
            raise ValueError("redetect: name at least one detector (grounding_dino, owlv2)")
        self.detectors = detectors
        self.opts = dict(options)
        self.proposal_expert = proposal_expert

    def options(self) -> dict[str, Any]:
        return {"detectors": [_identity(d) for d in self.detectors], **self.opts}

    def models(self) -> list[Any]:
        return list(self.detectors)

    def setup(self) -> None:
        _setup(self.detectors)

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "detectors": [d.describe() for d in self.detectors], **self.opts}

    def _threshold(self, name: str, key: str) -> float:
        """``key`` (box_threshold / add_threshold) for detector ``name``: the option (one number,
        or per detector), else the default for that detector."""
        given, default = self.opts.get(key), DEFAULTS[key].get(name, 0.3)
        if isinstance(given, dict):
            return float(given.get(name, default))
        return float(given) if given is not None else default

    def _detect(self, records: list[Record], queries: list[list[str]]) -> dict[str, list[Any]]:
        """Each detector's detections per record (an exception for a record it failed on)."""
        idx = [i for i, q in enumerate(queries) if q]
        out: dict[str, list[Any]] = {}
        for det in self.detectors:
            res: list[Any] = [[] for _ in records]
            if idx:
                kw: dict[str, Any] = {"queries": [queries[i] for i in idx],
                                      "box_threshold": self._threshold(det.name, "box_threshold")}
                if det.name == "grounding_dino":
                    kw["text_threshold"] = float(self.opts["text_threshold"])
                try:
                    got = _run_each(det, [records[i] for i in idx], **kw)
                except Exception as exc:
                    got = [exc]
                for i, d in zip(idx, got):
                    res[i] = d
            out[det.name] = res
        return out

    def __call__(self, records: list[Record]) -> list[Record]:
        props = [E.parse_list(r.get("tagged")) for r in records]
        queries = [list(dict.fromkeys(it.tag for it in p if it.tag))[: int(self.opts["max_queries"])] for p in props]
        t = time.perf_counter()
        found = self._detect(records, queries)
        dt = (time.perf_counter() - t) / max(len(records), 1)
        for i, r in enumerate(records):
            per = {name: dets[i] for name, dets in found.items()}
            bad = [f"{n}: {d}" for n, d in per.items() if isinstance(d, BaseException)]
            if bad:
                r.fail("; ".join(bad), "redetect")
                continue
            items, rows, report = merge_redetections(
                props[i], per, r.image.width, r.image.height, match_iou=float(self.opts["match_iou"]),
                dedup_iou=float(self.opts["dedup_iou"]), keep_unconfirmed=bool(self.opts["keep_unconfirmed"]),
                add_threshold={d.name: self._threshold(d.name, "add_threshold") for d in self.detectors},
                proposal_expert=self.proposal_expert)
            report["queries"] = queries[i]
            meta = dict(stage=self.name, model=",".join(str(d.model) for d in self.detectors), parse=report)
            r.set("merged", render_model(items), seconds=dt, **meta)
            r.set("entities", rows, **meta)
        return records


__all__ = ["ProposalStage", "RedetectStage"]
