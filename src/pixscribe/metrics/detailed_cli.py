"""``pixscribe eval --metrics amber|capture|dlc_bench|caparena|comprecap``: metrics for detailed, region and
panoptic captions, each scored against its own benchmark files (not ``--refs``).

    pixscribe eval --metrics amber --pred responses.json --amber-data AMBER/data
    pixscribe eval --metrics capture --pred parses.json        # frozen parses of candidates and references
    pixscribe eval --metrics dlc_bench --pred dam_3b_v1.json --dlc-data DLC-bench --judge M --judge-base-url URL
    pixscribe eval --metrics caparena --pred captions.json --caparena-data caparena_auto_600.json --caparena-images D ...
    pixscribe eval --metrics comprecap --pred longcaps.json --comprecap-data CompreCap_dataset --judge M ...

:func:`with_detailed` adds these options to the ``eval`` command; the metrics run on their
own (not beside caption metrics), and judged ones use the judge options of ``eval``
(``--judge``, ``--judge-replay``, ``--judge-transcript``; metrics/judge.py).
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..errors import ConfigError

DETAILED_OPTIONS: list[tuple[str, Any, Any]] = [
    ("amber_data", Optional[Path], typer.Option(None, "--amber-data", help="AMBER: its data/ folder "
                                                "(annotations.json, relation.json, safe_words.txt)")),
    ("dlc_data", Optional[Path], typer.Option(None, "--dlc-data", help="DLC-Bench: folder with qa.json and "
                                              "class_names.json")),
    ("dlc_responses", Optional[Path], typer.Option(None, "--dlc-responses", help="DLC-Bench: the judge's saved "
                                                   "answers (the reference's *_eval.json) instead of a judge")),
    ("caparena_data", Optional[Path], typer.Option(None, "--caparena-data", help="CapArena-Auto: "
                                                   "caparena_auto_600.json (references and baseline captions)")),
    ("caparena_verdicts", Optional[Path], typer.Option(None, "--caparena-verdicts", help="CapArena-Auto: saved "
                                                       "pairwise verdicts (the reference's <model>.json) to score")),
    ("caparena_prompts", Optional[Path], typer.Option(None, "--caparena-prompts", help="CapArena-Auto: the "
                                                      "reference's vlm_as_a_judge.py, whose judge prompts are read "
                                                      "(not run); needed to judge")),
    ("caparena_images", Optional[Path], typer.Option(None, "--caparena-images", help="CapArena-Auto: the 600 "
                                                     "images, for judging")),
    ("caparena_model", str, typer.Option("pixscribe", "--caparena-model", help="CapArena-Auto: the name of the "
                                         "model being scored")),
    ("comprecap_data", Optional[Path], typer.Option(None, "--comprecap-data", help="CompreCap: the benchmark folder "
                                                    "(anno.json, images/)")),
    ("detail_option", Optional[list[str]], typer.Option(None, "--detail-option", help="METRIC.KEY=VALUE for these "
                                                        "metrics, e.g. amber.similarity=minilm (repeatable)")),
]
NAMES = [n for n, _, _ in DETAILED_OPTIONS]


def split_options(options: list[str], known: dict[str, set[str]]) -> dict[str, dict[str, str]]:
    """``["amber.threshold=0.5"]`` -> ``{"amber": {"threshold": "0.5"}}``, checked against ``known``."""
    out: dict[str, dict[str, str]] = {m: {} for m in known}
    for opt in options:
        key, sep, value = opt.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not sep or not dot or metric not in known or name not in known[metric]:
            choices = "; ".join(f"{m}.{{{','.join(sorted(k))}}}" for m, k in known.items())
            raise ConfigError(f"--detail-option {opt!r}: expected METRIC.KEY=VALUE, one of {choices}")
        out[metric][name] = value.strip()
    return out


def run_detailed(ms: list[str], kw: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Score every metric of ``ms`` (all detailed) and merge their reports."""
    from . import detailed_runs as R
    from .eval_cli import _judge_setup, record_judge

    opts = split_options(extra["detail_option"] or [], R.OPTIONS)
    judge = None  # made only when asked for: saved answers or verdicts need none (each run says when it must)
    if kw["judge"] or kw["judge_replay"]:
        judge = _judge_setup(ms, kw["judge"], kw["judge_base_url"] or [], kw["judge_backend"],
                             kw["judge_api_key_env"], kw["judge_cache"], kw["judge_replay"])
    report: dict[str, Any] = {"corpus": {}, "ci95": {}, "per_image": {}, "n_images": 0,
                              "missing": {"count": 0, "ids": []}, "extra": {"count": 0, "ids": []},
                              "info": {"metrics": ms, "pred": str(kw["pred"]), "column": kw["column"]}}
    try:
        for m in ms:
            part = R.RUNS[m](kw, extra, opts.get(m, {}), judge)
            report["corpus"].update(part["corpus"])
            report["info"][m] = part["info"]
            report["per_image"][m] = part["per_image"]
            report["n_images"] = max(report["n_images"], part["n"])
            for k in ("missing", "extra"):
                ids = part.get(k, [])
                report[k] = {"count": report[k]["count"] + len(ids), "ids": report[k]["ids"] + ids}
        record_judge(report, judge, kw.get("judge_transcript"), kw.get("output"))
    finally:
        if judge is not None:
            judge.close()
    return report


def with_detailed(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (the eval command) with the detailed metrics' options."""
    sig = inspect.signature(command)
    params = list(sig.parameters.values())
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
               for n, a, d in DETAILED_OPTIONS]

    @functools.wraps(command)
    def wrapped(**kw: Any) -> Any:
        from .evaluate import DETAILED_METRICS, parse_metrics

        extra = {n: kw.pop(n) for n in NAMES}
        try:
            ms = parse_metrics(kw["metrics"])
        except ConfigError:
            return command(**kw)  # the command says what is wrong
        chosen = [m for m in ms if m in DETAILED_METRICS]
        if not chosen:
            return command(**kw)
        if len(chosen) != len(ms):
            raise ConfigError(f"{', '.join(chosen)} are scored on their own; drop "
                              f"{', '.join(m for m in ms if m not in chosen)} from --metrics")
        report = run_detailed(chosen, kw, extra)
        _finish(report, kw.get("output"))

    hints = dict(getattr(command, "__annotations__", {}))
    hints.update({n: a for n, a, _ in DETAILED_OPTIONS})
    wrapped.__annotations__ = hints
    wrapped.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    if hasattr(wrapped, "__wrapped__"):
        del wrapped.__wrapped__  # typer reads the signature above, not the wrapped function's
    return wrapped


def _finish(report: dict[str, Any], output: Path | None) -> None:
    from .eval_cli import _print_table

    _print_table(report)
    if output is not None:
        from ..io.writers import atomic_write_bytes

        atomic_write_bytes(output, json.dumps(report, indent=1).encode())
        typer.echo(f"wrote {output}")


__all__ = ["DETAILED_OPTIONS", "run_detailed", "split_options", "with_detailed"]
