"""``pixscribe eval``: score predictions against references, print a table, write JSON.

The lead's CLI calls :func:`register` on its Typer app; ``python -m
pixscribe.metrics.eval_cli`` runs the command on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"pixscribe eval: {report['n_images']} images")
    t.add_column("metric")
    t.add_column("score", justify="right")
    t.add_column("95% CI", justify="right")
    for k, v in report["corpus"].items():
        ci = report["ci95"].get(k)
        t.add_row(k, "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}",
                  f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    c = Console()
    c.print(t)
    miss = report["missing"]
    if miss["count"]:
        shown = ", ".join(miss["ids"][:10]) + (" ..." if miss["count"] > 10 else "")
        c.print(f"[yellow]{miss['count']} reference ids have no prediction (not scored): {shown}[/yellow]")
    if report["extra"]["count"]:
        c.print(f"{report['extra']['count']} predictions have no references (ignored)")


def eval_command(
    pred: Path = typer.Option(..., "--pred", help="pixscribe output dir, COCO results json, or jsonl/parquet {id, caption}"),
    refs: Path = typer.Option(..., "--refs", help="COCO captions annotation json, or jsonl/parquet {id, refs: [...]}"),
    metrics: str = typer.Option("bleu,meteor,rouge_l,cider_d", "--metrics",
                                help="comma list: bleu,meteor,rouge_l,cider_d,spice,chair,bertscore,clipscore,lin,all"),
    column: str = typer.Option("caption", "--column", help="caption column of PRED"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write the JSON report here"),
    instances: Optional[Path] = typer.Option(None, "--instances", help="COCO instances json (CHAIR ground truth)"),
    bertscore_model: Optional[str] = typer.Option(None, "--bertscore-model", help="local dir or hub id"),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="local dir or hub id"),
    images: Optional[Path] = typer.Option(None, "--images", help="directory of <id>.jpg for CLIPScore"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for ci95 (0 = none)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (= pycocoevalcap), SPICE, CHAIR, BERTScore, CLIPScore, LIN-Bench."""
    from .evaluate import evaluate
    from .io import MetricsInputError, read_predictions, read_references

    try:
        preds, empty = read_predictions(pred, column)
        gt = read_references(refs)
        objs = None
        if instances is not None:
            from .chair import read_coco_instances

            objs = read_coco_instances(str(instances))
        report = evaluate(preds, gt, metrics, objects=objs, bertscore_model=bertscore_model, clip_model=clip_model,
                          images=str(images) if images else None, bootstrap=bootstrap, seed=seed,
                          missing_preds=empty)
    except (MetricsInputError, ValueError, FileNotFoundError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    report["info"]["pred"] = str(pred)
    report["info"]["refs"] = str(refs)
    report["info"]["column"] = column
    _print_table(report)
    if output is not None:
        from ..io.writers import atomic_write_bytes

        atomic_write_bytes(output, json.dumps(report, indent=1).encode())
        typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to a Typer app (with the D2I-Bench options of metrics/d2i.py)."""
    from .d2i import with_d2i

    app.command("eval")(with_d2i(eval_command))


def _main() -> None:
    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _cb() -> None:
        """pixscribe metrics"""

    app()


if __name__ == "__main__":
    _main()
