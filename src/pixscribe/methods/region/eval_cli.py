"""``pixscribe eval-regions``: region captions against references keyed by region id, per
prompting mode and attribute (registered by :func:`pixscribe.metrics.eval_cli.register`).

    pixscribe eval-regions --pred out_focal/ --pred out_box/ --refs region_refs.jsonl -o report.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

_SHOWN = ("bleu_4", "meteor", "rouge_l", "cider_d", "bertscore_f1")


def _cell(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = [m for m in _SHOWN if any(m in e["corpus"] for e in report["by_prompt_mode"].values())]
    t = Table(title=f"pixscribe eval-regions: {report['n_refs']} reference regions")
    for c in ("prompt mode", "attribute", "n", *cols):
        t.add_column(c, justify="left" if c in ("prompt mode", "attribute") else "right")
    for mode, e in report["by_prompt_mode"].items():
        t.add_row(mode, "all", str(e["n"]), *(_cell(e["corpus"].get(c)) for c in cols))
        for attr, a in e["by_attribute"].items():
            t.add_row("", attr, str(a["n"]), *(_cell(a["corpus"].get(c)) for c in cols))
    Console().print(t)


def eval_regions_command(
    pred: list[Path] = typer.Option(..., "--pred", help="region output (dir, .jsonl, .parquet); repeat to compare runs"),
    refs: Path = typer.Option(..., "--refs", help=".jsonl/.parquet rows: region_id, refs (list or text), attribute"),
    metrics: str = typer.Option("bleu,meteor,rouge_l,cider_d", "--metrics", help="comma list, as for pixscribe eval"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the JSON report here"),
    bertscore_model: str | None = typer.Option(None, "--bertscore-model", help="local dir or hub id"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for ci95 (0 = none)"),
    seed: int = typer.Option(0, "--seed"),
    max_caption_chars: int = typer.Option(10_000, "--max-caption-chars",
                                          help="longest caption or reference read, in characters; a longer one is an "
                                               "error naming it"),
) -> None:
    """Region captions: BLEU-4, METEOR, ROUGE-L, CIDEr-D, BERTScore per prompting mode and attribute."""
    from .evaluate import evaluate_regions, read_region_predictions, read_region_references

    rows = [r for p in pred for r in read_region_predictions(p, max_caption_chars)]
    gt, attrs = read_region_references(refs, max_caption_chars)
    report = evaluate_regions(rows, gt, attrs, metrics, bertscore_model=bertscore_model, bootstrap=bootstrap, seed=seed)
    report["info"] = {"pred": [str(p) for p in pred], "refs": str(refs), "metrics": metrics}
    _print_table(report)
    if output is not None:
        from ...io.writers import atomic_write_bytes

        atomic_write_bytes(output, json.dumps(report, indent=1).encode())
        typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add ``eval-regions`` (the region method's evaluator) to a Typer app."""
    app.command("eval-regions")(eval_regions_command)


__all__ = ["eval_regions_command", "register"]
