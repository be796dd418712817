"""``--executor ray`` on a Ray instance of this machine (2 CPUs): the same output as the
local executor (a tiny VLM's recap under greedy decoding, the experts method), exactly once
when a worker is killed by pid, when the driver is killed with kill -9 and the run is
resumed on Ray then locally, and error rows (the rest complete) when a stage fails rows or
a row kills its worker every time. Plus how stages are laid out in actor pools."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_engine import ScriptedBackend, three_stage_method
from fixtures_plugin import pixscribe, pixscribe_popen
from pixscribe.api import MethodError
from pixscribe.config import RunConfig
from pixscribe.engine.context import build_method
from pixscribe.engine.ray.plan import plan_groups
from pixscribe.engine.runner import Runner
from pixscribe.record import keyless_id
from test_exactly_once import assert_exactly_once, make_images, wait_for

COMPARED = ("id", "source", "width", "height", "sha256", "method", "caption", "error", "model", "prompt_sha")


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


def _summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def _same_output(a: Path, b: Path, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    ra, rb = _rows(a), _rows(b)
    assert ra.keys() == rb.keys() and ra
    for i in ra:
        assert {c: ra[i][c] for c in COMPARED + extra} == {c: rb[i][c] for c in COMPARED + extra}, i
    assert pq.read_schema(a / "part-00000.parquet").names == pq.read_schema(b / "part-00000.parquet").names
    return ra


# ---- how a method is laid out in actor pools (no Ray needed) ------------------------------------------
def test_stages_sharing_a_model_share_a_group():
    cfg = RunConfig(vlm="scripted-vlm")
    one = three_stage_method(cfg, ScriptedBackend())  # the VLM also answers the text stages
    assert [(g.name, g.start, g.stop) for g in plan_groups(one, cfg)] == [("see+extract+rewrite", 0, 3)]
    cfg2 = RunConfig(vlm="v", llm="l", replicas=2, max_replicas=3, ray_stages={"rewrite": {"num_gpus": 0.25}})
    two = three_stage_method(cfg2, None)  # the pool's (unloaded) backends: --llm names another model
    groups = plan_groups(two, cfg2, cluster_gpus=4)
    assert [g.name for g in groups] == ["see", "extract+rewrite"]
    assert [(g.replicas, g.max_replicas) for g in groups] == [(2, 3), (2, 3)]
    assert [g.num_gpus for g in groups] == [1.0, 0.25]  # a local model on a GPU cluster: 1 by default
    assert groups[0].keep_image is False and plan_groups(two, cfg2)[0].num_gpus == 0.0  # no GPUs: none


def test_lite_experts_want_no_gpu_and_bad_pool_settings_are_named():
    cfg = RunConfig(profile="lite", method="experts")
    m = build_method("experts", cfg)
    (g,) = plan_groups(m, cfg, cluster_gpus=8)
    assert g.name == "experts" and g.num_gpus == 0.0  # ONNX / OpenCV on the CPU
    with pytest.raises(MethodError, match="no stage 'nope'.*experts"):
        plan_groups(m, cfg.model_copy(update={"ray_stages": {"nope": {"replicas": 2}}}))
    with pytest.raises(MethodError, match="unknown key.*gpus"):
        plan_groups(m, cfg.model_copy(update={"ray_stages": {"experts": {"gpus": 1}}}))
    with pytest.raises(MethodError, match="max_replicas 1 is below replicas 2"):
        plan_groups(m, cfg.model_copy(update={"replicas": 2, "max_replicas": 1}))


def test_a_method_built_in_python_is_refused_before_ray_starts(photo_dir, tmp_path):
    cfg = RunConfig(inputs=[str(photo_dir)], output=str(tmp_path / "out"), progress=False, vlm="scripted-vlm",
                    executor="ray")
    with pytest.raises(MethodError, match="builds the method by name in every worker.*--executor local"):
        Runner(cfg, three_stage_method(cfg, ScriptedBackend())).run()
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_images_travel_as_arrays_with_their_source_jpeg():
    """What a decode task hands a replica: the same pixels and mode, and the JPEG bytes that
    decode kept for passthrough (PIL's own pickling would drop that attribute)."""
    import io
    import pickle

    import numpy as np

    from pixscribe.engine.ray.worker import PackedImage, pack_images, unpack_images
    from pixscribe.imaging import PASSTHROUGH_ATTR, decode
    from pixscribe.record import Record
    from pixscribe.testing import sample_photo

    buf = io.BytesIO()
    sample_photo("coffee").resize((64, 48)).save(buf, "JPEG")
    dec = decode(buf.getvalue(), max_pixels=1_000_000)
    assert getattr(dec.image, PASSTHROUGH_ATTR, None)
    grey = Record(source="g", id="g")
    grey.image = sample_photo("camera").convert("L").resize((20, 10))
    rgb = Record(source="c", id="c")
    rgb.image = dec.image
    pixels = [np.asarray(rgb.image).copy(), np.asarray(grey.image).copy()]
    pack_images([rgb, grey])
    assert isinstance(rgb.image, PackedImage) and isinstance(grey.image, PackedImage)
    back = pickle.loads(pickle.dumps([rgb, grey]))
    unpack_images(back)
    assert [im.mode for im in (back[0].image, back[1].image)] == ["RGB", "L"]
    assert all(np.array_equal(np.asarray(r.image), px) for r, px in zip(back, pixels))
    assert getattr(back[0].image, PASSTHROUGH_ATTR) == getattr(dec.image, PASSTHROUGH_ATTR)


def test_the_gate_admits_calls_in_arrival_order():
    import threading

    from pixscribe.engine.ray.worker import _Gate

    gate, order = _Gate(1), []
    tickets = [gate.ticket() for _ in range(4)]

    def call(t):
        gate.enter(t)
        order.append(t)
        gate.leave()

    threads = [threading.Thread(target=call, args=(t,)) for t in reversed(tickets)]  # started newest first
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert order == tickets


# ---- the same output as the local executor -------------------------------------------------------------
def test_recap_on_a_tiny_vlm_equals_local(tiny_vlms, photo_dir, tmp_path):
    """A local Ray instance started by the executor itself (no --ray-address)."""
    base = dict(inputs=[str(photo_dir)], progress=False, vlm=str(tiny_vlms["llava"]), max_new_tokens=6,
                batch_size=2, shard_size=4, device="cpu")
    Runner(RunConfig(output=str(tmp_path / "local"), **base)).run()
    s = Runner(RunConfig(output=str(tmp_path / "ray"), executor="ray", **base)).run()
    rows = _same_output(tmp_path / "local", tmp_path / "ray", ("re_caption",))
    assert len(rows) == 6 and all(r["caption"] and r["error"] is None for r in rows.values())
    assert s.stages["recap"]["computed"] == 6 and s.usage["ray recap"]["replicas"] == 1
    assert s.usage[f"vlm:{tiny_vlms['llava']}"]["requests"] == 6  # counted in the actor, merged here
    assert 0 < s.usage["ray recap"]["utilisation"] <= 1 and s.usage["ray start"]["seconds"] > 0
    run = json.loads((tmp_path / "ray" / "_run.json").read_text())
    assert run["config"]["executor"] == "ray" and len(list((tmp_path / "ray" / "_state" / "done").glob("*"))) == 2


def test_experts_method_equals_local(ray_cluster, tmp_path):
    from pixscribe.testing import write_sample_photos

    address, env = ray_cluster
    photos = tmp_path / "photos"
    write_sample_photos(photos, ("astronaut", "coffee", "grace_hopper", "page"))
    args = ("caption", str(photos), "--profile", "lite", "--no-progress", "--batch-size", "2")
    assert pixscribe(env, *args, "-o", str(tmp_path / "local")).returncode == 0
    r = pixscribe(env, *args, "-o", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", address)
    assert r.returncode == 0, r.stderr
    rows = _same_output(tmp_path / "local", tmp_path / "ray",
                        ("description", "expert_ocr", "expert_faces", "expert_nsfw"))
    assert "One face" in rows[keyless_id(str(photos / "astronaut.jpg"))]["caption"]
    assert "ray experts: utilisation" in r.stderr and "stage experts" in r.stderr
    assert _summary(tmp_path / "ray")["usage"]["experts"]["ocr_seconds"] > 0  # the actors' stage summaries


# ---- faults ------------------------------------------------------------------------------------------------
def _args(inp: Path, out: Path, address: str, *extra: str) -> tuple[str, ...]:
    return ("caption", str(inp), "-o", str(out), "--method", "scripted", "--no-progress", "--shard-size", "10",
            "--batch-size", "4", "--flush-rows", "4", "--flush-seconds", "0.5", "--executor", "ray",
            "--ray-address", address, *extra)


def test_a_worker_killed_by_pid_completes_exactly_once(ray_cluster, tmp_path):
    address, env = ray_cluster
    files = make_images(tmp_path / "in", 40)
    out, piddir = tmp_path / "out", tmp_path / "pids"
    piddir.mkdir()
    p = pixscribe_popen(env, *_args(tmp_path / "in", out, address), PIXSCRIBE_SCRIPTED_DELAY="0.3",
                        PIXSCRIBE_SCRIPTED_PIDDIR=str(piddir))
    wait_for(lambda: list(out.glob("_state/batches/*/*.parquet")) and list(piddir.iterdir()), timeout=120)
    victim = int(next(piddir.iterdir()).name)
    assert victim != p.pid
    os.kill(victim, signal.SIGKILL)  # the replica running the stages, mid-batch
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert_exactly_once(out, files)
    s = _summary(out)
    pool = s["usage"]["ray see+rewrite"]
    assert pool["restarts"] >= 1 and pool["batches_retried"] >= 1
    assert s["rows_written"] == 40 and s["stages"]["see"]["computed"] == 40  # retried, never counted twice
    assert len([d for d in piddir.iterdir() if int(d.name) != victim]) >= 1  # a new process took over


def test_driver_killed_then_resumed_on_ray_then_locally(ray_cluster, tmp_path):
    """Begun locally, continued on Ray and stopped with Ctrl-C, continued on Ray and killed with
    kill -9, continued on Ray (part of the rest), finished locally: every input once."""
    address, env = ray_cluster
    files = make_images(tmp_path / "in", 50)
    out = tmp_path / "out"
    ray_args = _args(tmp_path / "in", out, address)
    local = [a for a in ray_args if a not in ("--executor", "ray", "--ray-address", address)]
    assert pixscribe(env, *local, "--limit", "6").returncode == 0  # begun locally
    assert len(_ids_on_disk(out)) == 6
    p = pixscribe_popen(env, *ray_args, PIXSCRIBE_SCRIPTED_DELAY="0.3")
    wait_for(lambda: len(_ids_on_disk(out)) >= 10, timeout=120)
    p.send_signal(signal.SIGINT)  # Ctrl-C: stops cleanly, what was written is valid
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    stopped = _ids_on_disk(out)
    assert 10 <= len(stopped) < 50 and len(pq.read_table(out)) == len(stopped)
    p = pixscribe_popen(env, *ray_args, PIXSCRIBE_SCRIPTED_DELAY="0.3")
    wait_for(lambda: len(_ids_on_disk(out)) >= len(stopped) + 4, timeout=120)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    before = _ids_on_disk(out)
    assert stopped < before and len(before) < 50
    r = pixscribe(env, *ray_args, "--limit", "12")  # on Ray: part of the rest
    assert r.returncode == 0, r.stderr
    mid = _ids_on_disk(out)
    assert len(mid) == len(before) + 12 and before < mid
    r = pixscribe(env, *local)  # locally: the rest
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)
    s = _summary(out)
    assert s["rows_written"] == 50 - len(mid) and s["rows_skipped"] == len(mid)
    assert not list((out / "_state" / "leases").glob("*.claim"))


def _ids_on_disk(out: Path) -> set[str]:
    """Ids in the parts and in the batch files of unfinished shards (none twice in a part).

    Polled while a run is live: a shard that finishes between the listing and the reading
    removes its batch files (their rows are in its part now), so a vanished file means: look again."""
    for _ in range(50):
        try:
            return _ids_in(list(out.glob("part-*.parquet")) + list(out.glob("_state/batches/*/*.parquet")))
        except FileNotFoundError:
            time.sleep(0.05)
    raise AssertionError("the files kept vanishing while being read")


def _ids_in(files: list[Path]) -> set[str]:
    ids: set[str] = set()
    for f in files:
        got = pq.read_table(f, columns=["id"]).column("id").to_pylist()
        if f.name.startswith("part-"):
            assert len(got) == len(set(got)), f"{f.name} holds a row twice"
        ids |= set(got)
    return ids


def test_failing_rows_and_a_poison_row_are_error_rows(ray_cluster, tmp_path):
    address, env = ray_cluster
    files = make_images(tmp_path / "in", 20)
    out = tmp_path / "out"
    failed = {keyless_id(str(files[i])) for i in (2, 13)}
    poison = keyless_id(str(files[6]))
    r = pixscribe(env, *_args(tmp_path / "in", out, address), PIXSCRIBE_SCRIPTED_FAIL=",".join(sorted(failed)),
                  PIXSCRIBE_SCRIPTED_CRASH=poison)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert set(rows) == {keyless_id(str(p)) for p in files}  # every input once
    assert {i for i, x in rows.items() if x["error"]} == failed | {poison}
    assert all(rows[i]["error"].startswith("generate: http: 500") for i in failed)
    assert rows[poison]["error"].startswith("stage see: the worker running it died 2 times on this row")
    assert json.loads(rows[poison]["stages"])["see"]["status"] == "error"
    assert all(x["final"] for i, x in rows.items() if i not in failed | {poison})
    s = _summary(out)
    assert (s["stages"]["see"]["computed"], s["stages"]["see"]["failed"]) == (17, 3)
    assert s["usage"]["ray see+rewrite"]["restarts"] >= 4  # 2 deaths with its batch, 2 alone
    assert s["shards_completed"] == 2 and s["errors"] == {"generate": 2, "stage see": 1}


def test_autoscaling_adds_a_replica_under_backlog_and_retry_errors_runs_on_ray(ray_cluster, tmp_path):
    address, env = ray_cluster
    files = make_images(tmp_path / "in", 32)
    out = tmp_path / "out"
    bad = keyless_id(str(files[5]))
    r = pixscribe(env, *_args(tmp_path / "in", out, address, "--replicas", "1", "--max-replicas", "2",
                              "--replica-cpus", "0.5"), PIXSCRIBE_SCRIPTED_DELAY="0.3", PIXSCRIBE_SCRIPTED_FAIL=bad)
    assert r.returncode == 0, r.stderr
    pool = _summary(out)["usage"]["ray see+rewrite"]
    assert pool["replicas_peak"] == 2 and pool["replicas_range"] == "1..2"
    assert _rows(out)[bad]["error"].startswith("generate:")
    r = pixscribe(env, *_args(tmp_path / "in", out, address, "--retry-errors"))  # the failed row's own files
    assert r.returncode == 0, r.stderr
    rows = assert_exactly_once(out, files)
    assert len(rows) == 32
    s = _summary(out)
    assert s["stages"]["see"]["computed"] == 1 and s["rows_written"] == 1


def test_a_model_that_cannot_load_on_a_replica_is_one_line(ray_cluster, photo_dir, tmp_path):
    """Loaded in the replica, not the driver: its error comes back as the local executor's."""
    address, env = ray_cluster
    out = tmp_path / "out"
    r = pixscribe(env, "caption", str(photo_dir), "-o", str(out), "--vlm", "no-such-org/no-such-model",
                  "--no-progress", "--executor", "ray", "--ray-address", address)
    assert r.returncode == 2, r.stderr
    assert "no-such-org/no-such-model" in r.stderr and "--vlm" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # a run that fails before it starts leaves nothing behind
