"""Region captioning (issue #12): masked regions described with any VLM, at any granularity.

    pixscribe caption regions.parquet -o out --method region --region-prompt focal --task dense
    pixscribe caption images.jsonl -o out --method region --task attribute --attribute color
    pixscribe caption photos/ -o out --method region --regions auto          # experts propose them

One stage, ``region`` (:class:`pixscribe.stages.region.RegionStage`), whose options (the
flags, or ``stages: {region: {...}}`` / ``-S region.KEY=VALUE``) are all in its fingerprint:

==================  ==========================================================================
option              meaning
==================  ==========================================================================
``prompt_mode``     ``focal`` (default), ``overlay``, ``som``, ``box``, ``crop`` (``--region-prompt``)
``task``            ``dense`` (default), ``attribute``, ``global`` (``--task``)
``attribute``       the attribute for task ``attribute`` when a row has none (``--attribute``)
``outline``         focal: the mask outlined on both images (``--outline/--no-outline``)
``box_to_mask``     ``none`` or ``sam``: boxes become SAM masks (``--box-to-mask``; ``sam`` with auto)
``regions``         the input column of region lists (``regions``), or ``auto`` (``--regions``)
``propose``         auto: ``dense`` (Florence-2), ``grounding_dino`` or ``owlv2`` (with ``--queries``)
``max_regions``     auto: regions kept per image (50)
``box_convention``  box prompts: ``pixels``, ``norm1000``, ``norm1000_yx``, ``norm1_square``;
                    unset, it comes from what the model is (:mod:`pixscribe.region.frame`), and
                    a model that does not say stops the run before it starts
others              ``overlay``, ``dim``, ``min_size``, ``context``, ``crop_min_side``,
                    ``som_max_marks``, ``input_size``, ``box_format``,
                    ``max_new_tokens`` (per region, 256), ``retry_max_new_tokens`` (per region,
                    for a cut set-of-mark reply; default twice ``max_new_tokens``), ``temperature``,
                    ``top_p``; ``requests_per_call`` (64) only bounds memory and is not fingerprinted
==================  ==========================================================================

Columns: ``region`` (one row per region input: the region's output dict) or ``regions`` (one
row per image: a list of them), ``task``, ``attribute``, ``prompt_mode`` and the caption (the
region's, or for task ``global`` the image's). See docs/region.md.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..engine.context import MethodContext
from ..engine.stage import Method, MethodError, register_method
from ..experts import build_expert
from ..region.boxtext import CONVENTIONS
from ..region.frame import resolve as resolve_frame
from ..region.output import REGION_ARROW, REGIONS_ARROW
from ..region.parse import BOX_FORMATS
from ..region.prompts import MODES, OVERLAYS, PromptOptions
from ..region.propose import PROPOSERS, QUERY_PROPOSERS
from ..region.tasks import TASKS
from ..stages.region import PROMPT_KEYS, RENAMED, MaskFiles, RegionStage
from .experts import _expert_identity

DEFAULTS: dict[str, Any] = {
    "prompt_mode": "focal",
    **{f.name: f.default for f in fields(PromptOptions) if f.name in PROMPT_KEYS},
    "box_to_mask": None,  # none, or sam; None: sam with regions auto, else none
    "regions": "regions",
    "box_format": "xyxy",
    "propose": "dense",
    "max_regions": 50,
    "max_new_tokens": 256,
    "retry_max_new_tokens": None,  # a cut set-of-mark reply is asked again with this (None: twice max_new_tokens)
    "temperature": 0.0,
    "top_p": 1.0,
    "requests_per_call": 64,
}
# the options whose default (None) does not tell their type
TYPES: dict[str, Any] = {"attribute": str, "box_to_mask": str, "box_convention": str, "input_size": list}
COLUMNS = ["region", "regions", "task", "attribute", "prompt_mode"]


def _choice(opts: dict[str, Any], key: str, allowed: tuple[Any, ...], flag: str) -> None:
    if opts[key] not in allowed:
        shown = ", ".join(str(a) for a in allowed if a is not None)
        raise MethodError(f"{flag} {opts[key]!r}: choose from {shown}")


def resolve_options(opts: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Checked options, with the defaults that depend on others filled in."""
    o = dict(opts)
    if o.get("attribute") and "task" not in given:
        o["task"] = "attribute"  # --attribute alone asks for that attribute
    if "task" not in given and "own_attribute" not in given:
        o["own_attribute"] = True  # --task not given: a region with its own attribute is asked for it
    _choice(o, "prompt_mode", MODES, "--region-prompt")
    _choice(o, "task", TASKS, "--task")
    _choice(o, "overlay", OVERLAYS, "region.overlay")
    _choice(o, "box_format", BOX_FORMATS, "region.box_format")
    _choice(o, "box_convention", (None, *CONVENTIONS), "region.box_convention")
    if o["attribute"] and o["task"] != "attribute":
        raise MethodError(f"--attribute {o['attribute']!r} applies to --task attribute, not --task {o['task']}")
    if o["task"] == "global" and o["prompt_mode"] == "crop":
        raise MethodError("--task global describes the whole image; --region-prompt crop shows a region alone "
                          "(use focal, overlay, som or box)")  # fmt: skip
    if not isinstance(o["regions"], str) or not o["regions"].strip():
        raise MethodError("--regions: name the input column of region lists, or say auto")
    auto = o["regions"] == "auto"
    o["box_to_mask"] = o["box_to_mask"] or ("sam" if auto else "none")
    _choice(o, "box_to_mask", ("none", "sam"), "--box-to-mask")
    if auto:
        _choice(o, "propose", PROPOSERS, "region.propose")
    return o


def _box_frame(opts: dict[str, Any], backend: Any, revision: str | None) -> None:
    """Box prompts: the box convention from what the model is, or as given, and where it came
    from (recorded); a model that does not say stops the run here, before it starts."""
    if opts["prompt_mode"] != "box":
        return
    frame = resolve_frame(opts.get("box_convention"), backend, revision)
    opts["box_convention"], opts["box_convention_from"] = frame.convention, frame.source


@register_method("region")
def region(ctx: MethodContext) -> Method:
    cfg = ctx.config
    if cfg.prompt is not None or cfg.prompt_file:
        raise MethodError("--method region writes its prompts from --task and --region-prompt (a row's own request "
                          "goes in an 'instruction' column); --prompt does not apply")  # fmt: skip
    given = dict((cfg.stages or {}).get("region", {}))
    opts = resolve_options(ctx.options("region", primary=True, types=TYPES, **DEFAULTS), given)
    if opts["regions"] == "auto" and opts["propose"] in QUERY_PROPOSERS and not cfg.queries:
        raise MethodError(f"--regions auto with {opts['propose']} needs --queries 'cat,dog' (or propose with dense)")
    sam = build_expert("sam", cfg)  # loaded only when a run needs it (points, box_to_mask sam, auto)
    proposer = build_expert(opts["propose"], cfg) if opts["regions"] == "auto" else None
    spec, vlm = ctx.spec("vlm"), ctx.model("vlm")
    _box_frame(opts, vlm, spec.revision)
    stage = RegionStage(vlm, opts, identity=spec.identity(), sam=sam, proposer=proposer,
                        files=MaskFiles(cfg.inputs, cfg.allow_any_path), queries=cfg.queries,
                        sam_identity=_expert_identity(sam),
                        proposer_identity=_expert_identity(proposer) if proposer else None)  # fmt: skip
    return Method("region", [stage], list(COLUMNS), "caption", {"caption": "org_caption", **RENAMED},
                  column_types={"region": REGION_ARROW, "regions": REGIONS_ARROW}, id_column="region_id")
