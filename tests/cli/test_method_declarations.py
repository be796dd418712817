"""Declarations the engine and the command line read (issue 24): a flag a method declares is in
``pixscribe caption --help``, is the same as its ``-S``, is in the stage's fingerprint and in the
docs table generated from the declarations (docs/options.md, which must be current); a plugin
declares a method, its options, a flag and a role from its entry point alone."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_plugin import pixscribe
from pixscribe.api import MethodError, method_spec, method_specs
from pixscribe.cli_methods import markdown
from pixscribe.config import RunConfig
from pixscribe.engine.context import build_method
from pixscribe.engine.run import image_options

DOCS = Path(__file__).resolve().parents[2] / "docs" / "options.md"
QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"


def _caption_config(*args: str) -> RunConfig:
    """The configuration ``pixscribe caption ARGS`` builds (nothing runs)."""
    import typer.main

    from pixscribe.cli import _build_caption_config, app

    cmd = typer.main.get_command(app).commands["caption"]
    p = dict(cmd.make_context("caption", list(args)).params)
    return _build_caption_config(p.pop("config"), {k: v for k, v in p.items() if k not in ("stage_option", "stages")},
                                 p["stage_option"], p["stages"])


def _fingerprints(cfg: RunConfig) -> dict[str, str]:
    return build_method(cfg.method, cfg).with_fingerprints(image_options(cfg)).fingerprints


def test_a_declared_flag_is_in_help_in_S_in_the_fingerprint_and_in_the_docs(tmp_path):
    from typer.testing import CliRunner

    from pixscribe.cli import app

    help_text = CliRunner().invoke(app, ["caption", "--help"], env={"COLUMNS": "200"}).output
    assert "--max-objects <int>" in help_text and "rewrite.max_objects" in help_text
    for spec in method_specs():  # every method, with its one-line summary
        assert any(line.split() and line.split()[0] == spec.name and spec.summary in line for line in help_text.splitlines())
    base = ["in", "-o", str(tmp_path / "o"), "--vlm", QWEN]
    flagged = _caption_config(*base, "--max-objects", "5")
    assert flagged.method == "textualize" and flagged.stages == {"rewrite": {"max_objects": 5}}  # the flag picks it
    by_s = _caption_config(*base, "--method", "textualize", "-S", "rewrite.max_objects=5")
    plain = _caption_config(*base, "--method", "textualize")
    fp_flag, fp_s, fp_plain = _fingerprints(flagged), _fingerprints(by_s), _fingerprints(plain)
    assert fp_flag == fp_s and fp_flag["rewrite"] != fp_plain["rewrite"]
    assert {k: v for k, v in fp_flag.items() if k != "rewrite"} == {k: v for k, v in fp_plain.items() if k != "rewrite"}
    method = build_method("textualize", flagged)
    assert method.fingerprint_fields()["rewrite.max_objects"] == 5
    docs = DOCS.read_text()
    assert "| `--max-objects` | `rewrite.max_objects` |" in docs
    assert "| `max_objects` | a whole number | `10` | most regions given to the rewrite. |" in docs


def test_the_docs_table_is_generated_from_the_declarations():
    assert DOCS.read_text() == markdown() + "\n", "docs/options.md is stale: pixscribe methods --markdown > docs/options.md"


def test_every_flag_of_every_method_names_a_declared_option_of_its_type():
    seen = 0
    for spec in method_specs():
        for f in spec.flags:
            seen += 1
            info = spec.option_info(f)
            assert (info is None) == (f.role is not None)
            if info is not None:
                assert info.kinds and f.option in spec.options[f.stage].declared()
    assert seen >= 20  # textualize, region, panoptic, tipcap


def test_a_value_of_the_wrong_type_names_the_option_and_the_type():
    cfg = RunConfig(method="recap", stages={"recap": {"max_new_tokens": "many"}})
    with pytest.raises(MethodError, match=r"recap.max_new_tokens .*'many' \(text\) is not a whole number"):
        build_method("recap", cfg)
    cfg = RunConfig(method="region", vlm=QWEN, stages={"region": {"attribute": 3}})
    with pytest.raises(MethodError, match=r"region.attribute .*3 \(a whole number\) is not text"):
        build_method("region", cfg)


def test_an_option_declared_unless_default_stays_out_of_the_fingerprint_at_its_default():
    from dataclasses import dataclass

    from pixscribe.api import MethodContext, StageOptions, option
    from pixscribe.engine.models import ModelPool
    from pixscribe.stages import GenerateStage

    @dataclass(frozen=True)
    class Opts(StageOptions):
        prompt: str = option("Describe.", "the request")
        beams: int = option(1, "a new option: 1 changes nothing", fingerprint="unless_default")
        chunk: int = option(8, "memory only", fingerprint="never")

    def fingerprint(**given):
        cfg = RunConfig(stages={"s": given} if given else {})
        ctx = MethodContext(cfg, ModelPool(cfg))
        return GenerateStage("s", ctx.model("vlm"), ctx.options("s", Opts), provides="t").options()

    assert fingerprint() == fingerprint(beams=1) == fingerprint(chunk=64)
    assert "beams" not in fingerprint() and fingerprint(beams=2)["beams"] == 2 and "chunk" not in fingerprint(chunk=3)
    assert fingerprint()["prompt"] == "Describe." and fingerprint(prompt="x") != fingerprint()


def test_a_method_is_declared_with_its_summary_roles_and_options():
    spec = method_spec("panoptic")
    assert spec.summary and {r.name for r in spec.roles} == {"vlm", "consistency"}
    assert next(f for f in spec.flags if f.name == "consistency_vlm").target == "models.consistency.model"
    assert set(spec.options) >= {"localize", "tag", "discover", "caption", "redetect", "consistency"}
    assert method_spec("experts").implied_by == ("experts", "profile")
    with pytest.raises(MethodError, match="unknown method 'nope'.*recap"):
        method_spec("nope")


def test_a_plugin_method_declares_its_flag_from_its_entry_point(plugin_env, photo_dir, tmp_path):
    """A new method as one folder: a package installed with pip, found through its entry point,
    runs from the command line with the flag it declares, and the flag is its stage's option."""
    help_text = pixscribe(plugin_env, "caption", "--help", COLUMNS="200").stdout
    assert "--shout-prompt <str>" in help_text and "a two-stage plugin method with a declared flag" in help_text
    out_flag, out_s = tmp_path / "flag", tmp_path / "s"
    r = pixscribe(plugin_env, "caption", str(photo_dir), "-o", str(out_flag), "--shout-prompt", "LOUDLY:",
                  "--no-progress")
    assert r.returncode == 0, r.stderr
    r = pixscribe(plugin_env, "caption", str(photo_dir), "-o", str(out_s), "--method", "declared", "-S",
                  'shout.prompt="LOUDLY:"', "--no-progress")  # a flag's value is text; -S reads YAML
    assert r.returncode == 0, r.stderr
    runs = [json.loads((o / "_run.json").read_text())["method"] for o in (out_flag, out_s)]
    assert runs[0]["method"] == "declared" and runs[0]["stages"] == runs[1]["stages"]
    assert [s["prompt"] for s in runs[0]["stages"]] == ["Describe.", "LOUDLY:"]
    rows = pq.read_table(out_flag).to_pylist()
    assert len(rows) == 6 and all(x["caption"].startswith("re ") and x["error"] is None for x in rows)
    docs = pixscribe(plugin_env, "methods", "--markdown").stdout
    assert "## declared" in docs and "| `--shout-prompt` | `shout.prompt` |" in docs
    r = pixscribe(plugin_env, "caption", str(photo_dir), "-o", str(tmp_path / "x"), "--method", "recap",
                  "--shout-prompt", "x")
    assert r.returncode == 2 and "--shout-prompt: for --method declared, not --method recap" in r.stderr
