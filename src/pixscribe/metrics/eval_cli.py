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

from ..errors import ConfigError


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    what = f"{report['n_questions']} questions" if "n_questions" in report else f"{report['n_images']} images"
    t = Table(title=f"pixscribe eval: {what}")
    t.add_column("metric")
    t.add_column("score", justify="right")
    t.add_column("95% CI", justify="right")
    for k, v in report["corpus"].items():
        ci = report["ci95"].get(k)
        t.add_row(k, "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}",
                  f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    c = Console()
    c.print(t)
    for why in report["info"].get("nan", {}).values():
        c.print(f"[yellow]{why}[/yellow]", highlight=False)
    miss = report["missing"]
    if miss["count"]:
        shown = ", ".join(miss["ids"][:10]) + (" ..." if miss["count"] > 10 else "")
        which = "labelled questions have no answer" if "n_questions" in report else "reference ids have no prediction"
        c.print(f"[yellow]{miss['count']} {which} (not scored): {shown}[/yellow]")
    if report["extra"]["count"]:
        c.print(f"{report['extra']['count']} predictions have no references (ignored)")
    pc = report["info"].get("pancapscore_unofficial")
    if pc:
        c.print(f"PancapScore (unofficial: not checked against the released metric code): {pc['scored']} images "
                f"scored, {len(pc['errors'])} not scored (judge errors)")
    j = report["info"].get("judge")
    if j:
        t = j.get("transcript")
        c.print(f"judge {j.get('model')} ({j.get('backend')}): {j.get('replayed')} answers replayed, "
                f"{j.get('cache_hits')} from the cache, {j.get('generated')} generated, {j.get('failed')} failed"
                + (f"; transcript {t['path']} (sha256 {t['sha256'][:16]})" if t else ""))


def eval_command(
    pred: Path = typer.Option(..., "--pred", help="pixscribe output dir, COCO results json, or jsonl/parquet {id, caption}; "
                              "with pope: POPE answers ({question, answer} lines, or rows with question_id/id)"),
    refs: Optional[Path] = typer.Option(None, "--refs", help="COCO captions json, or json/jsonl/parquet rows {id, refs: [...]} or {id, caption}"),
    metrics: str = typer.Option("bleu,meteor,rouge_l,cider_d", "--metrics",
                                help="comma list: bleu,meteor,rouge_l,cider_d,cider,spice,chair,chair_fixed,bertscore,"
                                     "clipscore,lin,lin_fixed,all; pancapscore_unofficial (with --judge); "
                                     "or pope / pope_fixed with --pope-labels; "
                                     "or, on their own, amber, capture, dlc_bench, caparena, comprecap (docs/metrics.md)"),
    tokenize: str = typer.Option("ptb", "--tokenize", help="what BLEU/METEOR/ROUGE-L/CIDEr read: ptb "
                                 "(pycocoevalcap's PTB tokenizer, COCO's numbers) or none (the strings as given, "
                                 "line breaks deleted: IT's DID-Bench scorer)"),
    column: str = typer.Option("caption", "--column", help="caption (or answer) column of PRED"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write the JSON report here"),
    instances: Optional[Path] = typer.Option(None, "--instances", help="COCO instances json (CHAIR ground truth)"),
    pope_labels: Optional[Path] = typer.Option(None, "--pope-labels", help="POPE question file with labels"),
    bertscore_model: Optional[str] = typer.Option(None, "--bertscore-model", help="local dir or hub id"),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="local dir or hub id"),
    images: Optional[Path] = typer.Option(None, "--images", help="directory of <id>.jpg for CLIPScore"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for ci95 (0 = none)"),
    seed: int = typer.Option(0, "--seed"),
    judge: Optional[str] = typer.Option(None, "--judge", help="PancapScore's LLM judge: local dir, hub id or served model name"),
    judge_base_url: Optional[list[str]] = typer.Option(None, "--judge-base-url",
                                                       help="OpenAI-compatible server(s) of the judge (repeatable)"),
    judge_backend: Optional[str] = typer.Option(None, "--judge-backend",
                                                help="transformers|openai|vllm (default: openai with --judge-base-url)"),
    judge_api_key_env: Optional[str] = typer.Option(None, "--judge-api-key-env", help="env variable holding the API key"),
    judge_cache: Path = typer.Option(Path("~/.cache/pixscribe/judge.sqlite3"), "--judge-cache",
                                     help="SQLite file of the judge's cached answers"),
    judge_replay: Optional[Path] = typer.Option(None, "--judge-replay",
                                                help="a judge transcript of an earlier run: its answers come first "
                                                     "(without --judge, they are the only judge)"),
    judge_transcript: Optional[Path] = typer.Option(None, "--judge-transcript",
                                                    help="write every judge exchange here (default with -o: "
                                                         "REPORT.judge.jsonl); its sha256 goes into the report"),
    pancap_option: Optional[list[str]] = typer.Option(None, "--pancap-option",
                                                      help="PancapScore setting KEY=VALUE, e.g. iou_threshold=0.5 (repeatable)"),
    max_caption_chars: int = typer.Option(10_000, "--max-caption-chars",
                                          help="longest caption or reference read, in characters (METEOR's time climbs "
                                               "steeply past it); a longer one is an error naming it"),
) -> None:
    """Caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (= pycocoevalcap), SPICE, CHAIR, BERTScore, CLIPScore,
    LIN-Bench, PancapScore (unofficial); POPE."""
    from .evaluate import POPE_METRICS, TOKENIZERS, evaluate, metric_notes, parse_metrics
    from .io import MetricsInputError, read_predictions, read_references

    judge_obj = None
    try:
        ms = parse_metrics(metrics)
        if tokenize not in TOKENIZERS:
            raise ConfigError(f"--tokenize {tokenize}: choose from {', '.join(TOKENIZERS)}")
        notes = metric_notes(metrics)
        for note in notes:
            typer.echo(note, err=True)
        if any(m in POPE_METRICS for m in ms):
            report = _pope_eval(ms, pred, pope_labels, column, bootstrap, seed)
        else:
            if refs is None:
                raise MetricsInputError("--refs is needed for caption metrics (POPE needs --pope-labels instead)")
            preds, empty = read_predictions(pred, column, max_caption_chars)
            gt = read_references(refs, max_caption_chars)
            _check_overlap(preds, empty, gt, pred, refs)
            objs = None
            if instances is not None:
                from .chair import read_coco_instances

                objs = read_coco_instances(str(instances))
            pancap_cfg = _pancap_config(ms, pancap_option or [])
            judge_obj = _judge_setup(ms, judge, judge_base_url or [], judge_backend, judge_api_key_env, judge_cache,
                                     judge_replay)
            report = evaluate(preds, gt, ms, objects=objs, bertscore_model=bertscore_model, clip_model=clip_model,
                              images=str(images) if images else None, bootstrap=bootstrap, seed=seed,
                              missing_preds=empty, judge=judge_obj, pancap_config=pancap_cfg, tokenize=tokenize)
            report["info"]["refs"] = str(refs)
            record_judge(report, judge_obj, judge_transcript, output)
    finally:
        if judge_obj is not None:
            judge_obj.close()
    report["info"]["pred"] = str(pred)
    report["info"]["column"] = column
    if notes:
        report["info"]["notes"] = notes
    _print_table(report)
    if output is not None:
        from ..io.writers import atomic_write_bytes

        atomic_write_bytes(output, json.dumps(report, indent=1).encode())
        typer.echo(f"wrote {output}")


def _check_overlap(preds: dict[str, str], empty: list[str], gt: dict[str, list[str]], pred: Path, refs: Path) -> None:
    """One line naming both files when no prediction's id is a reference's id."""
    from .io import MetricsInputError

    ids = list(preds) + empty
    if ids and not any(k in gt for k in ids):
        raise MetricsInputError(f"no id of --pred {pred} (e.g. {', '.join(repr(k) for k in ids[:3])}) is an id of "
                                f"--refs {refs} (e.g. {', '.join(repr(k) for k in list(gt)[:3])}); ids are compared "
                                "as strings")  # fmt: skip


def _pope_eval(ms: list[str], pred: Path, labels_path: Optional[Path], column: str, bootstrap: int,
               seed: int) -> dict[str, Any]:
    from .evaluate import POPE_METRICS
    from .io import MetricsInputError, read_pope_answers, read_pope_labels
    from .pope import pope_report

    if labels_path is None:
        raise MetricsInputError("--metrics pope needs --pope-labels (the POPE question file with labels)")
    others = [m for m in ms if m not in POPE_METRICS]
    if others:
        raise MetricsInputError(f"POPE is scored on its own; drop {', '.join(others)} from --metrics")
    labels = read_pope_labels(labels_path)
    answers, qids, missing = read_pope_answers(pred, labels, column)
    by_id = {str(lab.get("question_id", n)): lab["label"] == "yes" for n, lab in enumerate(labels, 1)}
    truth = [by_id[q] for q in qids]
    report: dict[str, Any] = {"corpus": {}, "ci95": {}, "counts": {}, "per_question": {}}
    for variant in ms:
        r = pope_report(truth, answers, variant, qids, missing, bootstrap, seed)
        for k in ("corpus", "ci95"):
            report[k].update(r[k])
        report["counts"][variant] = r["counts"]
        report["per_question"][variant] = r["per_question"]
    report.update(n_questions=len(truth), missing={"count": len(missing), "ids": missing},
                  extra={"count": 0, "ids": []}, info={"metrics": ms, "pope_labels": str(labels_path)})
    return report


def _pancap_config(ms: list[str], options: list[str]) -> Any:
    """PancapScore's settings when it is asked for, else None."""
    from .evaluate import PANCAP

    if PANCAP not in ms:
        return None
    from .pancapscore import PancapConfig

    return PancapConfig.from_options(options)


def _judge_setup(ms: list[str], judge: str | None, base_urls: list[str], backend: str | None,
                 api_key_env: str | None, cache: Path, replay: Path | None) -> Any:
    """The cached judge (with the transcript to replay) when a judged metric is asked for, else None."""
    from .evaluate import JUDGED_METRICS
    from .judge import make_judge

    needing = [m for m in ms if m in JUDGED_METRICS]
    if not needing:
        return None
    if not judge and replay is None:
        raise ConfigError(f"{', '.join(needing)} needs an LLM judge: --judge MODEL (a local model, or a served one "
                          "with --judge-base-url URL), or --judge-replay TRANSCRIPT")
    return make_judge(judge, backend=backend, base_urls=base_urls, api_key_env=api_key_env, cache=cache,
                      replay=replay)


def record_judge(report: dict[str, Any], judge: Any, transcript: Path | None, output: Path | None) -> None:
    """Write the judge's transcript (``--judge-transcript``, else beside ``-o``) and put the judge,
    the transcript's path and sha256 into ``report["info"]["judge"]``."""
    if judge is None:
        return
    info = judge.describe()
    path = transcript or (output.with_name(output.stem + ".judge.jsonl") if output is not None else None)
    if path is not None:
        info["transcript"] = judge.write_transcript(path)
    report["info"]["judge"] = info


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command (with the D2I-Bench options of metrics/d2i.py) and the ``pope``
    group (``pope build``); ``eval-regions`` is the region method's (methods/region/eval_cli.py)."""
    from . import pope_cli
    from .d2i import with_d2i
    from .detailed_cli import with_detailed

    app.command("eval")(with_detailed(with_d2i(eval_command)))
    pope_cli.register(app)


def _main() -> None:
    from ..commands import Commands

    app = typer.Typer(add_completion=False, cls=Commands)
    register(app)

    @app.callback()
    def _cb() -> None:
        """pixscribe metrics"""

    app()


if __name__ == "__main__":
    _main()
