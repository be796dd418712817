"""Killing Ray's dashboard agent during a run (issue 23, point 13). The raylet fate-shares with
its agents, so the node stops, and Ray's core worker ends the driver from C++ (exit 1, no
Python runs): the run cannot go on. It now ends with one clear line from the driver's watcher
(engine/ray/watch.py), and the rerun completes every row exactly once. A local Ray instance of
this run's own (the session cluster of the other Ray tests must not lose its node)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fixtures_plugin import pixscribe, pixscribe_popen
from test_exactly_once import assert_exactly_once, make_images, wait_for


def children(pid: int) -> dict[int, str]:
    """Child pids of ``pid`` and their command lines (Ray renames its agents' processes)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1]) == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return out


def test_killing_the_dashboard_agent_ends_the_run_with_one_line_then_it_resumes(plugin_env, tmp_path):
    pytest.importorskip("ray")
    files = make_images(tmp_path / "in", 40)
    out = tmp_path / "out"
    args = ("caption", str(tmp_path / "in"), "-o", str(out), "--method", "scripted", "--no-progress",
            "--shard-size", "10", "--batch-size", "2", "--flush-rows", "2", "--flush-seconds", "0.5")
    env = {**plugin_env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    p = pixscribe_popen(env, *args, "--executor", "ray", PIXSCRIBE_SCRIPTED_DELAY="1.0")
    wait_for(lambda: list(out.glob("_state/batches/*/*.parquet")), timeout=240)
    raylet = next(pid for pid, cmd in children(p.pid).items() if "raylet/raylet" in cmd)
    agent = next(pid for pid, cmd in children(raylet).items() if "DashboardAgent" in cmd or "dashboard/agent" in cmd)
    os.kill(agent, signal.SIGKILL)
    assert p.wait(timeout=240) != 0
    err = p.stderr.read()
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Ray ended this run: its Ray node stopped (dashboard_agent failed") and \
        "rerun the same command to resume" in last, err
    r = pixscribe(env, *args)  # resumed (here locally): every row once
    assert r.returncode == 0, r.stderr
    assert_exactly_once(out, files)
