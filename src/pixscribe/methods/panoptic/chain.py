"""The model stages of panoptic captioning (PancapChain's four, the entity-aware caption and
the consistency check): :class:`GenerateStage` with request builders and parsers.

Every request is one fresh single-turn conversation laid out for a serving engine's prefix
cache: the image first (the same square-padded picture at every stage of one record), then
the stage's ``preamble`` (the same text at every stage), then its ``prompt``, then the list
it works on as quoted data. A stage's parse also says what it dropped (duplicates, "none",
malformed items); that goes into the provenance of the fields it sets (``parse``).

Coordinates are PancapChain's model format (:mod:`pixscribe.methods.panoptic.boxes`): integers
0..999 on the image padded to a square as LLaVA's ``pad`` mode does it. With ``pad`` on
(the default) the stage sends that square, padded in ``pad_color`` (CLIP's mean colour, as
LLaVA pads), so any VLM sees the frame its coordinates refer to; with ``pad`` off it sends
the image as it is, for a model whose own processor pads (PancapChain's LLaVA).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

from ...backends.base import Backend, GenerationRequest, GenerationResult
from ...record import Record, prompt_sha
from ...stages.generate import REPORT, GenerateStage, quote, sampling_of
from . import entities as E
from . import official as O
from .boxes import ModelItem, pad_geometry, render_model
from .caption import STRUCTURED_SCHEMA, plain, render_structured, to_reference
from .prompts import CONSISTENCY_SCHEMA

PAD_COLOR = (122, 116, 104)  # int(255 * CLIP's image_mean), the colour LLaVA's expand2square pads with


# ---- the request ---------------------------------------------------------------------------


def square(image: Any, color: tuple[int, int, int] = PAD_COLOR) -> Any:
    """``image`` pasted on a square of side max(W, H), centred on its short side at
    ``(long - short) // 2`` (LLaVA's ``expand2square``); a square image is returned as it is."""
    from PIL import Image

    w, h = image.width, image.height
    if w == h:
        return image
    side, ox, oy = pad_geometry(w, h)
    out = Image.new("RGB", (side, side))  # zeroed memory: only the padding is filled below
    color = tuple(color)
    for band in ((0, 0, side, oy), (0, oy + h, side, side), (0, oy, ox, oy + h), (ox + w, oy, side, oy + h)):
        if band[2] > band[0] and band[3] > band[1]:
            out.paste(color, band)
    out.paste(image, (ox, oy))
    return out


# (id of a live source image, colour) -> its square. No lock: dict get/setdefault/pop are
# atomic under the GIL, and a finaliser may run inside any allocation (a lock held there could
# deadlock against it)
_SQUARES: dict[tuple[int, tuple[int, ...]], Any] = {}


def stage_image(rec: Record, opts: dict[str, Any]) -> Any:
    """The picture every stage of this record sends: the decoded image, padded to a square
    unless ``pad`` is off. The square is made once per decoded image and kept only as long
    as that image lives (a finaliser drops it), so the stages of one record send the very
    same pixels (and an HTTP backend the same bytes) without the padding being redone, and
    no record holds a square after its image was dropped."""
    if not opts.get("pad", True):
        return rec.image
    color = tuple(int(c) for c in (opts.get("pad_color") or PAD_COLOR))
    key = (id(rec.image), color)
    hit = _SQUARES.get(key)
    if hit is not None:
        return hit
    img = square(rec.image, color)  # type: ignore[arg-type]
    kept = _SQUARES.setdefault(key, img)
    if kept is img:
        weakref.finalize(rec.image, _SQUARES.pop, key, None)
    return kept


def stage_text(opts: dict[str, Any], data: Sequence[tuple[str, str]] = ()) -> str:
    """Preamble, instruction, then each (label, text) as quoted data, one per line."""
    head = "\n\n".join(p for p in (opts.get("preamble"), opts.get("prompt")) if p)
    return "\n".join([head, *(quote(text, label) for label, text in data)])


def build_from(*fields: tuple[str, str], schema: dict[str, Any] | None = None) -> Callable[..., GenerationRequest]:
    """A builder: the record's image, then the text with ``fields`` (field, label) quoted."""

    def build(rec: Record, opts: dict[str, Any]) -> GenerationRequest:
        if rec.image is None:
            raise ValueError("no image")
        data = [(label, str(rec.get(f) or "")) for f, label in fields]
        return GenerationRequest.simple(stage_text(opts, data), [stage_image(rec, opts)], sampling=sampling_of(opts),
                                        json_schema=schema if opts.get("structured", True) else None, id=rec.id)

    return build


def official_from(field: str | None = None) -> Callable[..., GenerationRequest]:
    """A builder for ``prompt_set: official``: the image, then the prompt, then (after one space)
    the list of ``field`` as it is, no preamble and no quoting (the official requests)."""

    def build(rec: Record, opts: dict[str, Any]) -> GenerationRequest:
        if rec.image is None:
            raise ValueError("no image")
        text = opts["prompt"] if field is None else f"{opts['prompt']} {rec.get(field) or ''}"
        return GenerationRequest.simple(text, [stage_image(rec, opts)], sampling=sampling_of(opts), id=rec.id)

    return build


# ---- the parsers ---------------------------------------------------------------------------


def _size(rec: Record) -> tuple[int, int]:
    if rec.image is not None:
        return rec.image.width, rec.image.height
    if not (rec.width and rec.height):
        raise ValueError("the image size is unknown")
    return int(rec.width), int(rec.height)


def parse_localize(rec: Record, res: GenerationResult) -> dict[str, Any]:
    c = E.keep_inside(E.clean_boxes(res.text), *_size(rec))
    return {"boxes": c.text(), REPORT: c.report()}


def parse_tag(rec: Record, res: GenerationResult) -> dict[str, Any]:
    c = E.keep_inside(E.clean_pairs(res.text), *_size(rec))
    return {"tagged": c.text(), REPORT: c.report()}


def parse_discover(rec: Record, res: GenerationResult) -> dict[str, Any]:
    tagged = E.parse_list(rec.get("tagged"))
    w, h = _size(rec)
    c = E.keep_inside(E.parse_missing(res.text, tagged), w, h)
    located = [it.box for it in E.parse_list(rec.get("boxes"))]
    return {"missing": c.text(), "merged": render_model(E.merge_pairs(tagged, c.items)),
            "entities": E.entity_rows(tagged, c.items, w, h, located), REPORT: c.report()}


def parse_caption(rec: Record, res: GenerationResult) -> dict[str, Any]:
    w, h = _size(rec)
    if res.parsed is not None:  # the structured variant: prose rendered from the JSON
        text, problems = render_structured(res.parsed, w, h)
        out: dict[str, Any] = {"caption": text, "caption_plain": plain(text), "panoptic_json": res.parsed}
        return {**out, REPORT: {"problems": problems} if problems else {}}
    cap, bad = to_reference(res.text, w, h)
    return {"caption": cap, "caption_plain": plain(cap), REPORT: {"problems": [str(p) for p in bad]} if bad else {}}


def official_localize(rec: Record, res: GenerationResult) -> dict[str, Any]:
    c = O.read_boxes(res.text)
    return {"boxes": c.text(), REPORT: c.report()}


def official_tag(rec: Record, res: GenerationResult) -> dict[str, Any]:
    c = O.read_pairs(res.text)
    return {"tagged": c.text(), REPORT: c.report()}


def official_discover(rec: Record, res: GenerationResult) -> dict[str, Any]:
    base, merged = O.merge(rec.get("tagged"), res.text)
    added = merged.items[len(base):]
    located = [it.box for it in O.read_boxes(rec.get("boxes")).items]
    rows = E.entity_rows(base, added, *_size(rec), located)
    return {"missing": O.render(added), "merged": merged.text(), "entities": rows,
            REPORT: {**merged.report(), "items": len(added)}}


def _numbered(text: str | None) -> list[tuple[str, ModelItem]]:
    return [(f"E{i + 1}", it) for i, it in enumerate(E.parse_list(text))]


def numbered_list(text: str | None) -> str:
    """``E1 = dog <box>[[...]]</box>; E2 = ...``: the merged list with ids to answer by."""
    return "; ".join(f"{i} = {render_model([it])}" for i, it in _numbered(text))


def parse_consistency(rec: Record, res: GenerationResult) -> dict[str, Any]:
    ids = {i: n for n, (i, _) in enumerate(_numbered(rec.get("merged")))}
    ents = rec.get("entities") or []
    flagged, unknown = [], []
    for c in (res.parsed or {}).get("contradicted", []):
        n = ids.get(str(c.get("id", "")).strip())
        if n is None:
            unknown.append(str(c.get("id")))
            continue
        e = ents[n] if n < len(ents) else {}
        flagged.append({"index": n, "id": f"E{n + 1}", "tag": e.get("tag"), "box_norm": e.get("box_norm"),
                        "reason": str(c.get("reason", ""))})
    value = {"checked": len(ids), "contradicted": flagged, **({"unknown_ids": unknown} if unknown else {})}
    return {"consistency": value}


# ---- the stage -----------------------------------------------------------------------------


class PanopticStage(GenerateStage):
    """A :class:`GenerateStage` whose prompt hash covers the preamble too (its parse reports
    what the cleaning dropped under ``_report``, kept in provenance by GenerateStage). Every
    panoptic stage reads values out of its reply (boxes, tags, JSON; the caption's boxes too),
    so a reply cut at the token limit is asked again with ``retry_max_new_tokens`` and, cut
    again, fails the row with ``truncated:``: a cut list is never passed on as the list."""

    def __init__(self, name: str, backend: Backend, options: dict[str, Any], **kw: Any):
        super().__init__(name, backend, options, structured=True, **kw)
        self.prompt_sha = prompt_sha(self.opts.get("preamble"), self.opts.get("prompt"), self.sampling.max_new_tokens,
                                     self.sampling.temperature, self.sampling.top_p, self.opts.get("structured"))


def chain_stage(name: str, backend: Backend, opts: dict[str, Any], identity: dict[str, Any]) -> PanopticStage:
    """One of PancapChain's stages (``localize``, ``tag``, ``discover``, ``caption``) by name; with
    ``prompt_set: official`` its requests and lists are the official code's (:func:`official_from`,
    :mod:`pixscribe.methods.panoptic.official`)."""
    spec: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[..., GenerationRequest], Any]] = {
        "localize": ((), ("boxes",), build_from(), parse_localize),
        "tag": (("boxes",), ("tagged",), build_from(("boxes", "boxes")), parse_tag),
        "discover": (("boxes", "tagged"), ("missing", "merged", "entities"), build_from(("tagged", "entities")),
                     parse_discover),
        "caption": (("merged",), ("caption", "caption_plain") + (("panoptic_json",) if opts.get("structured") else ()),
                    build_from(("merged", "entities"), schema=STRUCTURED_SCHEMA), parse_caption),
    }
    needs, provides, build, parse = spec[name]
    if opts.get("prompt_set") == "official":
        build, parse = {"localize": (official_from(), official_localize),
                        "tag": (official_from("boxes"), official_tag),
                        "discover": (official_from("tagged"), official_discover),
                        "caption": (official_from("merged"), parse_caption)}[name]
    return PanopticStage(name, backend, opts, provides=provides, needs=needs, build=build, parse=parse,
                         identity=identity)


def consistency_stage(backend: Backend, opts: dict[str, Any], identity: dict[str, Any]) -> PanopticStage:
    """A second VLM checks the entity list and the caption against the image and names the
    entities the image contradicts (``consistency`` column)."""

    def build(rec: Record, opts: dict[str, Any]) -> GenerationRequest:
        if rec.image is None:
            raise ValueError("no image")
        text = stage_text(opts, [("entities", numbered_list(rec.get("merged"))), ("description", rec.get("caption"))])
        return GenerationRequest.simple(text, [stage_image(rec, opts)], sampling=sampling_of(opts),
                                        json_schema=CONSISTENCY_SCHEMA, id=rec.id)

    return PanopticStage("consistency", backend, opts, provides=("consistency",), needs=("merged", "entities",
                         "caption"), build=build, parse=parse_consistency, identity=identity)


__all__ = ["PAD_COLOR", "PanopticStage", "build_from", "chain_stage", "consistency_stage", "numbered_list",
           "square", "stage_image", "stage_text"]
