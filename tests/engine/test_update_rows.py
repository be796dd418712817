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


def test_reuse_takes_image_only_stages_of_the_same_bytes_under_another_path(plugin_env, tmp_path):
    """A loose file's id hashes its path: the same images copied to another folder have other
    ids. ``--reuse`` finds their rows by sha256 and takes the stages that read nothing but the
    image (and what those gave); the rows keep their own ids and sources."""
    import shutil

    from pixscribe.record import keyless_id

    a = tmp_path / "a"
    names = images(a, 12)
    old = tmp_path / "old"
    caption(plugin_env, a, old)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    images(b, 2, seed=5)  # two images the old run never saw
    s = caption(plugin_env, b, tmp_path / "new", "--reuse", str(old))
    assert (s["stages"]["see"]["computed"], s["stages"]["see"]["reused"]) == (2, 12)
    assert (s["stages"]["rewrite"]["computed"], s["stages"]["rewrite"]["reused"]) == (2, 12)
    rows, was = rows_of(tmp_path / "new"), rows_of(old)
    for n in names:
        r, o = rows[keyless_id(str(b / n))], was[keyless_id(str(a / n))]
        assert r["source"] == str(b / n) and (r["seen"], r["final"]) == (o["seen"], o["final"])
        assert json.loads(r["stages"])["see"]["reused_from"] == o["id"]
    assert len(rows) == 14


def test_a_stage_reading_a_column_is_not_taken_from_another_row_with_the_same_image(plugin_env, tmp_path):
    """textualize with --description-column: the image stage (detail) of a row of another key
    with the same bytes is reused; describe, which reads the row's own column, and every stage
    after it are computed."""
    import io

    import pyarrow as pa

    def table(path: Path, keys: list[str], texts: list[str]) -> None:
        b = io.BytesIO()
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(b, "PNG")
        pq.write_table(pa.table({"key": keys, "png": [b.getvalue()] * len(keys), "llava": texts}), path)

    (tmp_path / "in").mkdir()
    args = ("--method", "scripted-textualize", "-S", "describe.column=llava", "--no-progress")
    table(tmp_path / "in" / "a.parquet", ["a0", "a1"], ["A cat on a sofa. A dog.", "A cat on a mat. A dog."])
    r = pixscribe(plugin_env, "caption", str(tmp_path / "in" / "a.parquet"), "-o", str(tmp_path / "old"), *args)
    assert r.returncode == 0, r.stderr
    table(tmp_path / "in" / "b.parquet", ["b0"], ["A cat on a sofa. A dog."])
    r = pixscribe(plugin_env, "caption", str(tmp_path / "in" / "b.parquet"), "-o", str(tmp_path / "new"), *args,
                  "--reuse", str(tmp_path / "old"))
    assert r.returncode == 0, r.stderr
    st = json.loads(sorted((tmp_path / "new" / "_state" / "summaries").glob("*.json"))[-1].read_text())["stages"]
    assert st["detail"]["reused"] == 1
    assert all(st[n]["computed"] == 1 for n in ("describe", "objects", "verify", "rewrite"))
    row = rows_of(tmp_path / "new")["b0"]
    assert json.loads(row["stages"])["detail"]["reused_from"] in ("a0", "a1")
    assert "reused" not in json.loads(row["stages"])["describe"]
