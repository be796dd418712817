"""The ``pixscribe`` command line.

Every command runs in :class:`pixscribe.commands.Commands`, the one place where user errors
become one line and exit 2. ``caption`` takes each method's flags from the method registry
(``cli_methods.py``), and each method's own commands come from its declaration; this file
names no method.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .commands import Commands, err
from .commands import fail as _fail
from .config import RunConfig
from .errors import ConfigError

app = typer.Typer(
    name="pixscribe",
    cls=Commands,
    help="Turn images into accurate, detailed, grounded text at dataset scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: typer's rich panels show every flag as "<bool>"
)


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
            raise ConfigError(f"--stage-option {item!r}: expected STAGE.KEY=VALUE, e.g. rewrite.temperature=0.2")
        out.setdefault(stage.strip(), {})[opt.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def _os_error_message(exc: OSError, out: str) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    return (f"cannot write{where}: {what} (errno {exc.errno}). What was written before is intact; fix that (free "
            f"space, permissions, a read-only mount) and rerun the same command to resume into {out}")


def caption(**params: Any) -> None:
    """Caption images into a dataset directory (resumable, sharded, exactly once)."""
    config, stage_option, stages = params.pop("config"), params.pop("stage_option"), params.pop("stages")
    dry_run = params.pop("dry_run", False)
    cfg = _build_caption_config(config, params, stage_option, stages)
    if dry_run:
        return _dry_run(cfg)
    summary = _run_caption(cfg)
    print_summary(summary, cfg.output)
    if summary.stopped:
        _fail(f"the run stopped: {summary.stopped}", code=3)
    if summary.interrupted:
        raise typer.Exit(130)


def _caption_options(
    inputs: list[str] = typer.Argument(
        None,
        help="Images, directories, .txt lists, globs, webdataset .tar (brace ranges ok), .parquet/.jsonl tables, "
        "HF datasets saved with save_to_disk, or URLs.",
        show_default=False,
    ),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output dataset directory."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="The method (see the list below)."),
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
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what the run would do (inputs, shards, what resume skips, each stage's models "
        "and whether each is here) and stop: loads and writes nothing, asks no hub; exit 2 if a model is missing."
    ),
) -> None:
    """The command's own options; the methods' flags are added from the registry (cli_methods.py)."""


_FLAGS = ("overwrite", "no_reuse", "retry_errors", "update", "verify", "wait", "allow_private_urls",
          "allow_any_path", "trust_remote_code")


def _build_caption_config(config: Path | None, given: dict[str, Any], stage_option: list[str] | None,
                          stages: str | None) -> RunConfig:
    from .cli_methods import apply_flags, given_flags, implied_method
    from .config import build_config

    over: dict[str, Any] = dict(given)
    over.pop("dry_run", None)  # what the command does, not the run's configuration
    flagged = given_flags(_METHOD_FLAGS, over)
    for k in _FLAGS:
        over[k] = over[k] or None
    over["progress"] = False if over.pop("no_progress") else None
    over["allow_url_hosts"] = over.pop("allow_url_host")
    for k in ("inputs", "base_url", "llm_base_url", "reuse", "allow_url_hosts"):
        over[k] = list(over[k]) if over.get(k) else None
    over["format"] = over["format"].value if over.get("format") else None
    over["prompt_file"] = str(over["prompt_file"]) if over.get("prompt_file") else None
    cfg = build_config(config, over)
    method_free = given.get("method") is None
    extra = apply_flags(cfg, _METHOD_FLAGS, flagged, method_free)
    for st, opts in _stage_options(stage_option).items():  # -S wins over the dedicated flags
        extra.setdefault(st, {}).update(opts)
    if extra:
        merged = {k: dict(v) for k, v in cfg.stages.items()}
        for st, opts in extra.items():
            merged.setdefault(st, {}).update(opts)
        cfg.stages = merged
    if stages:
        cfg.until = _until_from_stages(stages)
    implied_method(cfg, method_free)
    if not cfg.inputs:
        raise ConfigError("no inputs: give images, directories, lists, globs, tars, tables or URLs "
                          "(or `inputs:` in --config)")
    if not cfg.output:
        raise ConfigError("no output directory: pass -o OUT_DIR (or `output:` in --config)")
    return cfg


def _until_from_stages(stages: str) -> str:
    names = [s.strip() for s in stages.split(",") if s.strip()]
    if not names:
        raise ConfigError("--stages: name at least one stage")
    return "stages:" + "|".join(names)  # checked against the method's stage order when it is built


def _dry_run(cfg: RunConfig) -> None:
    from .engine.dryrun import make_plan, render

    plan = make_plan(cfg)
    for line in render(plan):
        typer.echo(line)
    if plan.missing or str(plan.resume.get("config", "")).startswith("refused"):
        raise typer.Exit(2)


def _run_caption(cfg: RunConfig) -> Any:
    from .engine.runner import Runner

    try:
        return Runner(cfg, console=err).run()
    except FileNotFoundError:
        raise  # a file that is not there: one line, exit 2 (Commands)
    except OSError as exc:  # the run could not write: exit 1, saying that a rerun resumes
        _fail(_os_error_message(exc, cfg.output), code=1)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted before the run started[/]")
        raise typer.Exit(130)


def _caption_command() -> None:
    """``caption``: its own options, then every method's declared flags (from the registry)."""
    from .cli_methods import declared_flags, methods_help

    own = inspect.signature(_caption_options)
    flags = declared_flags(set(own.parameters))
    _METHOD_FLAGS.update(flags)
    params = list(own.parameters.values()) + [f.parameter() for f in flags.values()]
    caption.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    caption.__annotations__ = {**_caption_options.__annotations__, **{p.name: p.annotation for p in params[len(
        own.parameters):]}}
    app.command(context_settings={"max_content_width": 110}, epilog=methods_help())(caption)


_METHOD_FLAGS: dict[str, Any] = {}  # flag name -> DeclaredFlag, filled by _caption_command


@app.command("methods")
def methods_command(
    markdown: bool = typer.Option(False, "--markdown", help="Print docs/options.md: every stage's options table."),
) -> None:
    """The methods, each with its summary, flags and model roles (--markdown: and its stages' options)."""
    from .cli_methods import markdown as render
    from .cli_methods import method_lines

    typer.echo(render() if markdown else method_lines())


def _register_optional() -> None:
    """Commands contributed by other modules: metrics (eval), report (report, export) and each
    method's own (its declaration's ``commands``)."""
    import importlib

    from .api.registry import method_specs

    methods = [c for spec in method_specs() for c in spec.commands]
    for mod in ("pixscribe.metrics.eval_cli", "pixscribe.report.cli", *methods):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and mod.startswith(exc.name):
                continue  # that part of pixscribe is not there
            err.print(f"[yellow]warning:[/] {mod} is unavailable: {exc}")
            continue
        m.register(app)


_caption_command()
_register_optional()


if __name__ == "__main__":  # pragma: no cover
    app()
