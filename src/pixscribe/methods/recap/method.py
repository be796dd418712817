"""The recap method: its declaration and its factory."""

from __future__ import annotations

from ...api import Method, MethodContext, ModelRole, register_method
from ...stages import GenerateStage
from .options import RecapOptions


@register_method(
    "recap",
    summary="one VLM pass per image with a detailed-caption prompt (Recap-DataComp-1B)",
    options={"recap": RecapOptions},
    roles=[ModelRole("vlm", "describes each image")],
)
def recap(ctx: MethodContext) -> Method:
    opts = ctx.options("recap", RecapOptions, primary=True)
    stage = GenerateStage("recap", ctx.model("vlm"), opts, provides="re_caption", identity=ctx.spec("vlm").identity())
    return Method("recap", [stage], ["org_caption", "re_caption"], "re_caption", {"caption": "org_caption"})
