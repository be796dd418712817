"""No guessed box frames: ``--method region --region-prompt box`` writes boxes in the convention
of what the model is (its config, a hub id, or a server's ``/v1/models`` root), or as
``-S region.box_convention`` says, records which and from where, and stops before the run when
nothing tells. Through the command line, against the loopback server (whose echo answer repeats
the prompt, so the row shows which convention the model was sent) and on tiny local models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_e2e_cli import cli
from test_region_method import image_rows, write_scene

from pixscribe.testing.openai_server import ServerProcess

PIXELS = "in pixels of the"  # how a box prompt explains the pixels convention
NORM1000 = "scaled from 0 to 1000"


def _region_box(tmp: Path, out: Path, *args: str, check: bool = True):
    R, _ = write_scene(tmp)
    src = image_rows(tmp, [R])
    return cli("caption", str(src), "-o", str(out), "--method", "region", "--region-prompt", "box", "--no-progress",
               *args, check=check)


def _stage(out: Path) -> dict:
    return json.loads((out / "_run.json").read_text())["method"]["stages"][0]


def _served(out: Path, *server: str, tmp: Path, check: bool = True, extra=()):
    with ServerProcess("--mode", "echo", "--model", "my-vlm", *server) as srv:
        return _region_box(tmp, out, "--backend", "openai", "--base-url", srv.url, "--vlm", "my-vlm", *extra,
                           check=check)


def test_a_server_root_says_qwen2_5_vl_under_another_name(tmp_path):
    out = tmp_path / "out"
    _served(out, "--root", "Qwen/Qwen2.5-VL-7B-Instruct", tmp=tmp_path)
    (row,) = pq.read_table(out).to_pylist()
    caption = row["regions"][0]["caption"]  # the echo of what the model was asked
    assert row["error"] is None and PIXELS in caption and NORM1000 not in caption
    st = _stage(out)
    assert st["box_convention"] == "pixels"
    assert "/v1/models root 'Qwen/Qwen2.5-VL-7B-Instruct'" in st["box_convention_from"]
    frame = json.loads(row["provenance"])["regions"]["box_frame"]
    assert frame == {"convention": "pixels", "from": st["box_convention_from"]}


def test_a_server_root_whose_config_is_in_the_hub_cache(tmp_path, monkeypatch):
    """The root names no family, but its config is readable here (the local Hugging Face cache)."""
    cache = tmp_path / "hub"
    snap = cache / "models--acme--vlm-7b" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (cache / "models--acme--vlm-7b" / "refs").mkdir()
    (cache / "models--acme--vlm-7b" / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # the command's environment (cli passes it on)
    _served(out, "--root", "acme/vlm-7b", tmp=tmp_path)
    st = _stage(out)
    assert st["box_convention"] == "pixels"
    assert st["box_convention_from"] == ("the config of acme/vlm-7b in the Hugging Face cache (architectures "
                                         "Qwen2_5_VLForConditionalGeneration)")


@pytest.mark.parametrize("root", ["/models/finetune-7", None])
def test_a_server_that_does_not_say_stops_the_run_before_it_starts(tmp_path, root):
    out = tmp_path / "out"
    p = _served(out, *(["--root", root] if root else []), tmp=tmp_path, check=False)
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "cannot tell which box coordinates model 'my-vlm' was trained on" in lines[0]
    assert "-S region.box_convention=pixels|norm1000|norm1000_yx|norm1_square" in lines[0]
    assert (f"/v1/models root {root!r}" if root else "its /v1/models entry gives no root") in lines[0]
    assert not list(out.glob("*.parquet")) and not (out / "_run.json").exists()
    # what it says to pass works, and the run records that it was given
    _served(out, *(["--root", root] if root else []), tmp=tmp_path, extra=("-S", "region.box_convention=norm1000"))
    (row,) = pq.read_table(out).to_pylist()
    assert NORM1000 in row["regions"][0]["caption"]
    assert _stage(out)["box_convention_from"] == "given: region.box_convention"


def test_a_local_qwen2_5_vl_in_any_folder_gets_pixels_from_its_config(tiny_qwen_vlms, tiny_vlms, tmp_path):
    model = tmp_path / "my-model-v3"  # the folder's name says nothing
    shutil.copytree(tiny_qwen_vlms["qwen2_5_vl"], model)
    out = tmp_path / "out"
    _region_box(tmp_path, out, "--vlm", str(model), "--device", "cpu", "--max-new-tokens", "2")
    st = _stage(out)
    assert st["box_convention"] == "pixels"
    assert st["box_convention_from"] == f"the config of {model / 'config.json'} (model_type qwen2_5_vl)"
    (row,) = pq.read_table(out).to_pylist()
    assert json.loads(row["provenance"])["regions"]["box_frame"]["convention"] == "pixels"
    # LLaVA's config (model_type llava) does not say which LLaVA: no default, the run asks
    p = _region_box(tmp_path, tmp_path / "llava", "--vlm", str(tiny_vlms["llava"]), "--device", "cpu", check=False)
    assert p.returncode == 2 and "(model_type llava)" in p.stderr and "-S region.box_convention=" in p.stderr
