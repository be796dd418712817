"""Image Textualization (arXiv 2406.07502): descriptions checked against experts and rewritten.

    pixscribe caption photos -o out --method textualize --vlm Qwen/Qwen3-VL-8B-Instruct --llm Qwen/Qwen3-8B

Stages (each one's options: ``stages: {NAME: {...}}`` in YAML or ``-S NAME.KEY=VALUE``):

1. ``detail``: Florence-2 dense regions, a SAM mask per region, Depth Anything nearness
   per mask, the mask's share of the image (and OCR lines with ``--experts ocr``);
2. ``describe``: the VLM describes the image (``--prompt``, the primary stage), or
   ``describe.column`` takes an input column instead;
3. ``objects``: the concrete objects the description names (an LLM with a JSON schema, or
   ``objects.extractor: nouns``);
4. ``verify``: each object alone as a Grounding DINO query (``verify.mode`` single,
   consensus with OWLv2, or any); the ones not found are the hallucinations;
5. ``rewrite``: an LLM rewrites the description from that evidence (temperature 0.75,
   top-p 0.95), or the description passes through (fewer than 2 objects, one depth).

The image stages come first so that changing a text stage (the rewrite prompt, say)
reruns only what follows it. Columns and options: docs/textualize.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...api import Flag, Method, MethodContext, ModelRole, Stage, StageOptions, option, register_method
from ...experts import build_expert
from ...experts.base import Expert
from ...stages import GenerateStage
from . import objects as objects_mod
from . import rewrite as rewrite_mod
from . import verify as verify_mod
from .column import ColumnStage
from .detail import DetailStage

DESCRIBE_PROMPT = ("Describe this image in detail: the objects in it with their colours, sizes and positions, how "
                   "they relate to each other, any visible text, and the setting. Only state what you can see.")


@dataclass(frozen=True)
class DescribeOptions(StageOptions):
    """The VLM describes the image (the primary stage), or an input column gives the description."""

    prompt: str = option(DESCRIBE_PROMPT, "the VLM's request (--prompt, --prompt-file)")
    max_new_tokens: int = option(512, "most tokens generated per description (--max-new-tokens)")
    temperature: float = option(0.0, "sampling temperature; 0 is greedy (--temperature)")
    top_p: float = option(1.0, "nucleus sampling (--top-p)")
    column: str | None = option(None, "take the descriptions from this input column instead of the VLM")


RENAME = {"caption": "org_caption"}
COLUMNS = ["description", "phrases", "objects", "hallucinations", "regions", "textualize_skipped"]


def _description(rec: Any, res: Any) -> dict[str, Any]:
    text = (res.text or "").strip()
    if not text:
        raise ValueError("the VLM's description is empty: nothing to textualize")
    return {"description": text}


def _describe(ctx: MethodContext, opts: dict[str, Any]) -> Stage:
    column = opts.pop("column")
    if column:
        return ColumnStage("describe", RENAME.get(column, column), "description", shown_as=column)
    return GenerateStage("describe", ctx.model("vlm"), opts, provides="description", parse=_description,
                         identity=ctx.spec("vlm").identity())


def textualize_method(ctx: MethodContext, experts: dict[str, Expert] | None = None) -> Method:
    """The method; ``experts`` (name -> expert) replaces the ones built from the config (tests)."""
    cfg = ctx.config
    given = dict(experts or {})

    def expert(name: str) -> Expert:
        return given[name] if name in given else build_expert(name, cfg)

    use_ocr = "ocr" in cfg.experts or "ocr" in given
    describe = _describe(ctx, ctx.options("describe", DescribeOptions, primary=True))
    obj_opts = ctx.options("objects", objects_mod.ObjectsOptions)
    llm = ctx.model("llm") if obj_opts["extractor"] == "llm" else None
    ver_opts = ctx.options("verify", verify_mod.VerifyOptions)
    detectors = {n: expert(n) for n in ("grounding_dino", "owlv2") if n == "grounding_dino" or ver_opts["mode"] != "single"}
    stages: list[Stage] = [
        DetailStage(expert("dense"), expert("sam"), expert("depth"), expert("ocr") if use_ocr else None),
        describe,
        objects_mod.objects_stage(obj_opts, llm, ctx.spec("llm").identity()),
        verify_mod.VerifyStage(detectors, ver_opts),
        rewrite_mod.RewriteStage(ctx.model("llm"), ctx.options("rewrite", rewrite_mod.RewriteOptions),
                                 identity=ctx.spec("llm").identity(), ocr=use_ocr),
    ]
    columns = COLUMNS[:-1] + (["ocr"] if use_ocr else []) + COLUMNS[-1:]
    return Method("textualize", stages, columns, caption_field="caption", rename_inputs=dict(RENAME))


@register_method(
    "textualize",
    summary="Image Textualization: descriptions checked against vision experts, then rewritten",
    options={"describe": DescribeOptions, "objects": objects_mod.ObjectsOptions, "verify": verify_mod.VerifyOptions,
             "rewrite": rewrite_mod.RewriteOptions},
    flags=[Flag("describe_prompt", "describe", "prompt"), Flag("description_column", "describe", "column"),
           Flag("extractor", "objects", "extractor"), Flag("verify_mode", "verify", "mode"),
           Flag("box_threshold", "verify", "box_threshold"), Flag("text_threshold", "verify", "text_threshold"),
           Flag("max_objects", "rewrite", "max_objects")],
    roles=[ModelRole("vlm", "describes each image"),
           ModelRole("llm", "extracts the objects and rewrites (default: the VLM itself; --llm)")],
)
def textualize(ctx: MethodContext) -> Method:
    return textualize_method(ctx)
