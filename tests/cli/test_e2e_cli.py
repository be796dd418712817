"""End to end through the real command line and the real transformers path on tiny models."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_http import photo_server

from pixscribe.testing import sample_photo, write_sample_photos


def cli(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "pixscribe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def jpeg(name: str) -> bytes:
    b = io.BytesIO()
    sample_photo(name).save(b, "JPEG", quality=90)
    return b.getvalue()


@pytest.fixture(scope="module")
def image_server():
    """A loopback HTTP server serving real photos at /<name>.jpg."""
    with photo_server() as srv:
        yield srv.url


@pytest.fixture()
def mixed_inputs(tmp_path: Path, image_server: str) -> tuple[list[str], int]:
    """A folder, a webdataset tar, parquet with bytes, jsonl with paths, jsonl with urls."""
    folder = tmp_path / "folder"
    write_sample_photos(folder, ("astronaut", "chelsea"))
    tar_path = tmp_path / "shard-00000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for key, name in (("k000", "coffee"), ("k001", "rocket")):
            for ext, data in (("jpg", jpeg(name)), ("txt", f"a photo of {name}".encode()),
                              ("json", json.dumps({"url": f"http://example.com/{name}"}).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"key": ["p0"], "image": [jpeg("motorcycle")], "caption": ["a motorbike"]}),
                   tmp_path / "t.parquet")
    paths = tmp_path / "paths"
    write_sample_photos(paths, ("grace_hopper",))
    (tmp_path / "p.jsonl").write_text(json.dumps({"path": "paths/grace_hopper.jpg", "caption": "a woman"}) + "\n")
    (tmp_path / "u.jsonl").write_text(
        "\n".join(json.dumps({"key": f"u{i}", "url": f"{image_server}/{n}.jpg"}) for i, n in enumerate(["page", "chelsea"]))
        + "\n"
    )
    inputs = [str(folder), str(tar_path), str(tmp_path / "t.parquet"), str(tmp_path / "p.jsonl"), str(tmp_path / "u.jsonl")]
    return inputs, 8


def test_caption_mixed_inputs_with_tiny_llava(tiny_vlms, tmp_path, mixed_inputs):
    inputs, n = mixed_inputs
    out = tmp_path / "out"
    p = cli("caption", *inputs, "-o", str(out), "--vlm", str(tiny_vlms["llava"]), "--batch-size", "3",
            "--max-new-tokens", "6", "--allow-private-urls", "--device", "cpu", "--no-progress")
    assert "rows written" in p.stderr and "error rows" in p.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    assert all(isinstance(r["re_caption"], str) and r["caption"] == r["re_caption"] for r in rows)
    assert {r["model"] for r in rows} == {str(tiny_vlms["llava"])}
    by_id = {r["id"]: r for r in rows}
    assert by_id["k000"]["org_caption"] == "a photo of coffee" and by_id["k000"]["url"] == "http://example.com/coffee"
    assert by_id["p0"]["org_caption"] == "a motorbike"
    assert by_id["u0"]["source"].endswith("/page.jpg")
    con = duckdb.connect()
    assert con.execute(f"select count(distinct id) from read_parquet('{out}/*.parquet')").fetchone()[0] == n
    run = json.loads((out / "_run.json").read_text())
    assert run["method"]["stages"][0]["model"] == str(tiny_vlms["llava"])
    # a rerun resumes: nothing is redone
    p2 = cli("caption", *inputs, "-o", str(out), "--vlm", str(tiny_vlms["llava"]), "--batch-size", "3",
             "--max-new-tokens", "6", "--allow-private-urls", "--device", "cpu", "--no-progress")
    assert pq.read_table(out).num_rows == n
    summaries = sorted((out / "_state" / "summaries").glob("*.json"))
    assert json.loads(summaries[-1].read_text())["rows_written"] == 0, p2.stderr


def test_urls_refused_without_flag(tiny_vlms, tmp_path, image_server):
    (tmp_path / "u.jsonl").write_text(json.dumps({"key": "u0", "url": f"{image_server}/coffee.jpg"}) + "\n")
    out = tmp_path / "out"
    cli("caption", str(tmp_path / "u.jsonl"), "-o", str(out), "--vlm", str(tiny_vlms["llava"]), "--max-new-tokens", "4")
    (row,) = pq.read_table(out).to_pylist()
    assert row["error"].startswith("fetch: ") and "--allow-private-urls" in row["error"]


def test_second_family_and_yaml_config(tiny_vlms, tmp_path, photo_dir):
    other = next(k for k in tiny_vlms if k != "llava")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"vlm: {tiny_vlms[other]}\nbatch_size: 2\nmax_new_tokens: 5\nmax_side: 256\nprompt: Describe it.\n")
    out = tmp_path / "out"
    cli("caption", str(photo_dir), "-o", str(out), "--config", str(cfg), "--max-new-tokens", "4")
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
    assert all(max(r["width"], r["height"]) <= 256 for r in rows)
    run = json.loads((out / "_run.json").read_text())
    assert run["config"]["max_new_tokens"] == 4 and run["config"]["prompt"] == "Describe it."  # the CLI wins
    # changed config is refused, with a clear message and a non-zero exit
    p = cli("caption", str(photo_dir), "-o", str(out), "--config", str(cfg), "--prompt", "Other.", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr


def test_unreachable_model_fails_before_the_run(tmp_path, photo_dir):
    out = tmp_path / "out"
    p = cli("caption", str(photo_dir), "-o", str(out), "--vlm", "no-such-org/no-such-model", check=False)
    assert p.returncode == 2
    assert "no-such-org/no-such-model" in p.stderr and "--vlm" in p.stderr
    assert not list(out.glob("part-*"))


def test_hostile_inputs_exit_zero_with_errors_in_summary(tiny_vlms, tmp_path, hostile_dir):
    d, files = hostile_dir
    out = tmp_path / "out"
    p = cli("caption", str(d), "-o", str(out), "--vlm", str(tiny_vlms["llava"]), "--batch-size", "4",
            "--max-new-tokens", "4", "--no-progress")
    assert p.returncode == 0
    assert "decode" in p.stderr  # errors by kind in the summary
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(files)
    assert sum(r["error"] is not None for r in rows) == 4


def test_bad_arguments_fail_clearly(tmp_path, photo_dir):
    from typer.testing import CliRunner

    from pixscribe.cli import app

    r = CliRunner()
    res = r.invoke(app, ["caption", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such file or directory" in res.output
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "o"), "--shard", "3/2", "--batch-size", "0"])
    assert res.exit_code == 2 and "--shard" in res.output and "--batch-size" in res.output
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "o"), "--method", "nope"])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output and "recap" in res.output
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "o"), "--profile", "lite", "--experts", "x"])
    assert res.exit_code == 2 and "unknown expert 'x'" in res.output
    assert not list((tmp_path / "o").glob("part-*"))


def test_new_user_mistakes_get_one_clear_line(tmp_path, photo_dir):
    """Found by trying the CLI as a new user would (issue #8, section 8)."""
    from typer.testing import CliRunner

    from pixscribe.cli import app

    r = CliRunner()
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(afile)])
    assert res.exit_code == 2 and "is a file, not a directory" in res.output and "Traceback" not in res.output
    # --experts alone means the experts method (not recap with the default 8B VLM)
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "e"), "--experts", "grounding_dino"])
    assert res.exit_code == 2 and "need text queries: pass --queries" in res.output
    assert not (tmp_path / "e").exists()  # a run that fails before it starts leaves nothing
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "s"), "-S", "recap.temprature=1"])
    assert res.exit_code == 2 and "unknown option(s) temprature" in res.output
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "s"), "-S", "oops"])
    assert res.exit_code == 2 and "expected STAGE.KEY=VALUE" in res.output
    res = r.invoke(app, ["caption", str(photo_dir), "-o", str(tmp_path / "s"), "--stages", "nope"])
    assert res.exit_code == 2 and "must be a prefix" in res.output


def test_help_shows_flags_as_flags():
    from typer.testing import CliRunner

    from pixscribe.cli import app

    res = CliRunner().invoke(app, ["caption", "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0 and "<bool>" not in res.output
    line = next(x for x in res.output.splitlines() if "--overwrite" in x)
    assert "--overwrite " in line and "BOOLEAN" not in line and "INTEGER" not in line
    assert "--max-new-tokens <int>" in res.output and "--queries <str>" in res.output  # options show their type


def test_experts_alone_run_the_experts_method_and_record_no_vlm(tmp_path, photo_dir):
    out = tmp_path / "out"
    p = cli("caption", str(photo_dir), "-o", str(out), "--experts", "stats", "--no-progress")
    rows = pq.read_table(out).to_pylist()
    assert {r["method"] for r in rows} == {"experts"} and all(r["expert_stats"] for r in rows)
    run = json.loads((out / "_run.json").read_text())
    assert "vlm" not in run["config"] and run["models"] == []  # no model was used, none is recorded
    assert p.returncode == 0


def test_pip_hints_are_printed_whole():
    """The CLI prints messages through rich: `pixscribe[hf]` must not be eaten as markup."""
    import io

    from rich.console import Console

    import pixscribe.commands as c  # where every command's errors are printed

    buf = io.StringIO()
    old = c.err
    c.err = Console(file=buf, emoji=False, width=200)
    try:
        with pytest.raises(c.typer.Exit):
            c.fail("'datasets' is needed: pip install 'pixscribe[hf]'")
    finally:
        c.err = old
    assert "pip install 'pixscribe[hf]'" in buf.getvalue()
