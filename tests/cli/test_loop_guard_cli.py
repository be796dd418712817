"""The loop guard from the command line on real files: a loopback OpenAI-compatible server
stuck in a repetition loop under greedy decoding (``pixscribe.testing.openai_server --mode
loop``) and a tiny random-weight transformers model, whose greedy replies loop by themselves.

- the server stops looping when the penalty is sent: the rows are clean, each says which
  retry fixed it, the summary counts the fixes, and the field sent is the server's own
  (``frequency_penalty``; ``repetition_penalty`` where the server is vLLM);
- a server that ignores the penalty: sampling fixes it, or nothing does and the rows fail as
  ``degenerate:`` (the default) or keep the reply flagged (``--on-degenerate keep``);
- every model stage gets it: the region method's per-region captions too;
- transformers: the penalty reaches ``generate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_e2e_cli import cli

from pixscribe.testing import write_sample_photos
from pixscribe.testing.openai_server import LOOP_FIXED, LOOP_UNIT, ServerProcess

NAMES = ("astronaut", "coffee", "chelsea")
RECAP = "Please generate a detailed caption of this image. Please be as descriptive as possible."  # recap's prompt


def rows(out: Path) -> dict[str, dict]:
    return {Path(r["source"]).stem: r for r in pq.read_table(out).to_pylist()}


def summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def run_recap(tmp: Path, srv: ServerProcess, out: str, *args: str, check: bool = True):
    photos = tmp / "photos"
    if not photos.exists():
        write_sample_photos(photos, NAMES)
    return cli("caption", str(photos), "-o", str(tmp / out), "--backend", "openai", "--base-url", srv.url,
               "--vlm", "m", "--max-new-tokens", "40", "--no-progress", *args, check=check)


def test_a_loop_fixed_by_the_penalty_gives_clean_rows(tmp_path):
    with ServerProcess("--mode", "loop", "--model", "m", "--loop-until", "penalty") as srv:
        p = run_recap(tmp_path, srv, "out")
        st = srv.stats()
    assert st["loop_replies"] == {"looped": 3, "fixed": 3}
    assert st["penalties"] == {"frequency_penalty": 3} and "sampled" not in st  # not vLLM: no repetition_penalty
    for r in rows(tmp_path / "out").values():
        assert r["error"] is None and r["re_caption"] == LOOP_FIXED
        prov = json.loads(r["provenance"])["re_caption"]
        assert prov["loop_retry"] == "penalty" and "degenerate" not in prov
    counts = summary(tmp_path / "out")["usage"]["recap"]
    assert counts == {"loops_detected": 3, "loops_fixed_by_penalty": 3, "loops_fixed_by_sampling": 0,
                      "loops_kept_flagged": 0, "loops_errors": 0}
    assert "loops_fixed_by_penalty" in p.stderr  # the printed summary says it


def test_a_vllm_server_gets_repetition_penalty(tmp_path):
    with ServerProcess("--mode", "loop", "--model", "m", "--owned-by", "vllm") as srv:
        run_recap(tmp_path, srv, "out")
        st = srv.stats()
    assert st["penalties"] == {"repetition_penalty": 3}
    assert all(r["re_caption"] == LOOP_FIXED for r in rows(tmp_path / "out").values())


def test_a_penalty_the_server_ignores_then_sampling(tmp_path):
    with ServerProcess("--mode", "loop", "--model", "m", "--loop-until", "sampling") as srv:
        run_recap(tmp_path, srv, "out")
        st = srv.stats()
    assert st["loop_replies"] == {"looped": 6, "fixed": 3} and st["sampled"] == 3
    for r in rows(tmp_path / "out").values():
        assert r["re_caption"] == LOOP_FIXED
        assert json.loads(r["provenance"])["re_caption"]["loop_retry"] == "sampling"
    counts = summary(tmp_path / "out")["usage"]["recap"]
    assert counts["loops_fixed_by_sampling"] == 3 and counts["loops_detected"] == 3


def test_a_loop_nothing_fixes_fails_the_row_or_is_kept_flagged(tmp_path):
    with ServerProcess("--mode", "loop", "--model", "m", "--loop-until", "never") as srv:
        p = run_recap(tmp_path, srv, "error")
        assert srv.stats()["loop_replies"] == {"looped": 9}  # the reply, the penalty's, the sampled one
        keep = run_recap(tmp_path, srv, "keep", "--on-degenerate", "keep")
    assert p.returncode == 0 and keep.returncode == 0
    for r in rows(tmp_path / "error").values():
        assert r["re_caption"] is None
        assert r["error"].startswith(f"degenerate: stage recap: the reply loops ('{LOOP_UNIT}' repeated ")
        assert "after a retry with a repetition penalty and one with sampling" in r["error"]
    assert summary(tmp_path / "error")["errors"] == {"degenerate": 3}
    assert summary(tmp_path / "error")["usage"]["recap"]["loops_errors"] == 3
    for r in rows(tmp_path / "keep").values():
        assert r["error"] is None and r["re_caption"].startswith(LOOP_UNIT + " " + LOOP_UNIT)
        prov = json.loads(r["provenance"])["re_caption"]
        assert prov["degenerate"]["unit"] == LOOP_UNIT and prov["degenerate"]["repeats"] >= 7 and prov["truncated"]
    assert summary(tmp_path / "keep")["usage"]["recap"]["loops_kept_flagged"] == 3
    run_json = lambda d: json.loads((tmp_path / d / "_run.json").read_text())  # noqa: E731
    fp = [run_json(d)["method"]["stages"][0]["fingerprint"] for d in ("error", "keep")]
    assert fp[0] != fp[1]  # keep writes rows that error does not: another output


def test_on_degenerate_is_in_the_fingerprint_only_when_not_the_default():
    from pixscribe.config import RunConfig
    from pixscribe.engine.run import image_options
    from pixscribe.engine.stage import build_method

    def fps(**kw):
        cfg = RunConfig(inputs=["x"], output="/tmp/fp", method="region", **kw)
        return build_method(cfg.method, cfg).with_fingerprints(image_options(cfg)).fingerprints

    assert fps() == fps(on_degenerate="error") != fps(on_degenerate="keep")


def test_a_bad_on_degenerate_is_one_line(tmp_path):
    p = cli("caption", str(tmp_path), "-o", str(tmp_path / "o"), "--on-degenerate", "drop", check=False)
    assert p.returncode == 2 and p.stderr.strip() == "error: --on-degenerate: Input should be 'error' or 'keep'"


def test_region_captions_get_the_guard(tmp_path):
    from test_region_method import image_rows, write_scene

    R, B = write_scene(tmp_path)
    src = image_rows(tmp_path, [R, B])
    args = ["caption", str(src), "--method", "region", "--backend", "openai", "--vlm", "m", "--no-progress",
            "-S", "region.max_new_tokens=30"]
    with ServerProcess("--mode", "loop", "--model", "m") as srv:
        cli(*args, "--base-url", srv.url, "-o", str(tmp_path / "fixed"))
    (row,) = pq.read_table(tmp_path / "fixed").to_pylist()
    assert [x["caption"] for x in row["regions"]] == [LOOP_FIXED, LOOP_FIXED] and row["error"] is None
    prov = json.loads(row["provenance"])["regions"]
    assert sorted(prov["loop_retried_regions"].values()) == ["penalty", "penalty"]
    assert summary(tmp_path / "fixed")["usage"]["region"]["loops_fixed_by_penalty"] == 2
    with ServerProcess("--mode", "loop", "--model", "m", "--loop-until", "never") as srv:
        cli(*args, "--base-url", srv.url, "-o", str(tmp_path / "looping"))
        cli(*args, "--base-url", srv.url, "-o", str(tmp_path / "kept"), "--on-degenerate", "keep")
    (row,) = pq.read_table(tmp_path / "looping").to_pylist()
    assert row["error"].startswith("degenerate: stage region: the reply loops")
    assert all(x["caption"] is None and x["error"].startswith("degenerate:") for x in row["regions"])
    (row,) = pq.read_table(tmp_path / "kept").to_pylist()
    assert row["error"] is None and all(x["caption"].startswith(LOOP_UNIT) for x in row["regions"])
    assert len(json.loads(row["provenance"])["regions"]["degenerate_regions"]) == 2


def test_transformers_the_penalty_reaches_generate(tiny_vlms, tmp_path):
    """A tiny llava's greedy replies loop on two of these photos at 64 tokens (random weights
    loop by themselves); the retry with the penalty does not: the penalty reached ``generate``
    (a greedy retry without it gives the same loop again)."""
    write_sample_photos(tmp_path / "photos", NAMES)
    out = tmp_path / "out"
    cli("caption", str(tmp_path / "photos"), "-o", str(out), "--vlm", str(tiny_vlms["llava"]), "--device", "cpu",
        "--dtype", "fp32", "--max-new-tokens", "64", "--no-progress")
    got = rows(out)
    for name in ("coffee", "chelsea"):
        prov = json.loads(got[name]["provenance"])["re_caption"]
        assert got[name]["error"] is None and prov["loop_retry"] == "penalty", (name, got[name]["re_caption"])
    assert "loop_retry" not in json.loads(got["astronaut"]["provenance"])["re_caption"]
    counts = summary(out)["usage"]["recap"]
    assert counts["loops_detected"] == 2 and counts["loops_fixed_by_penalty"] == 2


def test_transformers_generate_gets_repetition_penalty(tiny_vlms):
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.stages.generate import GenerateStage
    from pixscribe.record import Record
    from pixscribe.testing import sample_photo

    backend = TransformersBackend(str(tiny_vlms["llava"]), device="cpu", dtype="fp32")
    backend.load()
    seen: list[dict] = []
    real = backend.hf_model.generate

    def spy(*a, **kw):
        seen.append({k: kw.get(k) for k in ("repetition_penalty", "do_sample", "temperature")})
        return real(*a, **kw)

    backend.hf_model.generate = spy
    stage = GenerateStage("recap", backend, {"prompt": RECAP, "max_new_tokens": 64}, provides="re_caption")
    (rec,) = stage([Record(source="coffee.jpg", id="c", image=sample_photo("coffee"))])
    assert seen == [{"repetition_penalty": None, "do_sample": False, "temperature": None},
                    {"repetition_penalty": 1.2, "do_sample": False, "temperature": None}]
    assert rec.error is None and rec.provenance["re_caption"]["loop_retry"] == "penalty"
    assert stage.summary()["loops_fixed_by_penalty"] == 1
