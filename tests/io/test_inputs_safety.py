"""Paths stay inside the inputs, and nothing of a file is quoted in an error.

Tables and lists may name files; an untrusted table must not be able to pull an arbitrary
file (a key, /etc/shadow) into an output dataset that may be published."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from fixtures_engine import ScriptedBackend
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.testing.methods import method_with

SECRET = "AKIA-SECRET-TOKEN-do-not-leak"


def _setup(tmp_path: Path, photo_dir: Path) -> tuple[Path, Path]:
    secret = tmp_path / "private" / "credentials.jpg"  # named like an image, holds a secret
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    good = next(iter(sorted(Path(photo_dir).rglob("*.jpg"))))
    (data / "imgs" / "ok.jpg").write_bytes(good.read_bytes())
    os.symlink(secret, data / "imgs" / "link.jpg")  # a symlink out of the input folder
    return data, secret


def _run(inputs, out, **kw):
    cfg = RunConfig(inputs=[str(i) for i in inputs], output=str(out), progress=False, vlm="scripted-vlm", **kw)
    Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    return {Path(r["source"]).name: r for r in pq.read_table(out).to_pylist()}


def test_paths_outside_the_inputs_are_refused_and_never_quoted(tmp_path, photo_dir):
    data, secret = _setup(tmp_path, photo_dir)
    rel = os.path.relpath(secret, data)
    (data / "t.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (
        {"path": "imgs/ok.jpg"}, {"path": str(secret)}, {"path": rel})))
    (data / "list.txt").write_text(f"imgs/ok.jpg\n{secret}\n{rel}\n")
    rows = _run([data / "t.jsonl", data / "list.txt", data / "imgs"], tmp_path / "out")
    table = pq.read_table(tmp_path / "out")
    assert SECRET not in json.dumps(table.to_pylist())  # not in any column of any row
    bad = [r for r in table.to_pylist() if r["error"]]
    # the table's two, the list's two (deduplicated with the table's by path), the symlink
    assert len(bad) >= 3 and all("outside the input folders" in r["error"] for r in bad)
    assert any("symlink" in r["error"] for r in bad)
    assert rows["ok.jpg"]["error"] is None
    assert all("--allow-any-path" in r["error"] for r in bad)


def test_allow_any_path_reads_them_and_still_quotes_nothing(tmp_path, photo_dir):
    data, secret = _setup(tmp_path, photo_dir)
    (data / "t.jsonl").write_text(json.dumps({"path": str(secret)}) + "\n")
    rows = _run([data / "t.jsonl"], tmp_path / "out", allow_any_path=True)
    err = rows["credentials.jpg"]["error"]
    assert err.startswith("decode: ") and SECRET not in err and "AKIA" not in err


def test_webdataset_output_member_names_are_unique_for_any_id(tmp_path, photo_dir):
    import webdataset as wds

    good = next(iter(sorted(Path(photo_dir).rglob("*.jpg"))))
    ids = ["a/b", "a_b", "a.b", "a%2Fb", "ü", "x~2"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"key": k, "path": str(good)}) + "\n" for k in ids))
    cfg = RunConfig(inputs=[str(tmp_path / "t.jsonl")], output=str(tmp_path / "out"), progress=False, format="tar",
                    vlm="scripted-vlm", allow_any_path=True)
    Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    samples = list(wds.WebDataset(str(tmp_path / "out" / "part-00000.tar"), shardshuffle=False))
    assert len(samples) == len(ids)  # no two ids merged into one sample
    got = sorted(json.loads(s["json"])["id"] for s in samples)
    assert got == sorted(ids)
    from urllib.parse import unquote

    assert sorted(unquote(s["__key__"]) for s in samples) == sorted(ids)
