"""``-S STAGE.KEY=VALUE`` values are read as YAML and checked against the option's type before
the run (issue 23, point 10): ``Describe: x`` (a mapping), ``No`` (false), a date or a list given
as a prompt stop the run with one line naming the option, the value and the type expected,
exit 2 and no output folder, instead of a run whose every row is an error row."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_plugin import pixscribe


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 12, 3), 60 * i, np.uint8)).save(d / f"p{i}.png")
    return d


def run(env, photos, out, *args):
    return pixscribe(env, "caption", str(photos), "-o", str(out), "--no-progress", *args)


@pytest.mark.parametrize("value,shown", [("Describe: x", "{'Describe': 'x'} (a mapping)"),
                                         ("No", "False (true or false)"),
                                         ("2024-01-01", "2024-01-01 (a date or time)"),
                                         ("[a, b]", "['a', 'b'] (a list)")])
def test_a_prompt_that_yaml_reads_as_something_else_stops_before_the_run(plugin_env, photos, tmp_path, value, shown):
    out = tmp_path / "out"
    r = run(plugin_env, photos, out, "--method", "scripted", "-S", f"see.prompt={value}")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "see.prompt" in line and shown in line and "is not text" in line and 'see.prompt="..."' in line
    assert not out.exists()


def test_numbers_and_yaml_config_values_are_checked_too(plugin_env, photos, tmp_path):
    r = run(plugin_env, photos, tmp_path / "o1", "--method", "scripted", "-S", "rewrite.max_new_tokens=many")
    assert r.returncode == 2 and "rewrite.max_new_tokens" in r.stderr and "'many' (text) is not a whole number" in r.stderr
    conf = tmp_path / "run.yaml"
    conf.write_text("stages: {rewrite: {max_new_tokens: 2.5}}\n")
    r = run(plugin_env, photos, tmp_path / "o2", "--method", "scripted", "--config", str(conf))
    assert r.returncode == 2 and "rewrite.max_new_tokens" in r.stderr and "2.5 (a number) is not a whole number" in r.stderr


def test_a_built_in_method_checks_its_options_before_it_contacts_a_model(plugin_env, photos, tmp_path):
    dead = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--vlm", "m"]
    r = run(plugin_env, photos, tmp_path / "o", "--method", "region", *dead, "-S", "region.task=[dense]")
    assert r.returncode == 2 and "region.task" in r.stderr and "['dense'] (a list) is not text" in r.stderr
    r = run(plugin_env, photos, tmp_path / "o", "--method", "textualize", *dead, "-S", "describe.column=7")
    assert r.returncode == 2 and "describe.column" in r.stderr and "7 (a whole number) is not text" in r.stderr


def test_quoted_text_and_values_of_the_right_type_run(plugin_env, photos, tmp_path):
    out = tmp_path / "out"
    r = run(plugin_env, photos, out, "--method", "scripted", "-S", 'see.prompt="Describe: x"',
            "-S", "rewrite.max_new_tokens=4", "-S", "rewrite.prompt=No")
    assert r.returncode == 2 and "rewrite.prompt" in r.stderr  # the last one is still a bool
    r = run(plugin_env, photos, out, "--method", "scripted", "-S", 'see.prompt="Describe: x"',
            "-S", "rewrite.max_new_tokens=4", "-S", "rewrite.prompt='No'")
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3 and all(x["error"] is None for x in rows)
    stages = {s["stage"]: s for s in json.loads((out / "_run.json").read_text())["method"]["stages"]}
    assert stages["see"]["prompt"] == "Describe: x" and stages["rewrite"]["prompt"] == "No"
