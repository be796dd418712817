"""``pixscribe pope build``: POPE question files from COCO instances or POPE's segmentation format.

Writes, as RUCAIBox/POPE ``main.py`` does, into OUT: ``{dataset}_pope_{split}.json`` (one
question per line), ``{dataset}_ground_truth_objects.json`` and ``{dataset}_co_occur.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ConfigError
from .pope_build import SPLITS, TEMPLATE, VARIANTS

pope_app = typer.Typer(help="POPE question sets (object probing) in POPE's own file formats.",
                       no_args_is_help=True, add_completion=False)


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pope_app.command("build")
def build_command(
    source: Path = typer.Argument(..., help="COCO instances json, or POPE segmentation lines {image, objects}"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory"),
    dataset: str = typer.Option("coco", "--dataset", help="file name prefix, as POPE's --dataset"),
    sample_num: int = typer.Option(3, "--sample-num", help="positives (and negatives) per image"),
    img_num: int = typer.Option(500, "--img-num", help="images to draw (0 = every image with enough objects)"),
    template: str = typer.Option(TEMPLATE, "--template", help="question template with {} for the object"),
    seed: int = typer.Option(0, "--seed", help="seed of the random draws (the reference's random.seed)"),
    splits: str = typer.Option(",".join(SPLITS), "--splits", help="which question files to write"),
    variant: str = typer.Option("pope", "--variant", help="pope (the reference's wording) or pope_fixed"),
) -> None:
    """Build POPE's random, popular and adversarial question files (the same questions as POPE for a seed)."""
    from ..io.writers import atomic_write_bytes
    from .io import MetricsInputError
    from .pope_build import build_pope, read_segments

    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SPLITS]
    if bad or not wanted:
        raise ConfigError(f"--splits: choose from {', '.join(SPLITS)} (got {splits!r})")
    if variant not in VARIANTS:
        raise ConfigError(f"--variant: choose from {', '.join(VARIANTS)} (got {variant!r})")
    if not source.is_file():
        raise MetricsInputError(f"{source}: no such file")
    sets = build_pope(read_segments(str(source)), sample_num, img_num, template, seed, variant)
    out.mkdir(parents=True, exist_ok=True)
    for sp in wanted:
        path = out / f"{dataset}_pope_{sp}.json"
        atomic_write_bytes(path, _jsonl([q.to_json() for q in sets[sp]]))
        typer.echo(f"wrote {path} ({len(sets[sp])} questions, {len(sets['images'])} images)")
    atomic_write_bytes(out / f"{dataset}_ground_truth_objects.json", json.dumps(sets["ground_truth_objects"]).encode())
    atomic_write_bytes(out / f"{dataset}_co_occur.json", json.dumps(sets["co_occur"]).encode())


def register(app: typer.Typer) -> None:
    """Add the ``pope`` command group to a Typer app."""
    app.add_typer(pope_app, name="pope")
