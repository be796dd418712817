"""Run-level figures for the report's first page, computed by DuckDB over every row.

Counts, errors by kind, seconds, per-stage status, and the three histograms (caption length
in words, hallucinations per image, seconds per row) are SQL aggregates: they read a few
columns of every row, vectorised, and hold only the results. ``_run.json`` gives the
models, prompts and fingerprints; ``_state/summaries`` the wall-clock throughput.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputFileError
from .parts import OutputDir
from .query import Query

__all__ = ["run_stats", "read_eval"]

BINS = 20


def _histogram(q: Query, expr: str, where: str, integer: bool = False) -> dict[str, Any] | None:
    """Counts of ``expr`` in ``BINS`` equal bins from 0 to its 99th percentile, values above it
    in one last ``>=`` bin; for integers up to ``BINS``, one bin per value."""
    src = f"(SELECT ({expr})::DOUBLE AS v FROM rows WHERE {where})"
    p99, hi, n = q.all(f"SELECT quantile_cont(v, 0.99), max(v), count(v) FROM {src}")[0]
    if not n:
        return None
    if integer and hi <= BINS:
        width, nb = 1.0, int(hi) + 1
    else:
        width = float(p99) / BINS if p99 and p99 > 0 else 1.0
        width, nb = (max(1.0, math.ceil(width)) if integer else width), BINS
    edge = width * nb
    counts = dict(q.all(f"SELECT CASE WHEN v > {edge!r} THEN {nb} ELSE least(floor(v / {width!r}), {nb - 1}) END::INT"
                        f" AS b, count(*) FROM {src} WHERE v IS NOT NULL GROUP BY b"))
    total = nb + (1 if nb in counts else 0)
    return {"width": width, "counts": [int(counts.get(i, 0)) for i in range(total)], "n": int(n),
            "max": float(hi), "overflow": nb in counts, "integer": integer}


def _json_len(q: Query, col: str) -> str:
    typ = q.types.get(col, "")
    if typ.endswith("[]"):
        return f"len({col})"
    return f"CASE WHEN json_valid({col}) THEN json_array_length({col}) END"


def _stage_counts(q: Query, stages: list[str]) -> dict[str, dict[str, int]]:
    if "stages" not in q.types:
        return {}
    out: dict[str, dict[str, int]] = {}
    for name in stages:
        path = "$." + json.dumps(name)
        rows = q.all("SELECT json_extract_string(stages, ?) AS s, "
                     "coalesce(json_extract(stages, ?)::BOOLEAN, false) AS r, count(*) "
                     "FROM rows WHERE json_valid(stages) GROUP BY s, r", [path + ".status", path + ".reused"])
        counts: dict[str, int] = {}
        for status, reused, n in rows:
            key = "not run" if status is None else ("reused" if reused else status)
            counts[key] = counts.get(key, 0) + int(n)
        out[name] = counts
    return out


def _errors(q: Query) -> list[dict[str, Any]]:
    rows = q.all("SELECT split_part(error, ':', 1) AS k, count(*) AS n, min(error) FROM rows "
                 "WHERE error IS NOT NULL GROUP BY k ORDER BY n DESC, k")
    return [{"kind": k.strip() or "(none)", "count": int(n), "example": ex[:300]} for k, n, ex in rows]


def _seconds(q: Query) -> dict[str, Any]:
    if "seconds" not in q.types:
        return {}
    s, mean, p50, p95, mx = q.all("SELECT sum(seconds), avg(seconds), quantile_cont(seconds, 0.5), "
                                  "quantile_cont(seconds, 0.95), max(seconds) FROM rows")[0]
    return {"sum": s, "mean": mean, "p50": p50, "p95": p95, "max": mx}


def _throughput(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sum(int(s.get("rows_written") or 0) for s in summaries)
    secs = sum(float(s.get("seconds") or 0.0) for s in summaries)
    return {"runs": len(summaries), "rows": rows, "seconds": secs, "per_second": rows / secs if secs else None}


def run_stats(out: OutputDir, q: Query, where: str | None = None) -> dict[str, Any]:
    """Everything the run page shows (plain python, ready for the template)."""
    run = out.run_info()
    stages = [s.get("stage") for s in (run.get("method") or {}).get("stages") or [] if isinstance(s, dict)]
    has = q.types
    cap = "caption IS NOT NULL AND trim(caption) <> ''"
    summaries = out.summaries()
    st = {
        "rows": q.count(),
        "matching": q.count(where) if where else None,
        "error_rows": q.scalar("SELECT count(*) FROM rows WHERE error IS NOT NULL") if "error" in has else 0,
        "methods": q.all("SELECT method, count(*) FROM rows GROUP BY method ORDER BY 2 DESC") if "method" in has else [],
        "errors": _errors(q) if "error" in has else [],
        "seconds": _seconds(q),
        "stages": _stage_counts(q, [s for s in stages if s]),
        "throughput": _throughput(summaries),
        "summaries": summaries,
        "run": run,
        "parts": len(out.parts),
        "unfinished": out.unfinished_shards(),
        "hist": {
            "caption_words": _histogram(q, "len(string_split_regex(trim(caption), '\\s+'))", cap, integer=True)
            if "caption" in has else None,
            "hallucinations": _histogram(q, _json_len(q, "hallucinations"), "hallucinations IS NOT NULL", True)
            if "hallucinations" in has else None,
            "seconds": _histogram(q, "seconds", "seconds IS NOT NULL") if "seconds" in has else None,
        },
    }
    return st


def read_eval(path: Path | None) -> dict[str, Any] | None:
    """A ``pixscribe eval -o report.json``: corpus scores, intervals and what was scored."""
    if path is None:
        return None
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"--eval {path}: cannot read the eval report ({exc})") from None
    if not isinstance(d, dict) or not isinstance(d.get("corpus"), dict):
        raise InputFileError(f"--eval {path}: not a `pixscribe eval -o` report (no 'corpus' scores)")
    return {"corpus": d["corpus"], "ci95": d.get("ci95") or {}, "n": d.get("n_images", d.get("n_questions")),
            "missing": (d.get("missing") or {}).get("count"), "info": d.get("info") or {}, "path": str(path)}
