"""Reuse keyed on what a stage reads (issue 23, point 2): a row whose own inputs changed while
its image did not is recomputed by ``--overwrite``, ``-o NEW --reuse OLD`` and ``--update``;
a row whose inputs did not change is reused. Through the real command: ``--method region``
answered by the loopback OpenAI-compatible echo server (its answer repeats the prompt, so an
instruction shows in the caption), and the real textualize method with scripted
models (the test plugin's ``scripted-textualize``) reading ``--description-column``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe
from fixtures_reuse import last_summary as summary
from fixtures_reuse import region_cli as region
from fixtures_reuse import rows_once as rows_of





def scene(path: Path, colours: list[tuple[int, int, int]]) -> None:
    arr = np.full((48, 64, 3), 128, np.uint8)
    for k, c in enumerate(colours):
        arr[8:24, 4 + 20 * k: 20 + 20 * k] = c
    Image.fromarray(arr).save(path)


REGION_ROWS = [
    {"image_id": "s", "path": "scene.png", "region_id": "s-red", "box": [4, 8, 20, 24]},
    {"image_id": "s", "path": "scene.png", "region_id": "s-blue", "box": [24, 8, 40, 24], "attribute": "color"},
    {"image_id": "s", "path": "scene.png", "region_id": "s-ask", "box": [24, 8, 40, 24], "instruction": "Is it wet?"},
    {"image_id": "s", "path": "scene.png", "region_id": "s-same", "box": [4, 8, 40, 24]},
]


def write_regions(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "scene.png").exists():
        scene(d / "scene.png", [(255, 0, 0), (0, 0, 255)])
    p = d / "regions.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def changed_rows() -> list[dict]:
    """A new box, a new attribute and a new instruction; s-same as it was."""
    rows = [dict(r) for r in REGION_ROWS]
    rows[0]["box"] = [44, 8, 60, 24]
    rows[1]["attribute"] = "material"
    rows[2]["instruction"] = "Is it dry?"
    return rows



def check_fresh(rows: dict[str, dict], fresh: dict[str, dict]) -> None:
    """Every row as a run from scratch on the new inputs writes it."""
    for k, f in fresh.items():
        got = rows[k]
        assert (got["caption"], got["region"]["box"], got["region"]["attribute"]) == \
            (f["caption"], f["region"]["box"], f["region"]["attribute"]), k


@pytest.mark.parametrize("how", ["overwrite", "reuse"])
def test_region_rows_whose_box_attribute_or_instruction_changed_are_recomputed(echo_server, plugin_env, tmp_path, how):
    src = write_regions(tmp_path / "in", REGION_ROWS)
    old = tmp_path / "old"
    region(echo_server, plugin_env, src, old)
    before = rows_of(old)
    write_regions(tmp_path / "in", changed_rows())
    region(echo_server, plugin_env, src, tmp_path / "fresh")
    fresh = rows_of(tmp_path / "fresh")
    echo_server.reset()
    out = old if how == "overwrite" else tmp_path / "new"
    region(echo_server, plugin_env, src, out, *(["--overwrite"] if how == "overwrite" else ["--reuse", str(old)]))
    assert echo_server.stats()["chat_requests"] == 3  # the three changed regions, not s-same
    rows = rows_of(out)
    check_fresh(rows, fresh)
    assert rows["s-red"]["region"]["box"] == [44.0, 8.0, 60.0, 24.0] and "Is it dry?" in rows["s-ask"]["caption"]
    assert rows["s-blue"]["attribute"] == "material"
    assert rows["s-same"]["caption"] == before["s-same"]["caption"]
    assert json.loads(rows["s-same"]["stages"])["region"]["reused"] is True
    assert summary(out)["stages"]["region"] == {**summary(out)["stages"]["region"], "computed": 3, "reused": 1}


def test_region_rows_with_update_compute_exactly_the_changed_rows(echo_server, plugin_env, tmp_path):
    src = write_regions(tmp_path / "in", REGION_ROWS)
    out = tmp_path / "out"
    region(echo_server, plugin_env, src, out)
    write_regions(tmp_path / "in", changed_rows())
    region(echo_server, plugin_env, src, tmp_path / "fresh")
    echo_server.reset()
    region(echo_server, plugin_env, src, out, "--update")
    assert echo_server.stats()["chat_requests"] == 3
    check_fresh(rows_of(out), rows_of(tmp_path / "fresh"))


def _table(path: Path, texts: list[str]) -> Path:
    import io

    imgs = []
    for i in range(len(texts)):
        b = io.BytesIO()
        Image.fromarray(np.full((40 + i, 60, 3), 40 * i, np.uint8)).save(b, "PNG")
        imgs.append(b.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(texts))], "png": imgs, "llava": texts}), path)
    return path


def test_textualize_description_column_change_reruns_from_describe(plugin_env, tmp_path):
    texts = [f"A cat number {i} sleeps on a sofa. A dog watches it." for i in range(4)]
    src = _table(tmp_path / "in" / "t.parquet", texts)
    out = tmp_path / "out"
    args = ("caption", str(src), "-o", str(out), "--method", "scripted-textualize", "-S", "describe.column=llava",
            "--no-progress")
    assert pixscribe(plugin_env, *args).returncode == 0
    before = rows_of(out)
    texts[1] = "A horse runs in a field. A dog barks."
    _table(src, texts)
    r = pixscribe(plugin_env, *args, "--overwrite")
    assert r.returncode == 0, r.stderr
    rows = rows_of(out)
    assert rows["k1"]["description"] == texts[1] and "horse" in rows["k1"]["caption"]
    for k in ("k0", "k2", "k3"):
        assert (rows[k]["description"], rows[k]["caption"]) == (before[k]["description"], before[k]["caption"])
    st = summary(out)["stages"]
    assert st["detail"]["reused"] == 4  # the image stage: its image and options did not change
    for name in ("describe", "objects", "verify", "rewrite"):  # k1 from the stage that reads the column on
        assert (st[name]["computed"], st[name]["reused"]) == (1, 3), name


def test_a_stage_sees_only_the_columns_it_declares_and_reruns_when_they_change(tmp_path):
    """Through the engine in this process: a stage declaring ``reads = ("note",)`` sees that
    column and not ``secret``; a changed ``secret`` reuses the row, a changed ``note`` reruns it."""
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.api import Method, Stage

    class Echo(Stage):
        name, provides, reads, needs_image = "echo", ("said",), ("note",), False
        calls = 0

        def __call__(self, records):
            Echo.calls += len(records)
            for r in records:
                r.set("said", f"{r.columns.get('note')}/{'secret' in r.columns}", stage=self.name)
            return records

    def run(notes, secrets, *extra):
        _table(tmp_path / "in" / "t.parquet", ["x"] * len(notes))
        t = pq.read_table(tmp_path / "in" / "t.parquet")
        pq.write_table(t.append_column("note", pa.array(notes)).append_column("secret", pa.array(secrets)),
                       tmp_path / "in" / "t.parquet")
        Echo.calls = 0
        cfg = RunConfig(inputs=[str(tmp_path / "in" / "t.parquet")], output=str(tmp_path / "out"), progress=False,
                        **dict(extra))
        Runner(cfg, Method("m", [Echo()], ["said"], "said")).run()
        return rows_of(tmp_path / "out")

    rows = run(["a", "b"], ["s", "t"])
    assert [rows[k]["said"] for k in ("k0", "k1")] == ["a/False", "b/False"] and Echo.calls == 2
    rows = run(["a", "b"], ["S", "T"], ("overwrite", True))
    assert Echo.calls == 0 and rows["k0"]["said"] == "a/False"
    rows = run(["a", "B"], ["S", "T"], ("overwrite", True))
    assert Echo.calls == 1 and rows["k1"]["said"] == "B/False" and rows["k0"]["said"] == "a/False"
    assert json.loads(rows["k1"]["stages"])["echo"]["in"] != json.loads(rows["k0"]["stages"])["echo"]["in"]


def test_a_stage_reading_a_column_it_does_not_declare_fails_the_row_naming_it(tmp_path):
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.api import Method, Stage

    class Sneaky(Stage):
        name, provides, needs_image = "sneaky", ("said",), False

        def __call__(self, records):
            for r in records:
                r.set("said", str(r.columns.get("llava")), stage=self.name)
            return records

    src = _table(tmp_path / "in" / "t.parquet", ["a cat", "a dog"])
    cfg = RunConfig(inputs=[str(src)], output=str(tmp_path / "out"), progress=False)
    Runner(cfg, Method("m", [Sneaky()], ["said"], "said")).run()
    rows = rows_of(tmp_path / "out")
    assert rows["k0"]["error"] == ("stage sneaky: stage 'sneaky' reads the input column 'llava' without declaring it: "
                                   "add it to the stage's reads (or needs), so that reuse compares it")
