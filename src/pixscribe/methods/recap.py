"""Recap (Recap-DataComp-1B): one VLM pass per image with a "describe in detail" prompt.

Columns: ``org_caption`` (the input's own caption, null when it has none) and ``re_caption``.
Its one stage, ``recap``, takes ``--prompt``/``--prompt-file``, ``--max-new-tokens`` (128)
and ``--temperature`` (0: greedy), or ``stages: {recap: {...}}`` in YAML.
"""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend, Sampling
from ..config import RECAP_PROMPT
from ..engine.context import MethodContext
from ..engine.stage import Method, register_method
from ..stages import GenerateStage

DEFAULTS: dict[str, Any] = {"prompt": RECAP_PROMPT, "max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0}


def RecapStage(backend: Backend, prompt: str = RECAP_PROMPT, sampling: Sampling | None = None,  # noqa: N802
               field: str = "re_caption", identity: dict[str, Any] | None = None, name: str = "recap") -> GenerateStage:
    """The Recap stage: the VLM describes each image into ``field``."""
    s = sampling or Sampling(max_new_tokens=128)
    opts = {"prompt": prompt, "max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p}
    return GenerateStage(name, backend, opts, provides=field, identity=identity)


def recap_method(backend: Backend, prompt: str = RECAP_PROMPT, sampling: Sampling | None = None,
                 identity: dict[str, Any] | None = None) -> Method:
    return Method(
        name="recap",
        stages=[RecapStage(backend, prompt, sampling, identity=identity)],
        columns=["org_caption", "re_caption"],
        caption_field="re_caption",
        rename_inputs={"caption": "org_caption"},
    )


@register_method("recap")
def recap(ctx: MethodContext) -> Method:
    opts = ctx.options("recap", primary=True, **DEFAULTS)
    stage = GenerateStage("recap", ctx.model("vlm"), opts, provides="re_caption", identity=ctx.spec("vlm").identity())
    return Method("recap", [stage], ["org_caption", "re_caption"], "re_caption", {"caption": "org_caption"})
