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
)
err = Console(stderr=True)


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
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_summary(summary: Any, out_dir: str, console: Console | None = None) -> None:
    c = console or err
    d = summary.to_dict()
    t = Table(title="pixscribe run", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("rows written", str(d["rows_written"]))
    t.add_row("rows skipped (already done)", str(d["rows_skipped"]))
    if d["duplicates"]:
        t.add_row("duplicates (same id)", str(d["duplicates"]))
    t.add_row("error rows", str(d["error_rows"]))
    for kind, n in d["errors"].items():
        t.add_row(f"  {kind}", str(n))
    t.add_row("shards completed", f"{d['shards_completed']} (+{d['shards_done_before']} before) of {d['shards_total']}")
    t.add_row("img/s", f"{d['images_per_second']:.2f}")
    t.add_row("seconds", f"{d['seconds']:.1f}")
    for stage, usage in (d.get("usage") or {}).items():
        for k, v in usage.items():
            if v is not None:
                t.add_row(f"{stage}: {k}", str(v))
    if d["interrupted"]:
        t.add_row("interrupted", "yes: rerun the same command to resume")
    t.add_row("output", str(out_dir))
    c.print(t)


@app.command()
def caption(
    inputs: list[str] = typer.Argument(
        None,
        help="Images, directories, .txt lists, globs, webdataset .tar (brace ranges ok), .parquet/.jsonl tables, "
        "HF datasets saved with save_to_disk, or URLs.",
        show_default=False,
    ),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output dataset directory."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="recap (default), experts, ..."),
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Redo only failed or missing rows."),
    allow_private_urls: bool = typer.Option(
        False, "--allow-private-urls", help="Allow URLs on private, loopback and link-local addresses."
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="transformers (default), openai or vllm."),
    vlm: Optional[str] = typer.Option(None, "--vlm", help="VLM hub id or local directory."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Text LLM for rewriting stages (default: the VLM)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Model revision (branch, tag or commit)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bf16, fp16 or fp32."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code from the hub (off)."),
    base_url: Optional[list[str]] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (repeatable)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Max requests in flight (HTTP backend)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Per-request timeout, seconds."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries per request (HTTP backend)."),
    structured_output: Optional[str] = typer.Option(
        None, "--structured-output", help="JSON-schema mode: response_format (default), vllm, vllm-legacy, sglang, none."
    ),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt text (overrides the method's default)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt from a file."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Default 128."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 = greedy (default)."),
    experts: Optional[str] = typer.Option(None, "--experts", help="Comma-separated experts, e.g. ocr,faces,stats."),
    profile: Optional[str] = typer.Option(None, "--profile", help="lite (offline CPU experts) or full."),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", help="Decode threads (default 2)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    flush_rows: Optional[int] = typer.Option(None, "--flush-rows", help="Rows buffered per atomic batch file (1024)."),
    flush_seconds: Optional[float] = typer.Option(
        None, "--flush-seconds", help="...or seconds between batch files (10); a crash redoes at most this much."
    ),
) -> None:
    """Caption images into a dataset directory (resumable, sharded, exactly once)."""
    from pydantic import ValidationError

    from .backends.base import BackendUnavailable
    from .config import build_config
    from .engine.runner import Runner
    from .engine.state import ConfigMismatch
    from .record import PixscribeError

    overrides: dict[str, Any] = {
        "inputs": list(inputs) if inputs else None,
        "output": output,
        "method": method,
        "format": format.value if format else None,
        "shard": shard,
        "shard_size": shard_size,
        "limit": limit,
        "batch_size": batch_size,
        "max_pixels": max_pixels,
        "max_side": max_side,
        "max_image_pixels": max_image_pixels,
        "overwrite": overwrite or None,
        "retry_errors": retry_errors or None,
        "allow_private_urls": allow_private_urls or None,
        "backend": backend,
        "vlm": vlm,
        "llm": llm,
        "revision": revision,
        "device": device,
        "dtype": dtype,
        "trust_remote_code": trust_remote_code or None,
        "base_url": list(base_url) if base_url else None,
        "api_key_env": api_key_env,
        "concurrency": concurrency,
        "request_timeout": request_timeout,
        "max_retries": max_retries,
        "structured_output": structured_output,
        "prompt": prompt,
        "prompt_file": str(prompt_file) if prompt_file else None,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "experts": experts,
        "profile": profile,
        "decode_workers": decode_workers,
        "progress": False if no_progress else None,
        "flush_rows": flush_rows,
        "flush_seconds": flush_seconds,
    }
    try:
        cfg = build_config(config, overrides)
    except ValidationError as exc:
        _fail("; ".join(
            f"--{'.'.join(str(x) for x in e['loc']).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ))
    except ValueError as exc:
        _fail(str(exc))
    if cfg.profile and method is None and cfg.method == "recap":
        cfg.method = "experts"
    if not cfg.inputs:
        _fail("no inputs: give images, directories, lists, globs, tars, tables or URLs (or `inputs:` in --config)")
    if not cfg.output:
        _fail("no output directory: pass -o OUT_DIR (or `output:` in --config)")
    try:
        runner = Runner(cfg, console=err)
        summary = runner.run()
    except ConfigMismatch as exc:
        _fail(str(exc))
    except BackendUnavailable as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError, PixscribeError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted before the run started[/]")
        raise typer.Exit(130)
    print_summary(summary, cfg.output)
    if summary.interrupted:
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
