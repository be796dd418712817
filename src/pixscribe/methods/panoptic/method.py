"""Panoptic captioning (arXiv 2505.16334): every entity with its tag and box, its attributes,
the relations between entities and the global state of the image.

    pixscribe caption photos -o out --method panoptic                      # PancapChain, any VLM
    pixscribe caption photos -o out --method panoptic --entities experts   # Florence-2 + detectors
    pixscribe caption photos -o out --method panoptic --structured         # JSON, prose rendered from it

PancapChain (``entities: chain``, the default): ``localize`` -> ``tag`` -> ``discover`` ->
``caption``, four VLM requests per image, each a fresh conversation with the image first and
the previous stage's cleaned list as quoted data. Entity-aware (``entities: experts``):
``proposals`` (Florence-2) -> [``tag`` (the VLM, with ``tagger: vlm``)] -> ``redetect``
(Grounding DINO / OWLv2) -> ``caption`` (one VLM request carrying the entity list). With
``models: {consistency: {...}}`` (``--consistency-vlm M``) a ``consistency`` stage has that
second VLM flag the entities the image contradicts.

Columns: ``caption`` (inline boxes, reference format), ``caption_plain``, ``entities``
(tag, ``box_norm``, ``box`` in pixels, ``found_by``), the lists of the stages (model format)
and, per field, provenance with what each stage's parse dropped. Method-level choices are
options of the ``caption`` stage (``entities``, ``structured``) and of ``proposals``
(``tagger``, ``task``); see docs/panoptic.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...api import Flag, Method, MethodContext, MethodError, ModelRole, Stage, StageOptions, option, register_method
from ...experts import build_expert
from . import prompts as P
from .chain import PAD_COLOR, chain_stage, consistency_stage
from .proposals import ProposalStage, RedetectStage

VARIANTS = ("chain", "experts")
PROMPT_SETS = ("pixscribe", "official")
TAGGERS = ("label", "vlm")
FLORENCE_TASKS = ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>")
DETECTORS = ("grounding_dino", "owlv2")


# ---- the stages' options -----------------------------------------------------------------------
@dataclass(frozen=True)
class RequestOptions(StageOptions):
    """A VLM request of the method: the official inference settings (temperature 0, 1024 new
    tokens) and the request layout."""

    prompt: str = option(P.TAG, "the request (the previous stage's list follows as quoted data)")
    preamble: str | None = option(P.PREAMBLE, "the text before the request (null: none)")
    max_new_tokens: int = option(1024, "most tokens generated per reply")
    temperature: float = option(0.0, "sampling temperature; 0 is greedy")
    pad: bool = option(True, "pad the image to a square first (LLaVA's expand2square)")
    pad_color: list[int] = option(list(PAD_COLOR), "the padding colour, RGB")
    retry_max_new_tokens: int | None = option(None, "the limit a cut reply is asked again with "
                                              "(null: twice max_new_tokens)")


@dataclass(frozen=True)
class ChainOptions(RequestOptions):
    """A PancapChain stage."""

    prompt_set: str | None = option(None, "pixscribe (null) or official: PancapChain's official requests; set once "
                                    "for the chain", choices=("pixscribe", "official"))


@dataclass(frozen=True)
class LocalizeOptions(ChainOptions):
    """PancapChain's first request: every entity's box."""

    prompt: str = option(P.LOCALIZE, "the request")


@dataclass(frozen=True)
class TagOptions(ChainOptions):
    """Each box's tag (the experts variant's ``tag`` has no ``prompt_set``)."""

    prompt: str = option(P.TAG, "the request (the boxes follow as quoted data)")


@dataclass(frozen=True)
class DiscoverOptions(ChainOptions):
    """The entities the first two requests missed."""

    prompt: str = option(P.DISCOVER, "the request (the tagged boxes follow as quoted data)")


@dataclass(frozen=True)
class CaptionOptions(ChainOptions):
    """The panoptic caption (the primary stage; its options choose the method's shape)."""

    prompt: str = option(P.CAPTION, "the request (the entity list follows as quoted data; --prompt)")
    entities: str = option("chain", "chain (PancapChain) or experts (Florence-2 proposals and detectors)",
                           choices=VARIANTS)
    structured: bool = option(False, "the caption as JSON, prose rendered from it")


@dataclass(frozen=True)
class ExpertsTagOptions(RequestOptions):
    """``entities: experts`` with ``tagger: vlm``: the VLM tags each proposal."""


@dataclass(frozen=True)
class ConsistencyOptions(RequestOptions):
    """A second VLM flags the entities the image contradicts (``models.consistency``)."""

    prompt: str = option(P.CONSISTENCY, "the request (the entities and the caption follow as quoted data)")
    max_new_tokens: int = option(512, "most tokens generated per reply")


@dataclass(frozen=True)
class ProposalOptions(StageOptions):
    """``entities: experts``: Florence-2's proposals."""

    task: str = option("<OD>", "the Florence-2 task", choices=FLORENCE_TASKS)
    tagger: str = option("label", "label (Florence-2's own labels) or vlm (a tag stage; the default for "
                         "<REGION_PROPOSAL>)", choices=TAGGERS)
    max_proposals: int = option(64, "most proposals kept per image")


@dataclass(frozen=True)
class RedetectOptions(StageOptions):
    """``entities: experts``: each tag looked for again by the detectors; boxes merged."""

    detectors: list[str] | str = option(["grounding_dino"], "one detector or a list", choices=DETECTORS)
    box_threshold: float | dict[str, float] | None = option(None, "one threshold or one per detector "
                                                            "(null: grounding_dino 0.3, owlv2 0.1)")
    text_threshold: float = option(0.25, "Grounding DINO's text threshold")
    add_threshold: float | dict[str, float] | None = option(None, "a detection no proposal matches is added above "
                                                            "this (null: grounding_dino 0.4, owlv2 0.2)")
    match_iou: float = option(0.5, "the overlap at which a detection confirms a proposal")
    dedup_iou: float = option(0.7, "the overlap at which two boxes of one tag are one entity")
    keep_unconfirmed: bool = option(True, "keep the proposals no detector confirms")
    max_queries: int = option(32, "most tags queried per image")


OPTIONS = {"localize": LocalizeOptions, "tag": TagOptions, "discover": DiscoverOptions, "caption": CaptionOptions,
           "proposals": ProposalOptions, "redetect": RedetectOptions, "consistency": ConsistencyOptions}


def _peek(ctx: MethodContext, stage: str, key: str, default: Any, allowed: tuple[Any, ...] | None = None) -> Any:
    """An option that shapes the method (which stages, which defaults), read before the
    stage's options are resolved (and then checked again by them)."""
    value = (ctx.config.stages or {}).get(stage, {}).get(key, default)
    if allowed is not None and value not in allowed:
        raise MethodError(f"stages.{stage}.{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
    return value


def _chain_options(ctx: MethodContext, stage: str, prompt_set: str | None, primary: bool = False,
                   **kw: Any) -> dict[str, Any]:
    """A chain stage's options. ``prompt_set`` is None for pixscribe's own (so the option is left
    out of the fingerprints of runs made before it existed); ``official``: the official prompt, no
    preamble (docs/panoptic.md)."""
    defaults: dict[str, Any] = {**kw, "prompt_set": prompt_set}
    if prompt_set == "official":
        defaults.update(prompt=P.OFFICIAL[stage], preamble=None)
    opts = ctx.options(stage, OPTIONS[stage], primary=primary, **defaults)
    opts["prompt_set"] = None if opts["prompt_set"] == "pixscribe" else opts["prompt_set"]
    if opts["prompt_set"] != prompt_set:
        raise MethodError(f"stages.{stage}.prompt_set: set the prompt set once for the whole chain "
                          f"(--prompt-set, or stages.caption.prompt_set)")
    return opts


def _chain_front(ctx: MethodContext, vlm: Any, ident: dict[str, Any], prompt_set: str | None) -> list[Stage]:
    return [chain_stage(n, vlm, _chain_options(ctx, n, prompt_set), ident) for n in ("localize", "tag", "discover")]


def _experts_front(ctx: MethodContext, vlm: Any, ident: dict[str, Any]) -> list[Stage]:
    task = _peek(ctx, "proposals", "task", "<OD>", FLORENCE_TASKS)
    tagger = _peek(ctx, "proposals", "tagger", "vlm" if task == "<REGION_PROPOSAL>" else "label", TAGGERS)
    if task == "<REGION_PROPOSAL>" and tagger == "label":
        raise MethodError("stages.proposals: <REGION_PROPOSAL> boxes have no labels; use tagger: vlm")
    popts = ctx.options("proposals", ProposalOptions, task=task, tagger=tagger)
    stages: list[Stage] = [ProposalStage(build_expert("dense", ctx.config), popts)]
    if tagger == "vlm":
        stages.append(chain_stage("tag", vlm, ctx.options("tag", ExpertsTagOptions), ident))
    ropts = ctx.options("redetect", RedetectOptions)
    names = ropts["detectors"] = [ropts["detectors"]] if isinstance(ropts["detectors"], str) else list(ropts["detectors"])
    unknown = sorted(set(names) - set(DETECTORS))
    if unknown or not names:
        raise MethodError(f"stages.redetect.detectors: {', '.join(unknown) or 'none'}; choose from {', '.join(DETECTORS)}")
    stages.append(RedetectStage([build_expert(n, ctx.config) for n in names], ropts))
    return stages


def _caption(ctx: MethodContext, variant: str, vlm: Any, ident: dict[str, Any], prompt_set: str | None) -> Stage:
    structured = bool(_peek(ctx, "caption", "structured", False))
    own = P.STRUCTURED if structured else (P.ENGINE_CAPTION if variant == "experts" else P.CAPTION)
    kw = {} if prompt_set == "official" else {"prompt": own}  # the official prompt: _chain_options
    opts = _chain_options(ctx, "caption", prompt_set, primary=True, entities=variant, structured=structured, **kw)
    return chain_stage("caption", vlm, opts, ident)


def _prompt_set(ctx: MethodContext, variant: str) -> str | None:
    """``official`` or None (pixscribe's own); the official set is PancapChain's four stages only."""
    chosen = _peek(ctx, "caption", "prompt_set", "pixscribe", PROMPT_SETS + (None,))
    if chosen != "official":
        return None
    if variant != "chain" or _peek(ctx, "caption", "structured", False):
        raise MethodError("--prompt-set official is PancapChain's four requests: not with --entities experts "
                          "or --structured")
    return "official"


@register_method(
    "panoptic",
    summary="panoptic captions: every entity with its tag and box, attributes, relations (PancapChain)",
    options=OPTIONS,
    flags=[Flag("entities", "caption", "entities"), Flag("structured", "caption", "structured", switch=True),
           Flag("prompt_set", "caption", "prompt_set"), Flag("consistency_vlm", role="consistency")],
    roles=[ModelRole("vlm", "answers every request of the chain"),
           ModelRole("consistency", "a second VLM flags the entities the image contradicts")],
)
def panoptic(ctx: MethodContext) -> Method:
    variant = _peek(ctx, "caption", "entities", "chain", VARIANTS)
    prompt_set = _prompt_set(ctx, variant)
    vlm, ident = ctx.model("vlm"), ctx.spec("vlm").identity()
    stages = _chain_front(ctx, vlm, ident, prompt_set) if variant == "chain" else _experts_front(ctx, vlm, ident)
    stages.append(_caption(ctx, variant, vlm, ident, prompt_set))
    if "consistency" in (ctx.config.models or {}):
        opts = ctx.options("consistency", ConsistencyOptions)
        stages.append(consistency_stage(ctx.model("consistency"), opts, ctx.spec("consistency").identity()))
    provided = [f for s in stages for f in s.provides if f != "caption"]
    order = ["caption_plain", "entities", "panoptic_json", "consistency", "proposals", "boxes", "tagged", "missing",
             "merged"]
    columns = [c for c in order if c in provided]
    return Method("panoptic", stages, columns, "caption", {"caption": "org_caption"})
