"""Output folders made by the code before rows recorded what their stages read (tests/compat,
made with commit 44eff38) still resume and are reused where nothing changed: no "changed
configuration" refusal, no request for an unchanged row; a row whose inputs changed since is
recomputed. Through the real command, the region rows through the loopback echo server."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_plugin import pixscribe
from fixtures_reuse import last_summary as summary
from fixtures_reuse import relocate_fixture
from fixtures_reuse import region_cli as region
from fixtures_reuse import rows_once as rows_of

FIXTURE = Path(__file__).resolve().parents[1] / "compat" / "v44eff38"


def relocate(tmp: Path) -> Path:
    return relocate_fixture(FIXTURE, tmp)






def test_a_partial_run_of_the_old_code_resumes(plugin_env, tmp_path):
    d = relocate(tmp_path)
    out = d / "out_scripted_partial"
    old = {r["id"]: r["final"] for f in sorted(out.glob("part-*.parquet")) + sorted(out.glob("_state/batches/*/*"))
           for r in pq.read_table(f).to_pylist()}
    assert len(old) == 7
    r = pixscribe(plugin_env, "caption", str(d / "in" / "imgs.jsonl"), "-o", str(out), "--method", "scripted",
                  "--shard-size", "5", "--batch-size", "1", "--flush-rows", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = summary(out)
    assert s["rows_written"] == 5 and s["rows_skipped"] == 7 and s["stages"]["see"]["computed"] == 5
    rows = rows_of(out)
    assert len(rows) == 12 and all(rows[i]["final"] == f for i, f in old.items())


@pytest.mark.parametrize("name,table", [("out_region_rows", "regions.jsonl"), ("out_region_images", "images.jsonl")])
def test_old_region_outputs_resume_and_are_reused_where_nothing_changed(echo_server, plugin_env, tmp_path, name, table):
    d = relocate(tmp_path)
    old, src = d / name, d / "in" / table
    before = rows_of(old)
    echo_server.reset()
    # since a region's own attribute switches its task when --task is not given, such a run differs
    # from these (every region dense): it is refused by name; --task dense is what they did
    r = pixscribe(plugin_env, "caption", str(src), "-o", str(old), "--method", "region", "--region-prompt", "focal",
                  "--backend", "openai", "--base-url", echo_server.url, "--vlm", "pixscribe-test", "--no-progress")
    assert r.returncode == 2 and "region.own_attribute: None -> True" in r.stderr, r.stderr
    region(echo_server, plugin_env, src, old, "--task", "dense")  # a plain rerun: finished, not refused
    assert summary(old)["rows_written"] == 0
    region(echo_server, plugin_env, src, tmp_path / "new", "--reuse", str(old), "--task", "dense")
    region(echo_server, plugin_env, src, old, "--overwrite", "--task", "dense")
    assert echo_server.stats()["chat_requests"] == 0
    for out in (tmp_path / "new", old):
        assert summary(out)["stages"]["region"]["reused"] == len(before)
        rows = rows_of(out)
        assert {k: r["caption"] for k, r in rows.items()} == {k: r["caption"] for k, r in before.items()}
        assert {k: r["regions"] for k, r in rows.items()} == {k: r["regions"] for k, r in before.items()}


def test_an_old_region_row_whose_box_changed_is_recomputed(echo_server, plugin_env, tmp_path):
    d = relocate(tmp_path)
    src = d / "in" / "images.jsonl"
    lines = [json.loads(x) for x in src.read_text().splitlines()]
    lines[1]["regions"][0]["box"] = [40, 10, 62, 40]  # image p's only region moves
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    echo_server.reset()
    region(echo_server, plugin_env, src, tmp_path / "new", "--reuse", str(d / "out_region_images"), "--task", "dense")
    assert echo_server.stats()["chat_requests"] == 1
    rows = rows_of(tmp_path / "new")
    assert rows["p"]["regions"][0]["box"] == [40.0, 10.0, 62.0, 40.0]
    assert rows["s"]["regions"] == rows_of(d / "out_region_images")["s"]["regions"]
