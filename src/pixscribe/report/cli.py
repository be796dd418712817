"""``pixscribe report`` and ``pixscribe export``: registered on the main app by
:func:`register` (``pixscribe.cli._register_optional``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError

_ANY_PATH = ("Re-read sources outside the run's input folders (as caption's --allow-any-path; needed for an output "
             "whose _run.json records none). A source the run itself refused is never read.")


def report_command(
    out_dir: Path = typer.Argument(..., help="A pixscribe output directory (the -o of pixscribe caption)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report directory to write (replaced whole if it is a report)."),
    sample: int = typer.Option(1000, "--sample", help="Rows to show: a reproducible sample (0 = every matching row)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    where: Optional[str] = typer.Option(None, "--where", help="DuckDB SQL filter, e.g. \"error is null\" or "
                                        "\"json_array_length(hallucinations) > 0\"."),
    sort: Optional[str] = typer.Option(None, "--sort", help="DuckDB ORDER BY, e.g. \"seconds desc\" (then the first "
                                       "--sample rows are shown)."),
    page_size: int = typer.Option(50, "--page-size", help="Rows per page."),
    thumb_size: int = typer.Option(384, "--thumb-size", help="Longest side of thumbnails, pixels."),
    eval_report: Optional[Path] = typer.Option(None, "--eval", help="A `pixscribe eval -o` report to show."),
    no_images: bool = typer.Option(False, "--no-images", help="Do not re-read images (overlays on a blank frame)."),
    no_fetch: bool = typer.Option(False, "--no-fetch", help="Never fetch URL sources."),
    allow_private_urls: bool = typer.Option(False, "--allow-private-urls", help="Allow URLs on private, loopback "
                                            "and link-local addresses (as for caption)."),
    allow_any_path: bool = typer.Option(False, "--allow-any-path", help=_ANY_PATH),
    workers: int = typer.Option(4, "--workers", help="Threads reading and resizing images."),
) -> None:
    """A static, self-contained HTML report of an output: what was said, and why."""
    from .build import ReportOptions, build_report

    opts = ReportOptions(sample=sample, seed=seed, where=where, sort=sort, page_size=page_size, thumb_size=thumb_size,
                         eval_path=eval_report, images=not no_images, fetch_urls=not no_fetch,
                         allow_private_urls=allow_private_urls, allow_any_path=allow_any_path, workers=workers)
    if sample < 0 or page_size < 1 or thumb_size < 16:
        raise ConfigError("--sample must be >= 0, --page-size >= 1 and --thumb-size >= 16")
    res = build_report(out_dir, output, opts)
    failed = ", ".join(f"{k} {n}" for k, n in sorted(res.thumbnail_errors.items()))
    typer.echo(f"report: {res.shown} of {res.rows} rows on {res.pages} page(s), {res.thumbnails} thumbnails"
               f"{f' ({failed} could not be read)' if failed else ''}, {res.seconds:.1f} s -> {res.dest / 'index.html'}",
               err=True)


class ExportFormat(str, Enum):
    webdataset = "webdataset"
    hf = "hf"
    hub = "hub"
    folder = "folder"
    embed = "embed"
    jsonl = "jsonl"


_TO = ("webdataset: tar shards; hf: datasets.save_to_disk; hub: parquet + dataset card for load_dataset(DEST) and "
       "the Hub; folder: <stem>.jpg + <stem>.txt for trainers (kohya sd-scripts, SimpleTuner, ai-toolkit, "
       "OneTrainer); embed: image copies with the caption in their XMP/IPTC/EXIF; jsonl: one row per line.")


def export_command(
    out_dir: Path = typer.Argument(..., help="A pixscribe output directory."),
    dest: Path = typer.Argument(..., help="Where to write: a directory, or a .jsonl file for --to jsonl."),
    to: ExportFormat = typer.Option(..., "--to", help=_TO),
    caption_column: str = typer.Option("caption", "--caption-column", help="Column the text is taken from "
                                       "(re_caption, caption_plain, ...)."),
    mix_original: Optional[float] = typer.Option(None, "--mix-original", help="Write `text`: the original caption "
                                                 "with probability P (the original's share), else the new one "
                                                 "(per id, reproducible)."),
    mix_per: str = typer.Option("sample", "--mix-per", help="sample: also write both captions so the training "
                                "loader draws per sample and epoch (pixscribe.report.mix); row: only the fixed "
                                "`text`."),
    mix: Optional[str] = typer.Option(None, "--mix", help="One of several columns per row, e.g. "
                                      "'short=0.3,long=0.7' or 'short,long' (per id, reproducible, --seed)."),
    lines: bool = typer.Option(False, "--lines", help="--to folder with --mix: every mixed column on its own line "
                               "(trainers that pick a random line per step)."),
    prefix: str = typer.Option("", "--prefix", help="Put before every text, e.g. a trigger word: 'ohwx, '."),
    suffix: str = typer.Option("", "--suffix", help="Put after every text."),
    seed: int = typer.Option(0, "--seed", help="Seed of --mix-original, --mix and --test-fraction."),
    original_column: str = typer.Option("org_caption", "--original-column", help="Column of the original caption."),
    sidecars: bool = typer.Option(False, "--sidecars", help="--to folder/embed: also <stem>.json with the row."),
    test_fraction: float = typer.Option(0.0, "--test-fraction", help="--to hub: share of rows in a test split "
                                        "(per id, reproducible)."),
    text_only: bool = typer.Option(False, "--text-only", help="No images (webdataset, hf, hub)."),
    keep_errors: bool = typer.Option(False, "--keep-errors", help="Also export rows whose captioning failed."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Samples per webdataset shard or hub parquet file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DEST if it is an earlier export."),
    no_fetch: bool = typer.Option(False, "--no-fetch", help="Never fetch URL sources."),
    allow_private_urls: bool = typer.Option(False, "--allow-private-urls", help="Allow URLs on private addresses."),
    allow_any_path: bool = typer.Option(False, "--allow-any-path", help=_ANY_PATH),
) -> None:
    """Hand an output on: webdataset shards, an HF dataset, a trainer's image folder, images with embedded captions, jsonl."""
    from .export import ExportOptions, export

    opts = ExportOptions(fmt=to.value, caption_column=caption_column, mix_original=mix_original, mix_per=mix_per,
                         mix=mix, lines=lines, prefix=prefix, suffix=suffix, seed=seed, original_column=original_column,
                         sidecars=sidecars, test_fraction=test_fraction, text_only=text_only, keep_errors=keep_errors,
                         shard_size=shard_size, overwrite=overwrite, fetch_urls=not no_fetch,
                         allow_private_urls=allow_private_urls, allow_any_path=allow_any_path)
    res = export(out_dir, dest, opts)
    typer.echo(res.describe(), err=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``export`` to a Typer app."""
    app.command("report")(report_command)
    app.command("export")(export_command)
