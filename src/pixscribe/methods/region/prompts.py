"""Visual prompting modes (``--region-prompt``): how a region is shown to any VLM.

Each mode is a function ``(image, regions, options) -> [RegionPrompt, ...]``: the images
and the text of each request, and which regions it answers. :func:`build_prompts` picks the
mode; :meth:`RegionPrompt.request` makes the backend request; :func:`read_answer` turns the
backend's result into one caption or error per region.

- ``focal``: the full image and a focal crop (see :func:`.geometry.focal_box`), the region
  outlined on both unless ``outline=False``. One request per region, two images.
- ``overlay``: one image, the outside dimmed (``overlay="dim"``) or the region outlined
  (``overlay="contour"``). One request per region.
- ``som``: set-of-mark: every region outlined and numbered on one image, one request
  answering for all of them as JSON ``{"1": "...", "2": "..."}`` (regions with different
  attributes or instructions go in separate requests; at most ``som_max_marks`` each).
- ``box``: the unmodified image and the box coordinates in the text, in the model's
  convention (:mod:`.boxtext`).
- ``crop``: the region's box cut out, alone (a baseline).

Task ``global`` makes one request per image instead (``crop`` cannot: it hides the image).
Regions with an error are skipped here; the caller keeps their errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ...backends.base import GenerationRequest, GenerationResult, Sampling
from .boxtext import CONVENTIONS, BoxText, convention_for, format_box
from .draw import (
    OUTLINE_NAME,
    badge_font_size,
    dim_outside,
    draw_outline,
    outline_width,
    outlined,
    paste_badge,
    to_array,
)
from .geometry import focal_box, label_point, outward
from .tasks import marks_text, task_text
from .types import Region

MODES = ("focal", "overlay", "som", "box", "crop")
OVERLAYS = ("dim", "contour")


@dataclass
class PromptOptions:
    """What every mode needs to know; the defaults are the documented ones."""

    task: str = "dense"
    attribute: str | None = None  # for task attribute, when a region has none of its own
    own_attribute: bool = False  # task dense: a region with its own attribute is asked for it instead
    outline: bool = True  # focal: outline on both images; som always outlines
    overlay: str = "dim"  # overlay mode: "dim" the outside or draw a "contour"
    dim: float = 0.35  # brightness kept outside the region (overlay dim)
    min_size: int = 48  # focal: the box is grown to at least this many pixels
    context: float = 1.0  # focal: expanded by this many of its own widths/heights per side
    crop_min_side: int = 384  # focal/crop: smaller crops are upscaled to this longer side (0: never)
    som_max_marks: int = 50
    box_convention: str | None = None  # box mode; None: from ``model`` / ``model_type`` if they name a family
    model: str | None = None
    model_type: str | None = None
    input_size: tuple[int, int] | None = None  # box mode, pixels: the model's input (w, h)


@dataclass
class RegionPrompt:
    """One request's worth: images, text, and the region keys it answers (mark order for som)."""

    mode: str
    task: str
    images: list[Any]
    text: str
    keys: list[str]
    attribute: str | None = None
    json_schema: dict[str, Any] | None = None
    boxes: list[BoxText] = field(default_factory=list)  # box mode: what the text says

    def request(self, *, sampling: Sampling | None = None, id: str | None = None,
                system: str | None = None) -> GenerationRequest:  # fmt: skip
        return GenerationRequest.simple(self.text, self.images, system=system, sampling=sampling,
                                        json_schema=self.json_schema, id=id)  # fmt: skip


Answer = tuple[str | None, str | None]  # (caption, error)


def read_answer(prompt: RegionPrompt, result: GenerationResult) -> dict[str, Answer]:
    """One (caption, error) per region key of ``prompt`` from the backend's ``result``.

    Errors are in the vocabulary of every method (``generate:``, ``schema:``, ``truncated:``).
    A caption cut at the token limit is kept (prose); a set-of-mark answer cut at the limit is
    ``truncated:`` unless it is complete JSON as it stands: it is never repaired into captions."""
    from ...backends.structured import reply_error

    if not result.ok:
        return {k: (None, reply_error(result.error)) for k in prompt.keys}
    if prompt.json_schema is None:
        text = (result.text or "").strip()
        ans: Answer = (text, None) if text else (None, "generate: empty answer")
        return {k: ans for k in prompt.keys}
    return _read_marks(prompt, result)


def _read_marks(prompt: RegionPrompt, result: GenerationResult) -> dict[str, Answer]:
    from ...backends.structured import SchemaError, check_reply, strict_json, validate

    obj = result.parsed
    if obj is None:
        try:
            if result.truncated:  # a cut reply counts only if it is complete as it stands
                obj = validate(strict_json(result.text or ""), prompt.json_schema or {})
            else:
                obj, _ = check_reply(result.text, prompt.json_schema or {})
        except SchemaError as exc:
            why = (f"truncated: the reply was cut at the token limit (finish_reason=length) ({exc})" if result.truncated
                   else f"schema: {exc}")
            return {k: (None, why) for k in prompt.keys}
    out: dict[str, Answer] = {}
    for i, k in enumerate(prompt.keys, 1):
        v = obj.get(str(i)) if isinstance(obj, dict) else None
        text = v.strip() if isinstance(v, str) else ""
        out[k] = (text, None) if text else (None, f"som: the answer has no description for mark {i}")
    return out


def build_prompts(mode: str, image: Image.Image, regions: Sequence[Region], options: PromptOptions) -> list[RegionPrompt]:
    """The requests of ``mode`` for the valid ``regions`` of ``image`` (scaled to its size)."""
    if mode not in MODES:
        raise ValueError(f"unknown region prompt mode {mode!r}; choose from {', '.join(MODES)}")
    rs = [r.scaled(image.width, image.height) for r in regions if r.ok]
    if not rs:
        return []
    if options.task == "global":
        return [_global(mode, image, rs, options)]
    return _MODES[mode](image, rs, options)


def _attr(r: Region, o: PromptOptions) -> str | None:
    return r.attribute or o.attribute


def region_task(r: Region, o: PromptOptions) -> str:
    """The task ``r`` is asked: ``o.task``, except that with ``own_attribute`` (the region
    method's default: ``--task`` not given) a region with its own attribute is asked for it."""
    return "attribute" if o.task == "dense" and o.own_attribute and r.attribute else o.task


def _single(mode: str, r: Region, o: PromptOptions, images: list[Any], region_text: str,
            boxes: Sequence[BoxText] = ()) -> RegionPrompt:  # fmt: skip
    task = region_task(r, o)
    text = task_text(task, region_text, attribute=_attr(r, o), instruction=r.instruction)
    return RegionPrompt(mode, task, images, text, [r.key], _attr(r, o), boxes=list(boxes))


def _upscale(im: Image.Image, min_side: int) -> Image.Image:
    side = max(im.size)
    if not min_side or side >= min_side:
        return im
    s = min_side / side
    return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC)


def focal(image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> list[RegionPrompt]:
    """Full image + focal crop per region; the outline, when on, is drawn before cropping."""
    out = []
    t = outline_width(image.width, image.height)
    for r in regions:
        full = outlined(image, [r], t) if o.outline else image
        crop = _upscale(full.crop(focal_box(r.box, image.width, image.height, o.min_size, o.context)), o.crop_min_side)  # type: ignore[arg-type]
        where = (f"the region outlined in {OUTLINE_NAME}" if o.outline else "the region shown in close-up")
        text = f"{where} (the first image is the whole picture, the second a close-up around the region)"
        out.append(_single("focal", r, o, [full, crop], text))
    return out


def overlay(image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> list[RegionPrompt]:
    """One image per region: the outside dimmed, or the region outlined."""
    if o.overlay not in OVERLAYS:
        raise ValueError(f"unknown overlay {o.overlay!r}; choose from {', '.join(OVERLAYS)}")
    base = to_array(image) if o.overlay == "dim" else None
    t = outline_width(image.width, image.height)
    out = []
    for r in regions:
        if base is not None:
            arr = dim_outside(base, r, o.dim)
            text = "the highlighted region (the rest of the image is darkened)"
            img = Image.fromarray(arr)
        else:
            img = outlined(image, [r], t)
            text = f"the region outlined in {OUTLINE_NAME}"
        out.append(_single("overlay", r, o, [img], text))
    return out


def crop(image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> list[RegionPrompt]:
    """The region's box alone, upscaled when small."""
    return [_single("crop", r, o, [_upscale(image.crop(outward(r.box, image.width, image.height)), o.crop_min_side)],  # type: ignore[arg-type]
                    "the object or area shown in this image") for r in regions]  # fmt: skip


def box_convention(o: PromptOptions) -> str:
    """The convention box prompts are written in: ``o.box_convention``, else the family that
    ``o.model_type`` or ``o.model`` names; never a guess (``--method region`` decides it from
    the model before the run: :mod:`.frame`)."""
    conv = o.box_convention or convention_for(o.model, o.model_type)
    if conv is None:
        raise ValueError(f"box prompts need the model's box convention and model {o.model!r} names no known family: "
                         f"set box_convention ({', '.join(CONVENTIONS)})")  # fmt: skip
    return conv


def box(image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> list[RegionPrompt]:
    """The unmodified image; the box in the text, in the model's coordinate convention."""
    conv = box_convention(o)
    out = []
    for r in regions:
        bt = format_box(r.box, image.width, image.height, conv, o.input_size)  # type: ignore[arg-type]
        out.append(_single("box", r, o, [image], f"the region inside the bounding box {bt.text} (given as {bt.explain})", [bt]))
    return out


def draw_marks(image: Image.Image, regions: Sequence[Region]) -> Image.Image:
    """Every region outlined and numbered 1..n (the badge at the point deepest inside it)."""
    arr = to_array(image)
    t = outline_width(image.width, image.height)
    for r in regions:
        draw_outline(arr, r, t)
    fs = badge_font_size(image.width, image.height)
    for i, r in enumerate(regions, 1):
        at = label_point(r.mask, r.box) if r.mask is not None else ((r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2)  # type: ignore[index,arg-type]
        paste_badge(arr, i, at, fs)
    return Image.fromarray(arr)


_MARKS_PHRASE = f"each outlined in {OUTLINE_NAME}, with its number on a white label inside it"


def som(image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> list[RegionPrompt]:
    """Set-of-mark: one numbered image and one JSON request per group of regions."""
    groups: dict[tuple[str, str | None, str | None], list[Region]] = {}
    for r in regions:  # one request per task, attribute (task attribute) and instruction
        task = region_task(r, o)
        groups.setdefault((task, _attr(r, o) if task == "attribute" else None, r.instruction), []).append(r)
    out = []
    for (task, attribute, instruction), rs in groups.items():
        for s in range(0, len(rs), max(1, o.som_max_marks)):
            part = rs[s : s + o.som_max_marks]
            text = marks_text(task, _MARKS_PHRASE, len(part), attribute=attribute, instruction=instruction)
            out.append(RegionPrompt("som", task, [draw_marks(image, part)], text, [r.key for r in part], attribute,
                                    json_schema=marks_schema(len(part))))  # fmt: skip
    return out


def marks_schema(n: int) -> dict[str, Any]:
    """JSON schema of a set-of-mark answer: ``{"1": str, ..., "n": str}``, all required."""
    keys = [str(i) for i in range(1, n + 1)]
    return {"type": "object", "properties": {k: {"type": "string"} for k in keys}, "required": keys,
            "additionalProperties": False}  # fmt: skip


def _global(mode: str, image: Image.Image, regions: Sequence[Region], o: PromptOptions) -> RegionPrompt:
    """Task global: one request for the whole image, mentioning every region."""
    keys = [r.key for r in regions]
    boxes: list[BoxText] = []
    if mode == "crop":
        raise ValueError("task 'global' describes the whole image; prompt mode 'crop' shows a region alone "
                         "(use focal, overlay, som or box)")  # fmt: skip
    if mode == "som":
        images, where = [draw_marks(image, regions)], f"numbered, {_MARKS_PHRASE}"
    elif mode == "box":
        conv = box_convention(o)
        boxes = [format_box(r.box, image.width, image.height, conv, o.input_size) for r in regions]  # type: ignore[arg-type]
        images, where = [image], f"inside the bounding boxes {', '.join(b.text for b in boxes)}, each given as {boxes[0].explain}"
    else:  # focal and overlay: the regions outlined on the whole image
        images, where = [outlined(image, regions, outline_width(image.width, image.height))], f"outlined in {OUTLINE_NAME}"
    instruction = next((r.instruction for r in regions if r.instruction), None)
    text = task_text("global", where, instruction=instruction, count=len(regions))
    return RegionPrompt(mode, "global", images, text, keys, None, boxes=boxes)


_MODES: dict[str, Callable[[Image.Image, Sequence[Region], PromptOptions], list[RegionPrompt]]] = {
    "focal": focal, "overlay": overlay, "som": som, "box": box, "crop": crop,
}  # fmt: skip


__all__ = [
    "MODES",
    "OVERLAYS",
    "PromptOptions",
    "RegionPrompt",
    "box",
    "box_convention",
    "build_prompts",
    "region_task",
    "crop",
    "draw_marks",
    "focal",
    "marks_schema",
    "overlay",
    "read_answer",
    "som",
]  # fmt: skip
