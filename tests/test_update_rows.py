"""``--update`` after a table changed (issue 23, point 12): rows whose id and content did not
change are kept (reused, no request), new rows are computed, removed rows are dropped, and
every row is in the output exactly once. Through the real command with the test plugin's
two-stage scripted method (its answers come from the pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe


def images(d: Path, n: int, seed: int = 0) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"img{seed}_{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, size=(8, 12, 3), dtype=np.uint8)).save(d / name)
        names.append(name)
    return names


def write_table(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), path)


def caption(env, src: Path, out: Path, *extra: str):
    r = pixscribe(env, "caption", str(src), "-o", str(out), "--method", "scripted", "--shard-size", "10",
                  "--batch-size", "4", "--no-progress", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def rows_of(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "a row was written twice"
    return {r["id"]: r for r in rows}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_update_after_rows_were_appended_changed_and_removed(plugin_env, tmp_path, fmt):
    d = tmp_path / "in"
    names = images(d / "img", 30)
    rows = [{"key": f"k{i:02d}", "path": f"img/{n}", "caption": f"old {i}"} for i, n in enumerate(names)]
    src = d / f"table.{fmt}"
    write_table(src, rows, fmt)
    out = tmp_path / "out"
    caption(plugin_env, src, out)
    before = rows_of(out)
    extra = images(d / "img", 5, seed=1)
    rows += [{"key": f"n{i}", "path": f"img/{n}", "caption": "new"} for i, n in enumerate(extra)]
    rows[7]["caption"] = "an edited caption"  # a column the method does not read: kept
    rows[12]["path"] = f"img/{extra[0]}"  # another image under the same key: recomputed
    del rows[20]  # removed: dropped
    write_table(src, rows, fmt)
    s = caption(plugin_env, src, out, "--update")
    assert s["stages"]["see"]["computed"] == 6 and s["stages"]["see"]["reused"] == 28  # 5 new + k12
    assert s["stages"]["rewrite"]["computed"] == 6
    after = rows_of(out)
    assert set(after) == {r["key"] for r in rows}  # k20 dropped, the new keys in, each once
    for k in set(before) - {"k12", "k20"}:
        assert after[k]["final"] == before[k]["final"] and after[k]["sha256"] == before[k]["sha256"]
    assert after["k07"]["org_caption"] == "an edited caption"
    assert after["k12"]["sha256"] == after["n0"]["sha256"] != before["k12"]["sha256"]
    assert after["k12"]["seen"] == after["n0"]["seen"] != before["k12"]["seen"]
    assert not (out / "_state" / "previous").exists()  # every shard done: the kept rows are gone
    again = caption(plugin_env, src, out)  # nothing left to do
    assert again["rows_written"] == 0 and rows_of(out) == after
