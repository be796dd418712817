"""``caption --dry-run``: inputs, shards, what resume skips and every model with whether it is
here, offline and without asking the hub; and a run that lacks models offline names them all
at once before loading any."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from fixtures_engine import ScriptedBackend
from fixtures_plugin import pixscribe
from pixscribe.config import RunConfig
from pixscribe.engine.dryrun import check_model, make_plan, render
from pixscribe.engine.runner import Runner
from pixscribe.experts.detection import GroundingDinoExpert
from pixscribe.testing.methods import method_with
from pixscribe.testing import write_sample_photos

MISSING = ("florence-community/Florence-2-large", "facebook/sam-vit-base",
           "depth-anything/Depth-Anything-V2-Small-hf", "IDEA-Research/grounding-dino-base")


class _Hub(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Hub.hits.append(self.path)
        self.send_error(503)

    do_HEAD = do_GET

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_hub():
    """A hub endpoint that records every request (none may come)."""
    _Hub.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Hub.hits
    srv.shutdown()


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    write_sample_photos(d)
    return d


def _env_online(env: dict[str, str], hub: str, cache: Path) -> dict[str, str]:
    e = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**e, "HF_ENDPOINT": hub, "HF_HUB_CACHE": str(cache)}


def test_dry_run_names_every_missing_model_at_once_and_asks_no_hub(plugin_env, tiny_vlms, photos, tmp_path,
                                                                   fake_hub):  # fmt: skip
    hub, hits = fake_hub
    out = tmp_path / "out"
    r = pixscribe(_env_online(plugin_env, hub, tmp_path / "hub"), "caption", str(photos), "-o", str(out),
                  "--method", "textualize", "--vlm", str(tiny_vlms["llava"]), "--dry-run")
    assert r.returncode == 2, r.stderr
    assert "method textualize: stages detail, describe, objects, verify, rewrite" in r.stdout
    assert f"inputs: {len(list(photos.iterdir()))} rows in 1 shards" in r.stdout and "new" in r.stdout
    for m in MISSING:
        assert f"{m} [hub] MISSING" in r.stdout and f"hf download {m}" in r.stdout
    assert f"{tiny_vlms['llava']} [local] present" in r.stdout
    assert f"{len(MISSING)} missing" in r.stdout
    assert hits == [] and not out.exists()  # no hub request, nothing written


def test_offline_run_stops_before_loading_naming_all_missing(plugin_env, tiny_vlms, photos, tmp_path):
    out = tmp_path / "out"
    r = pixscribe({**plugin_env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}, "caption",
                  str(photos), "-o", str(out), "--method", "textualize", "--vlm", str(tiny_vlms["llava"]))
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith("error: 4 model(s) not here, and the hub is offline") and "\n" not in line, r.stderr
    assert all(m in line and f"hf download {m}" in line for m in MISSING)
    assert "Traceback" not in r.stderr and not out.exists()


def _cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abc")
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


def test_hub_cache_lookup_wants_weights(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snap = _cache(tmp_path, "IDEA-Research/grounding-dino-base", {"config.json": b"{}", "model.safetensors": b"x"})
    got = check_model(GroundingDinoExpert(), "verify")
    assert (got.kind, got.present, got.detail, got.fetch) == ("hub", True, str(snap), None)
    _cache(tmp_path, "google/owlv2-base-patch16-ensemble", {"config.json": b"{}"})
    from pixscribe.experts.detection import OwlV2Expert

    half = check_model(OwlV2Expert(), "verify")
    assert half.present is False and "holds no weights (config.json)" in half.detail
    assert half.fetch == "hf download google/owlv2-base-patch16-ensemble"
    assert check_model(GroundingDinoExpert(model=str(tmp_path / "nope")), "verify").present is False


def test_dry_run_says_what_resume_skips_and_a_changed_configuration(many_photos, tmp_path):
    out = tmp_path / "out"
    cfg = RunConfig(inputs=[str(many_photos)], output=str(out), progress=False, shard_size=5, batch_size=4,
                    vlm="scripted-vlm")
    Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    plan = make_plan(cfg, method_with(cfg, ScriptedBackend()))
    assert plan.inputs == {"shards": 3, "shard_kinds": {"files": 3}, "rows": 12, "rows_unknown_shards": 0,
                           "task": None}
    assert plan.resume["config"] == "matches" and plan.resume["shards_done"] == 3 and plan.resume["rows_done"] == 12
    assert "resume skips 3 finished shards (12 rows)" in "\n".join(render(plan))
    other_cfg = cfg.model_copy(update={"prompt": "Say something else."})
    other = make_plan(other_cfg, method_with(other_cfg, ScriptedBackend()))
    assert other.resume["config"].startswith("refused: ") and "different configuration" in other.resume["config"]
    half_cfg = cfg.model_copy(update={"shard": "1/2"})
    half = make_plan(half_cfg, method_with(half_cfg, ScriptedBackend()))
    assert half.inputs["shards"] == 1 and half.inputs["task"] == "1/2"


@pytest.fixture
def many_photos(tmp_path) -> Path:
    from PIL import Image

    d = tmp_path / "many"
    d.mkdir()
    for i in range(12):
        Image.new("RGB", (32 + i, 24), (i * 20, 40, 90)).save(d / f"{i:02d}.png")
    return d
