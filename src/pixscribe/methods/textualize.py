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

from typing import Any

from ..engine.context import MethodContext
from ..engine.stage import Method, Stage, register_method
from ..experts import build_expert
from ..experts.base import Expert
from ..stages import GenerateStage
from ..stages import objects as objects_mod
from ..stages import rewrite as rewrite_mod
from ..stages import verify as verify_mod
from ..stages.column import ColumnStage
from ..stages.detail import DetailStage

DESCRIBE_PROMPT = ("Describe this image in detail: the objects in it with their colours, sizes and positions, how "
                   "they relate to each other, any visible text, and the setting. Only state what you can see.")
DESCRIBE_DEFAULTS: dict[str, Any] = {"prompt": DESCRIBE_PROMPT, "max_new_tokens": 512, "temperature": 0.0,
                                     "top_p": 1.0, "column": None}
DESCRIBE_TYPES = {"column": str}  # the options whose default (None) does not tell their type
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
    describe = _describe(ctx, ctx.options("describe", primary=True, types=DESCRIBE_TYPES, **DESCRIBE_DEFAULTS))
    obj_opts = ctx.options("objects", **objects_mod.DEFAULTS)
    llm = ctx.model("llm") if obj_opts["extractor"] == "llm" else None
    ver_opts = ctx.options("verify", **verify_mod.DEFAULTS)
    detectors = {n: expert(n) for n in ("grounding_dino", "owlv2") if n == "grounding_dino" or ver_opts["mode"] != "single"}
    stages: list[Stage] = [
        DetailStage(expert("dense"), expert("sam"), expert("depth"), expert("ocr") if use_ocr else None),
        describe,
        objects_mod.objects_stage(obj_opts, llm, ctx.spec("llm").identity()),
        verify_mod.VerifyStage(detectors, ver_opts),
        rewrite_mod.RewriteStage(ctx.model("llm"), ctx.options("rewrite", **rewrite_mod.DEFAULTS),
                                 identity=ctx.spec("llm").identity(), ocr=use_ocr),
    ]
    columns = COLUMNS[:-1] + (["ocr"] if use_ocr else []) + COLUMNS[-1:]
    return Method("textualize", stages, columns, caption_field="caption", rename_inputs=dict(RENAME))


@register_method("textualize")
def textualize(ctx: MethodContext) -> Method:
    return textualize_method(ctx)
