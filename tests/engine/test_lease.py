"""Leases on an output directory: claims are exclusive, a dead owner's claim is taken over
(at once on the same host, after the timeout from another host), a live one is not, and a
process that lost its claim is told before it writes more."""

from __future__ import annotations

import json
import time

import pytest

from pixscribe.engine.lease import LeaseHeld, LeaseLost, Leases


def _foreign_owner(state, name: str, host: str, pid: int, age: float) -> None:
    d = state / "leases"
    d.mkdir(parents=True, exist_ok=True)
    owner = f"{host}-{pid}-abcd"
    (d / f"owner-{owner}.json").write_text(json.dumps(
        {"owner": owner, "host": host, "pid": pid, "started": "then", "heartbeat": time.time() - age,
         "command": "pixscribe caption x -o y"}))
    (d / f"{name}.claim").write_text(owner)


def test_claims_are_exclusive_and_name_the_holder(tmp_path):
    with Leases(tmp_path, timeout=30) as a, Leases(tmp_path, timeout=30) as b:
        a.claim("00001")
        with pytest.raises(LeaseHeld, match=r"being written by another run: pid \d+ on .*pixscribe|being written"):
            b.claim("00001")
        assert b.try_claim("00002") is None and a.try_claim("00002") is not None
        a.release("00001")
        b.claim("00001")
    assert not list((tmp_path / "leases").glob("*.claim"))  # released on close


def test_another_hosts_owner_is_live_until_its_heartbeat_is_old(tmp_path):
    _foreign_owner(tmp_path, "00003", "other-host", 4242, age=5)
    with Leases(tmp_path, timeout=30) as me:
        h = me.try_claim("00003")
        assert h is not None and h.host == "other-host" and h.pid == 4242
        assert "pid 4242 on other-host" in h.describe() and "last heartbeat 5 s ago" in h.describe()
    _foreign_owner(tmp_path, "00003", "other-host", 4242, age=120)  # silent for longer than the timeout
    with Leases(tmp_path, timeout=30) as me:
        assert me.try_claim("00003") is None and me.still_mine("00003")


def test_a_dead_pid_on_this_host_is_taken_over_at_once(tmp_path):
    import socket
    import subprocess
    import sys

    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)
    _foreign_owner(tmp_path, "plan", socket.gethostname(), pid, age=0)  # fresh heartbeat, dead process
    with Leases(tmp_path, timeout=300) as me:
        assert me.try_claim("plan") is None


def test_a_lost_claim_stops_the_writer(tmp_path):
    with Leases(tmp_path, timeout=30) as me:
        me.claim("00007")
        me.check("00007")
        _foreign_owner(tmp_path, "00007", "other-host", 1, age=0)  # taken while we were paused
        with pytest.raises(LeaseLost, match="lost the claim on 00007"):
            me.check("00007")


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path):
    with Leases(tmp_path, timeout=0.9) as me:
        me.claim("00001")
        first = json.loads(me.owner_path.read_text())["heartbeat"]
        deadline = time.monotonic() + 60  # wait for the beat, not for a time: a loaded machine is slow
        while json.loads(me.owner_path.read_text())["heartbeat"] <= first:
            assert time.monotonic() < deadline, "no heartbeat in 60 s (one is due every 0.3 s)"
            time.sleep(0.05)


def test_a_run_that_fails_to_start_removes_only_a_directory_nobody_else_uses(tmp_path):
    """Two runs started at the same moment on a new -o: the one that created the directory may
    be the one that fails (its shards are held): it must not delete what the other writes."""
    from pixscribe.config import RunConfig
    from pixscribe.engine.run import Run
    from pixscribe.engine.state import RunState

    out = tmp_path / "out"
    out.mkdir()
    cfg = RunConfig(inputs=[str(tmp_path)], output=str(out))
    mine = Leases(out / "_state", timeout=30).start()
    run = Run(cfg, None, mine, RunState(out))  # type: ignore[arg-type]
    run._created_out = True
    other = Leases(out / "_state", timeout=30).start()  # the other run, already writing
    other.claim("00000")
    run._abandon()
    assert out.is_dir() and other.still_mine("00000")
    other.close()
    alone = Leases(out / "_state", timeout=30).start()
    run2 = Run(cfg, None, alone, RunState(out))  # type: ignore[arg-type]
    run2._created_out = True
    run2._abandon()  # nobody else: the directory it made goes
    assert not out.exists()
