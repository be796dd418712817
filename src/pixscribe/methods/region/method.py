"""Region captioning (issue #12): masked regions described with any VLM, at any granularity.

    pixscribe caption regions.parquet -o out --method region --region-prompt focal --task dense
    pixscribe caption images.jsonl -o out --method region --task attribute --attribute color
    pixscribe caption photos/ -o out --method region --regions auto          # experts propose them

One stage, ``region`` (:class:`pixscribe.methods.region.stage.RegionStage`), whose options are
declared once below (:class:`RegionOptions`: each one's type, default and meaning; the table in
docs/options.md is generated from it). The flags ``--region-prompt``, ``--task``,
``--attribute``, ``--outline/--no-outline``, ``--box-to-mask`` and ``--regions`` set them, as do
``stages: {region: {...}}`` and ``-S region.KEY=VALUE``. All are in the stage's fingerprint but
``requests_per_call``, which only bounds memory. ``box_convention`` unset comes from what the
model is (:mod:`pixscribe.methods.region.frame`); a model that does not say stops the run before it
starts.

Columns: ``region`` (one row per region input: the region's output dict) or ``regions`` (one
row per image: a list of them), ``task``, ``attribute``, ``prompt_mode`` and the caption (the
region's, or for task ``global`` the image's). See docs/region.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...api import Flag, Method, MethodContext, MethodError, ModelRole, StageOptions, option, register_method
from ...experts import build_expert
from ...stages.experts import expert_identity
from .boxtext import CONVENTIONS
from .frame import resolve as resolve_frame
from .output import REGION_ARROW, REGIONS_ARROW
from .parse import BOX_FORMATS
from .prompts import MODES, OVERLAYS, PromptOptions
from .propose import PROPOSERS, QUERY_PROPOSERS
from .stage import RENAMED, MaskFiles, RegionStage
from .tasks import TASKS

_P = PromptOptions()  # the prompt's documented defaults (methods/region/prompts.py)


@dataclass(frozen=True)
class RegionOptions(StageOptions):
    """The region stage (its options are all fingerprinted but ``requests_per_call``)."""

    prompt_mode: str = option("focal", "how a region is shown to the VLM", choices=MODES)
    task: str = option(_P.task, "what is asked of each region", choices=TASKS)
    attribute: str | None = option(_P.attribute, "the attribute for task attribute when a row has none")
    own_attribute: bool = option(_P.own_attribute, "task dense: a region with its own attribute is asked for it "
                                 "(on unless --task is given; fingerprinted only when on)")
    outline: bool = option(_P.outline, "focal: the mask outlined on both images")
    overlay: str = option(_P.overlay, "overlay mode: dim the outside, or draw a contour", choices=OVERLAYS)
    dim: float = option(_P.dim, "overlay dim: the brightness kept outside the region")
    min_size: int = option(_P.min_size, "focal: the box is grown to at least this many pixels")
    context: float = option(_P.context, "focal: the box expanded by this many of its own sizes per side")
    crop_min_side: int = option(_P.crop_min_side, "focal, crop: smaller crops upscaled to this longer side (0: never)")
    som_max_marks: int = option(_P.som_max_marks, "set-of-mark: most marks per image")
    box_convention: str | None = option(_P.box_convention, "box prompts: the coordinates' convention (null: from "
                                        "what the model is)", choices=CONVENTIONS)
    input_size: list[int] | None = option(_P.input_size, "box prompts, pixels: the model's input [w, h]")
    box_to_mask: str | None = option(None, "none, or sam: boxes become SAM masks (null: sam with --regions auto, "
                                     "else none)", choices=("none", "sam"))
    regions: str = option("regions", "the input column of region lists, or auto: the experts propose regions")
    box_format: str = option("xyxy", "how the input's boxes are written", choices=BOX_FORMATS)
    propose: str = option("dense", "--regions auto: the proposer (grounding_dino and owlv2 need --queries)",
                          choices=PROPOSERS)
    max_regions: int = option(50, "--regions auto: regions kept per image")
    max_new_tokens: int = option(256, "most tokens generated per region (--max-new-tokens)")
    retry_max_new_tokens: int | None = option(None, "the limit a cut set-of-mark reply is asked again with "
                                              "(null: twice max_new_tokens)")
    temperature: float = option(0.0, "sampling temperature; 0 is greedy (--temperature)")
    top_p: float = option(1.0, "nucleus sampling (--top-p)")
    requests_per_call: int = option(64, "requests per model call: bounds memory, changes no output",
                                    fingerprint="never")


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


@register_method(
    "region",
    summary="masked regions described with any VLM: dense, attribute or global, five ways of showing a region",
    options={"region": RegionOptions},
    flags=[Flag("region_prompt", "region", "prompt_mode"), Flag("task", "region", "task"),
           Flag("attribute", "region", "attribute", help="the attribute to describe (color, material, pose...; "
                "implies --task attribute)"),
           Flag("outline", "region", "outline"), Flag("box_to_mask", "region", "box_to_mask"),
           Flag("regions", "region", "regions")],
    roles=[ModelRole("vlm", "describes each region")],
    commands=("pixscribe.methods.region.eval_cli",),
)
def region(ctx: MethodContext) -> Method:
    cfg = ctx.config
    if cfg.prompt is not None or cfg.prompt_file:
        raise MethodError("--method region writes its prompts from --task and --region-prompt (a row's own request "
                          "goes in an 'instruction' column); --prompt does not apply")  # fmt: skip
    given = dict((cfg.stages or {}).get("region", {}))
    opts = resolve_options(ctx.options("region", RegionOptions, primary=True), given)
    if opts["regions"] == "auto" and opts["propose"] in QUERY_PROPOSERS and not cfg.queries:
        raise MethodError(f"--regions auto with {opts['propose']} needs --queries 'cat,dog' (or propose with dense)")
    sam = build_expert("sam", cfg)  # loaded only when a run needs it (points, box_to_mask sam, auto)
    proposer = build_expert(opts["propose"], cfg) if opts["regions"] == "auto" else None
    spec, vlm = ctx.spec("vlm"), ctx.model("vlm")
    _box_frame(opts, vlm, spec.revision)
    stage = RegionStage(vlm, opts, identity=spec.identity(), sam=sam, proposer=proposer,
                        files=MaskFiles(cfg.inputs, cfg.allow_any_path), queries=cfg.queries,
                        sam_identity=expert_identity(sam),
                        proposer_identity=expert_identity(proposer) if proposer else None)  # fmt: skip
    return Method("region", [stage], list(COLUMNS), "caption", {"caption": "org_caption", **RENAMED},
                  column_types={"region": REGION_ARROW, "regions": REGIONS_ARROW}, id_column="region_id")
