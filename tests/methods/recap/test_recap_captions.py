"""Several captions per image (issue 25, point 3): ``--prompts`` and ``--n`` of the recap method,
from the command line against the loopback OpenAI-compatible server in echo mode (its reply
names the prompt it got, so each column is seen to hold its own prompt's answer)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pixscribe.config import RunConfig
from pixscribe.errors import ConfigError
from pixscribe.methods.recap.prompts import parse_prompts
from pixscribe.testing import write_sample_photos
from pixscribe.testing.openai_server import ServerProcess
from test_e2e_cli import cli

PROMPTS = 'short=Describe it in one line.,long="Describe it in detail, colours and all.",tags=List tags.'
TEXTS = {"short": "Describe it in one line.", "long": "Describe it in detail, colours and all.", "tags": "List tags."}


@pytest.fixture()
def photos(tmp_path):
    write_sample_photos(tmp_path / "photos", ("astronaut", "coffee", "chelsea"))
    return tmp_path / "photos"


def _rows(out):
    return sorted(pq.read_table(out).to_pylist(), key=lambda r: r["source"])


def _args(photos, out, srv, *more):
    return ["caption", str(photos), "-o", str(out), "--backend", "openai", "--base-url", srv.url, "--vlm", "m",
            "--no-progress", *more]


def test_prompts_are_read_from_a_string_a_mapping_a_list_or_a_file(tmp_path):
    assert parse_prompts(PROMPTS) == TEXTS  # commas inside a prompt, quotes dropped
    assert parse_prompts({"en": "Describe.", "de": "Beschreibe."}) == {"en": "Describe.", "de": "Beschreibe."}
    assert parse_prompts(["One.", "Two."]) == {"1": "One.", "2": "Two."}
    assert parse_prompts([{"short": "S."}, {"long": "L."}]) == {"short": "S.", "long": "L."}
    f = tmp_path / "prompts.yaml"
    f.write_text("short: Say it short.\nlong: Say it long, please.\n")
    assert parse_prompts(f"@{f}") == {"short": "Say it short.", "long": "Say it long, please."}
    for bad, why in [("short=A.,short=B.", "given twice"), ("no equals sign", "is not NAME=PROMPT"),
                     ("bad-name=A.", "letters, digits and _"), ({"x": ""}, "empty"), ([], "no prompts"),
                     (f"@{tmp_path / 'missing.yaml'}", "no such file"), (3, "not int")]:
        with pytest.raises(ConfigError, match=why):
            parse_prompts(bad)


def test_three_captions_per_image_one_decode_and_one_encode_each(photos, tmp_path, monkeypatch):
    """The CLI in-process, so the decode function's calls are counted: three images, three prompts,
    nine requests, but one decode and one JPEG encode per image; every request of an image carried
    the same bytes; each column holds its own prompt's answer."""
    from typer.testing import CliRunner

    from pixscribe import imaging
    from pixscribe.backends import openai_backend
    from pixscribe.cli import app

    counts = Counter()

    def counted(name, fn):
        def inner(*a, **kw):
            counts[name] += 1
            return fn(*a, **kw)
        return inner

    monkeypatch.setattr(imaging, "decode", counted("decode", imaging.decode))
    monkeypatch.setattr(openai_backend, "encode_image", counted("encode", openai_backend.encode_image))
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        r = CliRunner().invoke(app, _args(photos, out, srv, "--prompts", PROMPTS))
        stats = srv.stats()
    assert r.exit_code == 0, r.output
    assert counts == {"decode": 3, "encode": 3}
    assert stats["chat_requests"] == 9
    assert sorted(Counter(e["images"][0] for e in stats["log"]).values()) == [3, 3, 3]
    by_image = {}
    for e in stats["log"]:
        by_image.setdefault(e["images"][0], set()).add(e["text"])
    assert all(texts == set(TEXTS.values()) for texts in by_image.values())
    rows = _rows(out)
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None and row["re_caption_errors"] is None
        for name, text in TEXTS.items():
            assert row[f"re_caption_{name}"] == f"echo: {text} [1 image(s) {row['width']}x{row['height']}]"
        assert row["caption"] == row["re_caption_short"]  # the first prompt's column is the caption
        prov = json.loads(row["provenance"])
        assert prov["re_caption_long"]["model"] == "m" and row["prompt_sha"] == prov["re_caption_short"]["prompt_sha"]
    assert "re_caption" not in pq.read_table(out).schema.names


def test_an_images_requests_are_in_flight_together(photos, tmp_path):
    """The server holds every request (``--hold 0``): the three requests of the one image are in
    flight at once before any is answered, so they were sent together, not one after another."""
    one = tmp_path / "one"
    write_sample_photos(one, ("astronaut",))
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m", "--hold", "0") as srv:
        proc = subprocess.Popen([sys.executable, "-m", "pixscribe", *_args(one, out, srv, "--prompts", PROMPTS)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while srv.stats()["inflight"] < 3 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            held = srv.stats()
        finally:
            import httpx

            httpx.post(srv.base + "/admin", json={"hold": None}, timeout=10)
            _, err = proc.communicate(timeout=120)
        after = srv.stats()
    assert held["inflight"] == 3 and held["ok"] == 0, held
    assert proc.returncode == 0, err
    assert after["max_inflight"] == 3 and after["chat_requests"] == 3
    assert len({e["images"][0] for e in after["log"]}) == 1
    assert {e["text"] for e in after["log"]} == set(TEXTS.values())


def test_n_samples_per_prompt_and_one_failing_prompt_keeps_the_others(photos, tmp_path):
    """``--n 2``: two samples per prompt into ``re_caption_NAME_samples``, the first into
    ``re_caption_NAME``. A prompt the server always refuses leaves its columns null and its errors
    named in ``re_caption_errors`` (and the summary); the row keeps the other prompt's captions."""
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        cli(*_args(photos, out, srv, "--prompts", "ok=Say hi.,bad=[[always:500]] Say no.", "--n", "2",
                   "--temperature", "0.7", "--max-retries", "0"))
        assert srv.stats()["chat_requests"] == 12
    for row in _rows(out):
        size = f"{row['width']}x{row['height']}"
        assert row["error"] is None
        assert row["re_caption_ok_samples"] == [f"echo: Say hi. [1 image(s) {size}]"] * 2
        assert row["re_caption_ok"] == row["caption"] == row["re_caption_ok_samples"][0]
        assert row["re_caption_bad"] is None and row["re_caption_bad_samples"] == [None, None]
        errors = json.loads(row["re_caption_errors"])
        assert sorted(errors) == ["bad#1", "bad#2"] and all("500" in e for e in errors.values())
        prov = json.loads(row["provenance"])
        assert prov["re_caption_ok"]["sample"] == 0 and prov["re_caption_ok"]["model"] == "m"
    summary = json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())
    assert summary["usage"]["recap"] == {"requests": 12, "failed_requests": 6, "rows_with_errors": 3}


def test_a_row_whose_every_request_failed_fails(photos, tmp_path):
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        cli(*_args(photos, out, srv, "--prompts", "a=[[always:500]] A.,b=[[always:500]] B.", "--max-retries", "0"))
    rows = _rows(out)
    assert all(r["error"].startswith("generate:") and "500" in r["error"] for r in rows)


def test_samples_at_temperature_0_and_other_mistakes_stop_the_run(photos, tmp_path):
    for args, why in [(["--n", "3"], "temperature is 0"),
                      (["--n", "0"], "recap.n (--n): 0 is not a whole number of 1 or more"),
                      (["--select-by", "grounding"], "needs --n above 1"),
                      (["--n", "2", "--temperature", "1", "--select-by", "best"], "'best' is not one of first, grounding"),
                      (["--prompts", "a=A.", "--prompt", "B."], "give one of them"),
                      (["--prompts", "a=A.", "-S", "recap.prompt=B."], "recap.prompt/prompt_file in the config"),
                      (["--prompts", "a=A.,a=B."], "given twice")]:
        p = cli("caption", str(photos), "-o", str(tmp_path / "out"), "--backend", "openai", "--base-url",
                "http://127.0.0.1:9/v1", "--vlm", "m", *args, check=False)
        assert p.returncode == 2 and why in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


def test_the_default_recap_keeps_its_fingerprint_and_one_stage():
    from pixscribe.engine.run import image_options
    from pixscribe.engine.stage import build_method

    def fps(**kw):
        cfg = RunConfig(inputs=["x"], output="/tmp/fpout", method="recap", **kw)
        m = build_method("recap", cfg)
        return m.with_fingerprints(image_options(cfg)).fingerprints, m

    base, m = fps()
    assert [s.name for s in m.stages] == ["recap"] and m.columns == ["org_caption", "re_caption"]
    assert fps(stages={"recap": {"n": 1, "prompts": None}})[0] == base
    several, m2 = fps(stages={"recap": {"prompts": {"a": "A.", "b": "B."}}})
    assert several["recap"] != base["recap"] and [s.name for s in m2.stages] == ["recap"]
    sampled, m3 = fps(stages={"recap": {"n": 2, "temperature": 0.7}})
    assert [s.name for s in m3.stages] == ["recap", "select"]
    assert m3.columns == ["org_caption", "re_caption", "re_caption_samples", "re_caption_errors"]
    # the prompts are fingerprinted as read, not as written (a file's name, a string's quoting)
    assert fps(stages={"recap": {"prompts": 'a="A.",b=B.'}})[0] == several


def test_a_cut_reply_is_kept_and_flagged_in_its_columns_provenance(photos, tmp_path):
    out = tmp_path / "out"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        cli(*_args(photos, out, srv, "--prompts", "long=One two three four five.,short=Hi.", "--max-new-tokens", "6"))
    for row in _rows(out):
        prov = json.loads(row["provenance"])
        assert row["re_caption_long"] == "echo: One two three four five." and prov["re_caption_long"]["truncated"]
        assert row["re_caption_short"].startswith("echo: Hi.") and "truncated" not in prov["re_caption_short"]
        assert row["error"] is None and row["re_caption_errors"] is None
