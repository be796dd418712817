"""The recap method: its declaration and its factory."""

from __future__ import annotations

from typing import Any, Mapping

from ...api import Flag, Method, MethodContext, ModelRole, register_method
from ...errors import ConfigError
from ...experts.base import Expert
from ...stages import GenerateStage
from .captions import ERRORS, CaptionsStage, samples_column
from .options import SELECT_BY, RecapOptions, SelectOptions
from .prompts import column, parse_prompts
from .select import SelectStage, detector_names, scores_column


def _several(ctx: MethodContext, opts: dict[str, Any]) -> tuple[dict[str, str], int] | None:
    """(prompts, n) when recap asks more than one caption of an image, else None (one stage as always)."""
    n, given = opts["n"], opts["prompts"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"recap.n (--n): {n!r} is not a whole number of 1 or more")
    if given is None and n == 1:
        if (ctx.config.stages or {}).get("select"):
            raise ConfigError("select.* (--select-by) chooses among samples: it needs --n above 1")
        return None
    yaml_prompt = {"prompt", "prompt_file"} & set((ctx.config.stages or {}).get("recap", {}))
    if given is not None and (ctx.config.prompt is not None or ctx.config.prompt_file is not None or yaml_prompt):
        raise ConfigError("--prompts and --prompt/--prompt-file (or recap.prompt/prompt_file in the config): give one "
                          "of them (--prompts names every prompt)")
    if n > 1 and float(opts["temperature"]) <= 0:
        raise ConfigError(f"recap.n={n} asks {n} samples of each prompt, but the temperature is 0 (greedy): every "
                          "sample would be the same reply; set --temperature above 0 (e.g. 0.7)")
    return (parse_prompts(given) if given is not None else {"": opts["prompt"]}), n


def recap_method(ctx: MethodContext, detectors: Mapping[str, Expert] | None = None) -> Method:
    """The method; ``detectors`` (name -> expert) replaces the ones built from the config (tests)."""
    opts = ctx.options("recap", RecapOptions, primary=True)
    identity = ctx.spec("vlm").identity()
    several = _several(ctx, opts)
    if several is None:
        stage = GenerateStage("recap", ctx.model("vlm"), opts, provides="re_caption", identity=identity)
        return Method("recap", [stage], ["org_caption", "re_caption"], "re_caption", {"caption": "org_caption"})
    prompts, n = several
    opts["prompts"] = prompts  # the parsed prompts are fingerprinted (not a file's name)
    stages: list[Any] = [CaptionsStage("recap", ctx.model("vlm"), opts, prompts, n, identity=identity)]
    columns = [c for p in prompts for c in ([column(p), samples_column(p)] if n > 1 else [column(p)])]
    if n > 1:
        sel = ctx.options("select", SelectOptions)
        if sel["by"] not in SELECT_BY:
            raise ConfigError(f"select.by (--select-by): {sel['by']!r} is not one of {', '.join(SELECT_BY)}")
        dets = None
        if sel["by"] == "grounding":
            from ...experts import build_expert

            dets = dict(detectors) if detectors is not None else {d: build_expert(d, ctx.config)
                                                                  for d in detector_names(sel)}
            columns += [scores_column(p) for p in prompts]
        stages.append(SelectStage(list(prompts), sel, dets))
    types = _column_types(prompts, n)
    return Method("recap", stages, ["org_caption", *columns, ERRORS], column(next(iter(prompts))),
                  {"caption": "org_caption"}, column_types=types)


def _column_types(prompts: dict[str, str], n: int) -> dict[str, Any]:
    import pyarrow as pa

    out: dict[str, Any] = {}
    for p in prompts if n > 1 else ():
        out[samples_column(p)] = pa.list_(pa.string())
        out[scores_column(p)] = pa.list_(pa.float64())
    return out


@register_method(
    "recap",
    summary="one VLM pass per image with a detailed-caption prompt (Recap-DataComp-1B)",
    options={"recap": RecapOptions, "select": SelectOptions},
    flags=[Flag("prompts", "recap", "prompts"), Flag("n", "recap", "n"), Flag("select_by", "select", "by")],
    roles=[ModelRole("vlm", "describes each image")],
)
def recap(ctx: MethodContext) -> Method:
    return recap_method(ctx)
