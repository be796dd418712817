"""The ``pixscribe`` command line."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(
    name="pixscribe",
    help="Turn images into accurate, detailed, grounded text at dataset scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: typer's rich panels show every flag as "<bool>"
)
err = Console(stderr=True, emoji=False)  # a model named "m" must not print as an emoji (":m:")


class Fmt(str, Enum):
    parquet = "parquet"
    jsonl = "jsonl"
    tar = "tar"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixscribe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """pixscribe: images to text at dataset scale."""


def _fail(msg: str, code: int = 2) -> None:
    from rich.markup import escape

    # escaped: a pip hint like pip install 'pixscribe[hf]' is not rich markup
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_summary(summary: Any, out_dir: str, console: Console | None = None) -> None:
    c = console or err
    d = summary.to_dict()
    t = Table(title="pixscribe run", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("rows written", str(d["rows_written"]))
    t.add_row("rows skipped (already done)", str(d["rows_skipped"]))
    if d["duplicate_keys"]:
        t.add_row("keys repeated in a shard (written as KEY~N)", str(d["duplicate_keys"]))
    if d["duplicate_images"]:
        t.add_row("identical images (same sha256, each its own row)", str(d["duplicate_images"]))
    t.add_row("error rows", str(d["error_rows"]))
    for kind, n in d["errors"].items():
        t.add_row(f"  {kind}", str(n))
    t.add_row("shards completed", f"{d['shards_completed']} (+{d['shards_done_before']} before) of {d['shards_total']}")
    for why in d["shards_redone"]:
        t.add_row("redone (damaged)", why)
    t.add_row("img/s", f"{d['images_per_second']:.2f}")
    t.add_row("seconds", f"{d['seconds']:.1f}")
    for stage, counts in (d.get("stages") or {}).items():
        t.add_row(f"stage {stage} (rows)", ", ".join(f"{k} {_unit(k, v)}" for k, v in counts.items()))
    retried = False
    for who, usage in (d.get("usage") or {}).items():
        for k, v in _usage_rows(usage):
            t.add_row(f"{who}: {k}", v)
        retried = retried or bool(usage.get("failures") or usage.get("retries"))
    for note in d.get("notes") or []:
        t.add_row("note", note)
    if d["interrupted"]:
        t.add_row("interrupted", "yes: rerun the same command to resume")
    t.add_row("output", str(out_dir))
    c.print(t)
    if retried:
        c.print("requests are model calls, retries their extra attempts; a request that failed after its retries "
                "fails its row only when the stage cannot recover (a cut reply asked again, a fallback): a stage's "
                "'failed' counts rows", highlight=False)


def _usage_rows(usage: dict[str, Any]) -> list[tuple[str, str]]:
    """A model's counters as labelled rows with units; a stage's or a pool's own counters as they are."""
    u = {k: v for k, v in usage.items() if v is not None}
    rows: list[tuple[str, str]] = []
    if {"requests", "failures", "retries"} <= set(u):
        rows.append(("requests", f"{u.pop('requests')} ({u.pop('failures')} failed after retries, "
                                 f"{u.pop('retries')} retries)"))
    if {"tokens_in", "tokens_out"} <= set(u):
        rows.append(("tokens in / out", f"{u.pop('tokens_in')} / {u.pop('tokens_out')}"))
    if {"latency_p50", "latency_p95"} <= set(u):
        rows.append(("latency p50 / p95", f"{u.pop('latency_p50'):.3f} s / {u.pop('latency_p95'):.3f} s"))
    return rows + [(k, _unit(k, v)) for k, v in u.items()]


def _unit(key: str, v: Any) -> str:
    """A latency says it is in seconds."""
    return f"{v} s" if isinstance(v, (int, float)) and key.startswith("latency") else str(v)


def _stage_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``-S rewrite.temperature=0.2`` -> ``{"rewrite": {"temperature": 0.2}}`` (values are YAML)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        stage, dot, opt = key.partition(".")
        if not (eq and dot and stage and opt):
            raise ValueError(f"--stage-option {item!r}: expected STAGE.KEY=VALUE, e.g. rewrite.temperature=0.2")
        out.setdefault(stage.strip(), {})[opt.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def _validation_message(exc: Any) -> str:
    return "; ".join(
        f"--{'.'.join(str(x) for x in e['loc']).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def _os_error_message(exc: OSError, out: str) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    return (f"cannot write{where}: {what} (errno {exc.errno}). What was written before is intact; fix that (free "
            f"space, permissions, a read-only mount) and rerun the same command to resume into {out}")


@app.command(context_settings={"max_content_width": 110})
def caption(
    inputs: list[str] = typer.Argument(
        None,
        help="Images, directories, .txt lists, globs, webdataset .tar (brace ranges ok), .parquet/.jsonl tables, "
        "HF datasets saved with save_to_disk, or URLs.",
        show_default=False,
    ),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output dataset directory."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="recap (default), experts, textualize, ..."),
    format: Optional[Fmt] = typer.Option(None, "--format", help="parquet (default), jsonl or tar (webdataset)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of options; the command line wins."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: process only shard K of N (Slurm arrays)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Records per output shard (default 10000)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Process at most N new records."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Records per model batch (default 8)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Visual budget in pixels (default 1,000,000)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Longest side limit in pixels."),
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", help="Decompression-bomb guard (default 89,478,485, as PIL)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over (unchanged stage outputs are reused)."),
    no_reuse: bool = typer.Option(False, "--no-reuse", help="With --overwrite: recompute every stage."),
    reuse: Optional[list[str]] = typer.Option(None, "--reuse", help="Reuse unchanged stage outputs of this output dir."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Redo failed rows (from the stage that failed)."),
    update: bool = typer.Option(False, "--update", help="Inputs changed: process exactly the new and changed ones."),
    verify: bool = typer.Option(False, "--verify", help="Check finished parts against their checksums."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another run holding these shards instead of failing."),
    lease_timeout: Optional[float] = typer.Option(None, "--lease-timeout", help="Seconds before a silent owner's "
                                                  "claim is taken over (default 60)."),
    until: Optional[str] = typer.Option(None, "--until", help="Run the method's stages up to this one."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated prefix of the method's stages."),
    stage_option: Optional[list[str]] = typer.Option(None, "--stage-option", "-S", help="STAGE.KEY=VALUE (repeatable)."),
    allow_private_urls: bool = typer.Option(
        False, "--allow-private-urls", help="Allow URLs on private and loopback addresses (never cloud metadata)."
    ),
    allow_any_path: bool = typer.Option(False, "--allow-any-path", help="Let lists and tables name files outside "
                                        "the input folders."),
    allow_url_host: Optional[list[str]] = typer.Option(
        None, "--allow-url-host", help="Fetch URLs from this host, IP or network even if private or cloud metadata "
        "(repeatable)."
    ),
    url_timeout: Optional[float] = typer.Option(
        None, "--url-timeout", help="Seconds a URL fetch may stall (30); each fetch ends after 4x this."
    ),
    url_max_bytes: Optional[int] = typer.Option(None, "--url-max-bytes", help="Largest URL download (50 MiB)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--executor ray: a running cluster "
                                              "(auto, HOST:6379, ray://HOST:10001); default: start a local one."),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="--executor ray: actors per model stage (1)."),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="--executor ray: autoscale each stage's "
                                               "actors between --replicas and this."),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", help="--executor ray: GPUs per replica (0.25 shares "
                                             "one GPU between 4; default 1 for a local model on a GPU cluster)."),
    replica_cpus: Optional[float] = typer.Option(None, "--replica-cpus", help="--executor ray: CPUs per replica (1)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="transformers (default), openai or vllm."),
    vlm: Optional[str] = typer.Option(None, "--vlm", help="VLM hub id or local directory."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Text model for text-only stages (default: the VLM)."),
    llm_backend: Optional[str] = typer.Option(None, "--llm-backend", help="Backend of --llm (default: --backend)."),
    llm_base_url: Optional[list[str]] = typer.Option(None, "--llm-base-url", help="Server of the text model."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Model revision (branch, tag or commit)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bf16, fp16 or fp32."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code from the hub (off)."),
    base_url: Optional[list[str]] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (repeatable)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Max requests in flight (HTTP backend)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Per-request timeout, seconds."),
    request_deadline: Optional[float] = typer.Option(
        None, "--request-deadline", help="Whole life of a model request across retries and waits, seconds "
        "(default 2 x (max retries + 1) x request timeout)."
    ),
    endpoint_down_timeout: Optional[float] = typer.Option(
        None, "--endpoint-down-timeout", help="Stop the run (resumable) when every model server has been "
        "unreachable this long, seconds (300; 0 = never)."
    ),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries per request (HTTP backend)."),
    structured_output: Optional[str] = typer.Option(
        None, "--structured-output", help="JSON-schema mode: response_format (default), vllm, sglang, none."
    ),
    on_degenerate: Optional[str] = typer.Option(
        None, "--on-degenerate", help="A reply still looping after a retry with a repetition penalty and one with "
        "sampling: error (default: the row fails as degenerate:) or keep (kept, flagged degenerate in provenance)."
    ),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt of the method's main stage."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read that prompt from a file."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Main stage (recap: 128)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Main stage; 0 = greedy."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Main stage nucleus sampling."),
    experts: Optional[str] = typer.Option(None, "--experts", help="Comma-separated experts (implies --method experts)."),
    queries: Optional[str] = typer.Option(None, "--queries", help="Comma-separated text queries for grounding_dino/owlv2."),
    profile: Optional[str] = typer.Option(None, "--profile", help="lite (offline CPU experts) or full."),
    describe_prompt: Optional[str] = typer.Option(None, "--describe-prompt", help="textualize: the VLM's prompt "
                                                  "(= -S describe.prompt=...)."),
    description_column: Optional[str] = typer.Option(None, "--description-column", help="textualize: take the "
                                                     "descriptions from this input column (= -S describe.column=...)."),
    extractor: Optional[str] = typer.Option(None, "--extractor", help="textualize: llm (default) or nouns "
                                            "(= -S objects.extractor=...)."),
    verify_mode: Optional[str] = typer.Option(None, "--verify-mode", help="textualize: single (Grounding DINO), "
                                              "consensus (+ OWLv2, both) or any (= -S verify.mode=...)."),
    box_threshold: Optional[float] = typer.Option(None, "--box-threshold", help="textualize: Grounding DINO box "
                                                  "threshold (0.20; = -S verify.box_threshold=...)."),
    text_threshold: Optional[float] = typer.Option(None, "--text-threshold", help="textualize: Grounding DINO text "
                                                   "threshold (0.18; = -S verify.text_threshold=...)."),
    max_objects: Optional[int] = typer.Option(None, "--max-objects", help="textualize: regions given to the rewrite "
                                              "(10; = -S rewrite.max_objects=...)."),
    region_prompt: Optional[str] = typer.Option(None, "--region-prompt", help="Method region: focal (default), "
                                                "overlay, som, box or crop."),
    task: Optional[str] = typer.Option(None, "--task", help="Method region: dense (default), attribute or global."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Method region: the attribute to describe "
                                            "(color, material, pose...; implies --task attribute)."),
    outline: Optional[bool] = typer.Option(None, "--outline/--no-outline", help="Method region, focal: outline "
                                           "the mask (on)."),
    box_to_mask: Optional[str] = typer.Option(None, "--box-to-mask", help="Method region: sam turns boxes into "
                                              "masks (none; sam with --regions auto)."),
    regions: Optional[str] = typer.Option(None, "--regions", help="Method region: the column of region lists "
                                          "(regions), or auto (the experts propose regions)."),
    tipcap_model: Optional[str] = typer.Option(None, "--tipcap-model", help="--method tipcap: a model directory "
                                               "from `pixscribe tipcap train`."),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="--method tipcap: the input column "
                                                "of object tags (a list, JSON list or text) fused in as the prompt."),
    prompt_experts: Optional[str] = typer.Option(None, "--prompt-experts", help="--method tipcap: tags from "
                                                 "dense, grounding_dino or owlv2 detections (those need --queries)."),
    entities: Optional[str] = typer.Option(None, "--entities", help="--method panoptic: chain (PancapChain, "
                                           "default) or experts (Florence-2 proposals + detectors)."),
    structured: bool = typer.Option(False, "--structured", help="--method panoptic: the caption as JSON (entities, "
                                    "attributes, relations, global), prose rendered from it."),
    consistency_vlm: Optional[str] = typer.Option(None, "--consistency-vlm", help="--method panoptic: a second VLM "
                                                  "flags the entities the image contradicts."),
    prompt_set: Optional[str] = typer.Option(None, "--prompt-set", help="--method panoptic: pixscribe (default) or "
                                             "official (PancapChain's four official prompts and lists)."),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", help="Decode threads (default 2)."),
    prepare_workers: Optional[int] = typer.Option(
        None, "--prepare-workers", help="Processes preparing the transformers model's inputs (chat template, image "
        "processor, tokenizer) ahead of generate (default: 0 on the CPU, up to 4 on a GPU; 0: on the model's thread)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    log_every: Optional[float] = typer.Option(
        None, "--log-every", help="When stderr is not a terminal (a Slurm log, a pipe): a progress line (rows, "
        "rate, ETA) every this many seconds (30)."
    ),
    flush_rows: Optional[int] = typer.Option(None, "--flush-rows", help="Rows buffered per atomic batch file (1024)."),
    flush_seconds: Optional[float] = typer.Option(
        None, "--flush-seconds", help="...or seconds between batch files (10); a crash redoes at most this much."
    ),
) -> None:
    """Caption images into a dataset directory (resumable, sharded, exactly once)."""
    given = {k: v for k, v in locals().items() if k not in ("config", "stage_option", "stages")}
    try:
        cfg = _build_caption_config(config, given, stage_option, stages)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad option: one line
        _fail(_config_error(exc))
    summary = _run_caption(cfg)
    print_summary(summary, cfg.output)
    if summary.stopped:
        _fail(f"the run stopped: {summary.stopped}", code=3)
    if summary.interrupted:
        raise typer.Exit(130)


def _config_error(exc: Exception) -> str:
    from pydantic import ValidationError

    return _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)


# dedicated flags that set a stage option (flag -> (stage, option)); -S STAGE.KEY=VALUE wins over them
# method-specific flags: flag -> (method, stage, option). Each sets that stage option (-S wins),
# implies its method when --method is not given, and is refused with another method.
_STAGE_FLAGS = {
    "describe_prompt": ("textualize", "describe", "prompt"),
    "description_column": ("textualize", "describe", "column"),
    "extractor": ("textualize", "objects", "extractor"),
    "verify_mode": ("textualize", "verify", "mode"),
    "box_threshold": ("textualize", "verify", "box_threshold"),
    "text_threshold": ("textualize", "verify", "text_threshold"),
    "max_objects": ("textualize", "rewrite", "max_objects"),
    "region_prompt": ("region", "region", "prompt_mode"),
    "task": ("region", "region", "task"),
    "attribute": ("region", "region", "attribute"),
    "outline": ("region", "region", "outline"),
    "box_to_mask": ("region", "region", "box_to_mask"),
    "regions": ("region", "region", "regions"),
    "entities": ("panoptic", "caption", "entities"),
    "structured": ("panoptic", "caption", "structured"),
    "prompt_set": ("panoptic", "caption", "prompt_set"),
    "consistency_vlm": ("panoptic", None, None),  # a model role, not a stage option (models.consistency)
    "tipcap_model": ("tipcap", "tipcap", "model"),
    "prompt_column": ("tipcap", "tipcap", "prompt_column"),
    "prompt_experts": ("tipcap", "tipcap", "prompt_experts"),
}

_FLAGS = ("overwrite", "no_reuse", "retry_errors", "update", "verify", "wait", "allow_private_urls",
          "allow_any_path", "trust_remote_code")


def _build_caption_config(config: Path | None, given: dict[str, Any], stage_option: list[str] | None,
                          stages: str | None) -> Any:
    from .config import build_config

    over: dict[str, Any] = dict(given)
    over["structured"] = over.get("structured") or None  # a plain flag: off means "not given"
    flagged = {f: over[f] for f in _STAGE_FLAGS if over.get(f) is not None}
    for f in _STAGE_FLAGS:
        over.pop(f, None)
    for k in _FLAGS:
        over[k] = over[k] or None
    over["progress"] = False if over.pop("no_progress") else None
    over["allow_url_hosts"] = over.pop("allow_url_host")
    for k in ("inputs", "base_url", "llm_base_url", "reuse", "allow_url_hosts"):
        over[k] = list(over[k]) if over.get(k) else None
    over["format"] = over["format"].value if over.get("format") else None
    over["prompt_file"] = str(over["prompt_file"]) if over.get("prompt_file") else None
    cfg = build_config(config, over)
    extra = _method_flags(cfg, flagged, given.get("method") is None)
    if flagged.get("consistency_vlm"):  # --method panoptic's second model role
        cfg.models = {**cfg.models, "consistency": {**cfg.models.get("consistency", {}),
                                                    "model": flagged["consistency_vlm"]}}
    for st, opts in _stage_options(stage_option).items():  # -S wins over the dedicated flags
        extra.setdefault(st, {}).update(opts)
    if extra:
        merged = {k: dict(v) for k, v in cfg.stages.items()}
        for st, opts in extra.items():
            merged.setdefault(st, {}).update(opts)
        cfg.stages = merged
    if stages:
        cfg.until = _until_from_stages(stages)
    if (cfg.profile or cfg.experts) and given.get("method") is None and cfg.method == "recap":
        cfg.method = "experts"
    if not cfg.inputs:
        raise ValueError("no inputs: give images, directories, lists, globs, tars, tables or URLs "
                         "(or `inputs:` in --config)")
    if not cfg.output:
        raise ValueError("no output directory: pass -o OUT_DIR (or `output:` in --config)")
    return cfg


def _method_flags(cfg: Any, flagged: dict[str, Any], method_free: bool) -> dict[str, dict[str, Any]]:
    """Method-specific flags -> their stage options; the flags pick the method if none was given."""
    methods = {_STAGE_FLAGS[f][0] for f in flagged}
    if len(methods) > 1:
        raise ValueError(f"{', '.join('--' + f.replace('_', '-') for f in flagged)}: flags of different methods "
                         f"({', '.join(sorted(methods))})")
    if methods and method_free and cfg.method == "recap":
        cfg.method = next(iter(methods))
    wrong = [f for f in flagged if _STAGE_FLAGS[f][0] != cfg.method]
    if wrong:
        raise ValueError(f"{', '.join('--' + f.replace('_', '-') for f in wrong)}: for --method "
                         f"{_STAGE_FLAGS[wrong[0]][0]}, not --method {cfg.method}")
    out: dict[str, dict[str, Any]] = {}
    for f, v in flagged.items():
        _, st, opt = _STAGE_FLAGS[f]
        if st is not None:
            out.setdefault(st, {})[opt] = v
    return out


def _until_from_stages(stages: str) -> str:
    names = [s.strip() for s in stages.split(",") if s.strip()]
    if not names:
        raise ValueError("--stages: name at least one stage")
    return "stages:" + "|".join(names)  # checked against the method's stage order when it is built


def _run_caption(cfg: Any) -> Any:
    from .backends.base import BackendUnavailable
    from .engine.runner import Runner
    from .engine.stage import MethodError
    from .engine.state import ConfigMismatch
    from .record import PixscribeError

    try:
        return Runner(cfg, console=err).run()
    except (ConfigMismatch, BackendUnavailable, MethodError, PixscribeError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error_message(exc, cfg.output), code=1)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted before the run started[/]")
        raise typer.Exit(130)


def _register_optional() -> None:
    """Commands contributed by other modules (metrics eval, report, ...)."""
    import importlib

    for mod in ("pixscribe.metrics.eval_cli", "pixscribe.report.cli", "pixscribe.tipcap.cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and mod.startswith(exc.name):
                continue  # that part of pixscribe is not there
            err.print(f"[yellow]warning:[/] {mod} is unavailable: {exc}")
            continue
        m.register(app)


_register_optional()


if __name__ == "__main__":  # pragma: no cover
    app()
