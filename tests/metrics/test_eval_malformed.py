"""``pixscribe eval`` and ``eval-regions`` on malformed files: one line naming the file (and the
line or row) and exit 2, never a traceback; an id predicted twice is an error, not dropped.

Before: ten of these cases ended in tracebacks (AttributeError, TypeError, KeyError), a
non-UTF-8 file's error did not name it, and duplicates were dropped silently. Every file is
real; the matrix runs the real command in this process (``register`` on a Typer app), and
the cases that broke worst run again as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pixscribe.commands import Commands
from pixscribe.metrics.eval_cli import register
from pixscribe.methods.region.eval_cli import register as register_regions

GOOD_REFS = "".join(json.dumps({"id": k, "refs": ["a cat on a mat", "a cat"]}) + "\n" for k in "abc")
GOOD_PRED = "".join(json.dumps({"id": k, "caption": "a cat"}) + "\n" for k in "abc")
NESTED = b"[" * 100_000 + b"]" * 100_000
EVAL = {  # name: (the flag it goes to, content, what the message says after "FLAG FILE")
    "latin1.jsonl": ("--pred", b'{"id": "a", "caption": "caf\xe9"}\n', ":1: not UTF-8 text (byte 27)"),
    "latin1.json": ("--pred", b'[{"image_id": "a", "caption": "caf\xe9"}]', ": not UTF-8 text (byte 34)"),
    "ints.json": ("--pred", b"[1, 2]", ": item 0 is a number, not an object (a row)"),
    "array_line.jsonl": ("--pred", b"[1, 2]\n", ": line 1 is a list, not an object (a row)"),
    "no_id.json": ("--pred", b'[{"caption": "a cat"}]', ": item 0: a row has no 'image_id' or 'id'"),
    "nested.json": ("--pred", NESTED, ": not valid JSON (nested too deeply)"),
    "bigint.json": ("--pred", b'[{"image_id": ' + b"1" * 5000 + b', "caption": "x"}]', ": not valid JSON (Exceeds"),
    "caption_dict.jsonl": ("--pred", b'{"id": "a", "caption": {"x": 1}}\n', ": line 1: the caption of id 'a' is an object"),
    "dup.jsonl": ("--pred", b'{"id": "a", "caption": "a cat"}\n{"id": "b", "caption": "x"}\n{"id": "a", "caption": "a dog"}\n',
                  ": id 'a' has two predictions (line 1 and line 3); give one caption per id"),
    "empty.jsonl": ("--pred", b"", ": no predictions in it"),
    "coco_no_image_id.json": ("--refs", b'{"images": [{"id": 1}], "annotations": [{"caption": "x"}]}',
                              ": annotations item 0: a row has no 'image_id'"),
    "coco_image_no_id.json": ("--refs", b'{"images": [{"file": 1}], "annotations": []}', ": images item 0: a row has no 'id'"),
    "coco_annotations_int.json": ("--refs", b'{"images": [], "annotations": 5}',
                                  ": expected a list of rows in 'annotations', got a number"),
    "coco_images_int.json": ("--refs", b'{"images": 3, "annotations": []}', ": expected a list of rows in 'images'"),
    "coco_annotation_int.json": ("--refs", b'{"images": [], "annotations": [1]}', ": annotations item 0 is a number"),
    "refs_int.jsonl": ("--refs", b'{"id": "a", "refs": 5}\n', ": line 1: references are text or a list of texts, not a number"),
    "refs_latin1.jsonl": ("--refs", b'{"id": "a", "refs": ["caf\xe9"]}\n', ":1: not UTF-8 text (byte 25)"),
    "refs_nested.jsonl": ("--refs", NESTED + b"\n", ":1: not valid JSON (nested too deeply)"),
}
REGIONS = {
    "regions_bad_json.jsonl": ("--pred", b'{"id": "i", "regions": "[{not json"}\n', ": line 1: the 'regions' column is not valid JSON"),
    "regions_int.jsonl": ("--pred", b'{"id": "i", "regions": 5}\n', ": line 1: the 'regions' column is not a list of region objects"),
    "regions_of_ints.jsonl": ("--pred", b'{"id": "i", "regions": [1, 2]}\n', ": line 1: the 'regions' column is not a list"),
    "row_int.jsonl": ("--pred", b"7\n", ": line 1 is a number, not an object (a row)"),
    "caption_list.jsonl": ("--pred", b'{"region_id": "r1", "caption": ["x"]}\n', ": line 1: the caption of region 'r1' is a list"),
    "region_id_dict.jsonl": ("--pred", b'{"region_id": {"a": 1}, "caption": "x"}\n', ": line 1: the 'region_id' is an object"),
    "r_latin1.jsonl": ("--pred", b'{"region_id": "r1", "caption": "caf\xe9"}\n', ":1: not UTF-8 text (byte 35)"),
    "refs_row_list.jsonl": ("--refs", b"[1]\n", ": line 1 is a list, not an object (a row)"),
    "refs_attr_list.jsonl": ("--refs", b'{"region_id": "r1", "refs": ["x"], "attribute": ["color"]}\n',
                             ": line 1: the attribute is a list, not text"),
}


@pytest.fixture(scope="module")
def app():
    a = typer.Typer(cls=Commands)
    register(a)
    register_regions(a)
    a.callback()(lambda: None)
    return a


def _files(d, flag, name, content, region=False):
    good_pred, good_refs = d / "good.jsonl", d / "refs.jsonl"
    good_refs.write_text(GOOD_REFS.replace('"id"', '"region_id"') if region else GOOD_REFS)
    good_pred.write_text(GOOD_PRED.replace('"id"', '"region_id"') if region else GOOD_PRED)
    bad = d / name
    bad.write_bytes(content)
    return (bad, good_refs) if flag == "--pred" else (good_pred, bad)


def _one_error_line(out: str, flag: str, bad, says: str) -> None:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith(f"error: {flag} {bad}") and says in lines[0], lines[0]


@pytest.mark.parametrize("name", sorted(EVAL))
def test_eval_names_the_file_and_the_reason(app, tmp_path, name):
    flag, content, says = EVAL[name]
    pred, refs = _files(tmp_path, flag, name, content)
    r = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--refs", str(refs), "--metrics", "bleu"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exception
    _one_error_line(r.output, flag, pred if flag == "--pred" else refs, says)


@pytest.mark.parametrize("name", sorted(REGIONS))
def test_eval_regions_names_the_file_and_the_reason(app, tmp_path, name):
    flag, content, says = REGIONS[name]
    pred, refs = _files(tmp_path, flag, name, content, region=True)
    r = CliRunner().invoke(app, ["eval-regions", "--pred", str(pred), "--refs", str(refs), "--metrics", "bleu"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exception
    _one_error_line(r.output, flag, pred if flag == "--pred" else refs, says)


def test_a_region_predicted_twice_in_one_mode_is_named(app, tmp_path):
    pred, refs = _files(tmp_path, "--pred", "p.jsonl", b"")
    rows = [{"region_id": "a", "caption": "x", "prompt_mode": "box"}, {"region_id": "a", "caption": "y", "prompt_mode": "focal"}]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok = CliRunner().invoke(app, ["eval-regions", "--pred", str(pred), "--refs", str(refs.parent / "refs.jsonl"),
                                  "--metrics", "bleu", "--bootstrap", "0"])  # two modes: two runs compared
    assert ok.exit_code == 0, ok.output
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps(rows[0]) + "\n")
    r = CliRunner().invoke(app, ["eval-regions", "--pred", str(pred), "--pred", str(again), "--refs",
                                 str(refs.parent / "refs.jsonl"), "--metrics", "bleu"])
    want = f"region 'a' has two predictions in prompt mode 'box' ({pred} line 1 and {again} line 1)"
    assert r.exit_code == 2 and want in " ".join(r.output.split())


def _pixscribe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixscribe", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="200"))


@pytest.mark.parametrize("cmd, name", [("eval", "latin1.jsonl"), ("eval", "coco_no_image_id.json"),
                                       ("eval", "dup.jsonl"), ("eval-regions", "regions_int.jsonl")])
def test_real_processes_print_one_line_and_exit_2(tmp_path, cmd, name):
    flag, content, says = (EVAL if cmd == "eval" else REGIONS)[name]
    pred, refs = _files(tmp_path, flag, name, content, region=cmd != "eval")
    p = _pixscribe(cmd, "--pred", str(pred), "--refs", str(refs), "--metrics", "bleu")
    assert p.returncode == 2 and p.stdout == "", p.stderr
    _one_error_line(p.stderr, flag, pred if flag == "--pred" else refs, says)


def test_a_10_mb_caption_is_refused_before_meteor_sees_it(tmp_path):
    """Before: METEOR ran 87 s on it, took 2.2 GB and said "exited (code None)"."""
    pred, refs = _files(tmp_path, "--pred", "long.jsonl", b"")
    pred.write_text(json.dumps({"id": "a", "caption": "a cat " * 1_750_000}) + "\n" + GOOD_PRED)
    p = _pixscribe("eval", "--pred", str(pred), "--refs", str(refs), "--metrics", "meteor")
    assert p.returncode == 2, p.stderr[-2000:]
    _one_error_line(p.stderr, "--pred", pred, ": line 1: the caption of id 'a' is 10,500,000 characters, over "
                    "--max-caption-chars 10,000; raise it to score longer text")


def test_the_caption_limit_is_adjustable(app, tmp_path):
    pred, refs = _files(tmp_path, "--pred", "p.jsonl", GOOD_PRED.encode())
    r = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--refs", str(refs), "--metrics", "bleu",
                                 "--max-caption-chars", "4"])
    assert r.exit_code == 2 and "the caption of id 'a' is 5 characters, over --max-caption-chars 4" in r.output
    r = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--refs", str(refs), "--metrics", "bleu",
                                 "--max-caption-chars", "5", "--bootstrap", "0"])
    assert r.exit_code == 2 and "a reference is 14 characters" in r.output  # the references too


def test_a_named_pipe_is_refused_without_opening_it(app, tmp_path):
    fifo = tmp_path / "pred.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "refs.jsonl").write_text(GOOD_REFS)
    r = CliRunner().invoke(app, ["eval", "--pred", str(fifo), "--refs", str(tmp_path / "refs.jsonl")])
    assert r.exit_code == 2 and "a named pipe, not a regular file" in r.output


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_says_why_its_java_stopped():
    from pixscribe.metrics.meteor import Meteor, MeteorUnavailable

    m = Meteor(mem="8m")  # too small a heap to load its paraphrase table: the real OutOfMemoryError
    try:
        with pytest.raises(MeteorUnavailable, match=r"exited with code 1: .*java.lang.OutOfMemoryError.*-Xmx8m"):
            m.compute_score({"a": ["a cat"]}, {"a": ["a cat"]})
    finally:
        m.close()


@pytest.mark.parametrize("content, says", [
    (b'{"images": [], "annotations": [1], "categories": []}', ": not COCO instances (TypeError"),
    (b'{"image": "caf\xe9.jpg", "objects": ["cat"]}\n', "INSTANCES {}: not UTF-8 text (byte 14)"),
])
def test_pope_build_names_its_file(app, tmp_path, content, says):
    src = tmp_path / "instances.json"
    src.write_bytes(content)
    r = CliRunner().invoke(app, ["pope", "build", str(src), "-o", str(tmp_path / "pope")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exception
    assert says.format(src) in r.output and str(src) in r.output
