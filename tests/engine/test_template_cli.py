"""Prompt templates from the CLI: `--prompt` naming input columns, through the loopback echo
server (its answer repeats the prompt, so the filled prompt is what comes back)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe
from pixscribe.testing.openai_server import ServerProcess

TEMPLATE = "Recaption this photo. Its alt text: {org_caption}. Taken in {place}. {{Keep it short.}}"


@pytest.fixture(scope="module")
def echo():
    with ServerProcess("--mode", "echo") as srv:
        yield srv


@pytest.fixture
def rows(tmp_path) -> Path:
    for i, c in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (40 + 8 * i, 32), c).save(tmp_path / f"p{i}.png")
    lines = [{"id": "a", "image": "p0.png", "caption": "a red square", "place": "Oslo"},
             {"id": "b", "image": "p1.png", "caption": "looks like {place} but is not", "place": "Lima"},
             {"id": "c", "image": "p2.png", "caption": "a blue square", "place": None}]
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def _caption(env, echo, src, out, *extra):
    return pixscribe(env, "caption", str(src), "-o", str(out), "--backend", "openai", "--base-url", echo.url,
                     "--vlm", "pixscribe-test", "--no-progress", "--max-new-tokens", "200", "--prompt", TEMPLATE, *extra)


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


def test_a_template_fills_two_columns_as_quoted_data(plugin_env, echo, rows, tmp_path):
    r = _caption(plugin_env, echo, rows, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    got = _rows(tmp_path / "out")
    assert got["a"]["re_caption"].startswith(
        'echo: Recaption this photo. Its alt text: "a red square". Taken in "Oslo". {Keep it short.}')
    # a value that looks like a placeholder is data: never expanded again
    assert got["b"]["re_caption"].startswith(
        'echo: Recaption this photo. Its alt text: "looks like {place} but is not". Taken in "Lima".')
    assert got["c"]["re_caption"].startswith('echo: Recaption this photo. Its alt text: "a blue square". Taken in "".')
    shas = {k: json.loads(v["stages"])["recap"]["prompt_filled_sha"] for k, v in got.items()}  # each row's own
    assert len(set(shas.values())) == 3
    run = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert TEMPLATE in json.dumps(run)  # the template is in the fingerprint's fields


def test_a_missing_value_can_fail_its_row(plugin_env, echo, rows, tmp_path):
    r = _caption(plugin_env, echo, rows, tmp_path / "out", "-S", "recap.template_missing=error")
    assert r.returncode == 0, r.stderr
    got = _rows(tmp_path / "out")
    assert got["c"]["error"] == "template: the row's 'place' is empty (template_missing=error)"
    assert got["a"]["error"] is None and got["b"]["error"] is None


def test_a_placeholder_naming_no_column_stops_the_run(plugin_env, echo, rows, tmp_path):
    r = pixscribe(plugin_env, "caption", str(rows), "-o", str(tmp_path / "out"), "--backend", "openai",
                  "--base-url", echo.url, "--vlm", "pixscribe-test", "--prompt", "Describe {weather} here.")
    assert r.returncode == 2 and "'weather'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
