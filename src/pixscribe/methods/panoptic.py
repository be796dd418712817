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

from typing import Any

from ..engine.context import MethodContext
from ..engine.stage import Method, MethodError, Stage, register_method
from ..experts import build_expert
from ..panoptic import prompts as P
from ..stages.panoptic import PAD_COLOR, chain_stage, consistency_stage
from ..stages.panoptic_experts import ProposalStage, RedetectStage

VARIANTS = ("chain", "experts")
PROMPT_SETS = ("pixscribe", "official")
TAGGERS = ("label", "vlm")
FLORENCE_TASKS = ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>")
DETECTORS = ("grounding_dino", "owlv2")
# one detector or a list; one threshold or one per detector
REDETECT_TYPES = {"detectors": (list, str), "box_threshold": (float, dict), "add_threshold": (float, dict)}
# the official inference settings (temperature 0, 1024 new tokens) and the request layout
# (a reply cut at max_new_tokens is asked again with retry_max_new_tokens, None: twice max_new_tokens)
COMMON: dict[str, Any] = {"preamble": P.PREAMBLE, "max_new_tokens": 1024, "temperature": 0.0, "pad": True,
                          "pad_color": list(PAD_COLOR), "retry_max_new_tokens": None}


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
    own = {"localize": P.LOCALIZE, "tag": P.TAG, "discover": P.DISCOVER, "caption": P.CAPTION}
    official = prompt_set == "official"
    defaults = {**COMMON, "prompt": P.OFFICIAL[stage] if official else own[stage], **kw, "prompt_set": prompt_set}
    if official:
        defaults["preamble"] = None
    opts = ctx.options(stage, primary=primary, **defaults)
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
    popts = ctx.options("proposals", task=task, tagger=tagger, max_proposals=64)
    stages: list[Stage] = [ProposalStage(build_expert("dense", ctx.config), popts)]
    if tagger == "vlm":
        stages.append(chain_stage("tag", vlm, ctx.options("tag", prompt=P.TAG, **COMMON), ident))
    ropts = ctx.options("redetect", types=REDETECT_TYPES, detectors=["grounding_dino"], box_threshold=None,
                        text_threshold=0.25, add_threshold=None, match_iou=0.5, dedup_iou=0.7, keep_unconfirmed=True,
                        max_queries=32)
    names = ropts["detectors"] = [ropts["detectors"]] if isinstance(ropts["detectors"], str) else list(ropts["detectors"])
    unknown = sorted(set(names) - set(DETECTORS))
    if unknown or not names:
        raise MethodError(f"stages.redetect.detectors: {', '.join(unknown) or 'none'}; choose from {', '.join(DETECTORS)}")
    stages.append(RedetectStage([build_expert(n, ctx.config) for n in names], ropts))
    return stages


def _caption(ctx: MethodContext, variant: str, vlm: Any, ident: dict[str, Any], prompt_set: str | None) -> Stage:
    structured = bool(_peek(ctx, "caption", "structured", False))
    own = P.STRUCTURED if structured else (P.ENGINE_CAPTION if variant == "experts" else P.CAPTION)
    kw = {} if prompt_set == "official" else {"prompt": own}
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


@register_method("panoptic")
def panoptic(ctx: MethodContext) -> Method:
    variant = _peek(ctx, "caption", "entities", "chain", VARIANTS)
    prompt_set = _prompt_set(ctx, variant)
    vlm, ident = ctx.model("vlm"), ctx.spec("vlm").identity()
    stages = _chain_front(ctx, vlm, ident, prompt_set) if variant == "chain" else _experts_front(ctx, vlm, ident)
    stages.append(_caption(ctx, variant, vlm, ident, prompt_set))
    if "consistency" in (ctx.config.models or {}):
        opts = ctx.options("consistency", prompt=P.CONSISTENCY, **{**COMMON, "max_new_tokens": 512})
        stages.append(consistency_stage(ctx.model("consistency"), opts, ctx.spec("consistency").identity()))
    provided = [f for s in stages for f in s.provides if f != "caption"]
    order = ["caption_plain", "entities", "panoptic_json", "consistency", "proposals", "boxes", "tagged", "missing",
             "merged"]
    columns = [c for c in order if c in provided]
    return Method("panoptic", stages, columns, "caption", {"caption": "org_caption"})
