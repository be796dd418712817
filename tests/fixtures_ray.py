"""A Ray cluster of this machine for the Ray executor's tests: ``ray start --head --block``
with 2 CPUs, on loopback, on free ports and in a temporary directory of its own (so it
never meets another Ray on the machine) and an auth token of its own, started once per test session with the test
plugin on its workers' path, and stopped (its own processes only) at the end.

Drivers connect with ``--ray-address``; per-test variables (``PIXSCRIBE_SCRIPTED_*``)
reach the workers through the executor's runtime environment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray binds 127.0.0.1, not the machine's address
MARK = "PIXSCRIBE_TEST_RAY_CLUSTER"  # inherited by every process of the cluster (Ray keeps it)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(mark: str, group: int) -> list[int]:
    """Pids of the processes of our cluster: in the process group of our ``ray start``
    (Ray's agents stay there), or with our mark in their environment (workers make groups
    of their own). Ray renames its processes, so command lines do not tell."""
    pids = []
    needle = f"{MARK}={mark}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            stat = (d / "stat").read_bytes().rsplit(b")", 1)[1].split()
            env = (d / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if stat[0] == b"Z":  # dead already, waiting for its parent
            continue
        if int(stat[2]) == group or needle in env.split(b"\0"):
            pids.append(int(d.name))
    return pids


@pytest.fixture(scope="session")
def ray_cluster(plugin_env):
    """(address, env): the cluster's address and a driver environment for it."""
    pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="pxray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    import secrets

    # a token of its own: only these tests' drivers can join (and ~/.ray/auth_token is left alone)
    token = secrets.token_hex(32)
    env = {**plugin_env, **LOOPBACK, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": token, MARK: token}
    ray_bin = str(Path(sys.executable).parent / "ray")
    args = [ray_bin, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
            "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", temp_dir,
            "--include-dashboard", "false", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(_free_port()),
            "--dashboard-agent-grpc-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()),
            "--metrics-export-port", str(_free_port())]
    log = open(Path(temp_dir) / "ray-start.log", "wb")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        _wait_up(address, env, proc, temp_dir)
        yield address, env
    finally:
        _stop(proc, token)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_up(address: str, env: dict, proc: subprocess.Popen, temp_dir: str, timeout: float = 120) -> None:
    probe = "import ray; ray.init(address=%r, log_to_driver=False); print(ray.cluster_resources()['CPU'])" % address
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if proc.poll() is not None:
            raise RuntimeError("ray start failed: " + (Path(temp_dir) / "ray-start.log").read_text()[-2000:])
        try:
            r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0 and r.stdout.strip().endswith("2.0"):
            return
        time.sleep(1)
    raise RuntimeError(f"the test Ray cluster at {address} did not come up")


def _stop(proc: subprocess.Popen, token: str) -> None:
    """Stop the cluster's own processes: ``ray start`` and every process with our token
    (``ray start``'s SIGTERM alone drains the node for up to 30 s first, and leaves Ray's
    agents behind)."""
    for pid in [proc.pid] + _ours(token, proc.pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3  # Ray's agents ignore SIGTERM: not worth waiting for
    while (_ours(token, proc.pid) or proc.poll() is None) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _ours(token, proc.pid) + ([proc.pid] if proc.poll() is None else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
