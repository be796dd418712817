"""The end-of-run summary as printed: latencies with their unit, model requests told apart from
failed rows."""

from __future__ import annotations

import io

from rich.console import Console

from pixscribe.cli import print_summary
from pixscribe.engine.summary import Summary


def _printed(summary: Summary) -> str:
    c = Console(record=True, width=200, emoji=False, file=io.StringIO())  # as the CLI's
    print_summary(summary, "out", console=c)
    return " ".join(c.export_text().split())


def test_failed_requests_beside_no_failed_rows_are_explained_and_latency_has_a_unit():
    s = Summary(rows_written=7)
    s.stages = {"objects": {"computed": 7, "reused": 0, "failed": 0}}
    s.usage = {"llm:qwen": {"requests": 14, "failures": 7, "retries": 7, "tokens_in": 900, "tokens_out": 300,
                            "latency_p50": 0.41234, "latency_p95": 1.5},
               "dense": {"latency_mean": 0.25, "images": 7}}
    out = _printed(s)
    assert "stage objects (rows) │ computed 7, reused 0, failed 0" in out
    assert "llm:qwen: requests │ 14 (7 failed after retries, 7 retries)" in out
    assert "llm:qwen: latency p50 / p95 │ 0.412 s / 1.500 s" in out
    assert "dense: latency_mean │ 0.25 s" in out and "dense: images │ 7" in out
    assert "fails its row only when the stage cannot recover" in out and "'failed' counts rows" in out


def test_no_explanation_when_nothing_was_retried():
    s = Summary(rows_written=1)
    s.usage = {"vlm:m": {"requests": 1, "failures": 0, "retries": 0, "tokens_in": 3, "tokens_out": 2,
                         "latency_p50": None, "latency_p95": None}}
    out = _printed(s)
    assert "vlm:m: requests │ 1 (0 failed after retries, 0 retries)" in out and "latency" not in out
    assert "cannot recover" not in out
