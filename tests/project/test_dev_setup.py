"""dev/setup's logic, run for real with fakes of apt-get, id and python first on the PATH (and no
chromium on it): apt's lock is waited for (bounded, with a message) and the pip install always runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKED = ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)\n"
          "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?")

FAKE_APT = """#!/bin/bash
# each call: its arguments to $FAKE_LOG; the first $FAKE_APT_LOCKED calls meet a held lock
n=$(($(cat "$FAKE_DIR/apt-calls" 2>/dev/null || echo 0) + 1))
echo "$n" > "$FAKE_DIR/apt-calls"
echo "apt-get $*" >> "$FAKE_LOG"
if [ "$n" -le "$FAKE_APT_LOCKED" ]; then printf '%s\\n' "$FAKE_APT_LOCK_TEXT" >&2; exit 100; fi
if [ -n "${FAKE_APT_FAIL:-}" ]; then echo "$FAKE_APT_FAIL" >&2; exit 100; fi
echo "Setting up $*"
"""
FAKE_PYTHON = """#!/bin/bash
echo "python $* (in $PWD)" >> "$FAKE_LOG"
exit "${FAKE_PIP_RC:-0}"
"""
FAKE_ID = """#!/bin/bash
[ "$1" = -u ] && echo "$FAKE_UID" || /usr/bin/id "$@"
"""


@pytest.fixture()
def fake_path(tmp_path: Path) -> Path:
    """A PATH: the fakes, then every system tool except apt, python, pip and chromium."""
    fakes, tools = tmp_path / "fakes", tmp_path / "tools"
    fakes.mkdir()
    tools.mkdir()
    for name, text in (("apt-get", FAKE_APT), ("python", FAKE_PYTHON), ("id", FAKE_ID)):
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    skip = ("apt", "python", "pip", "chromium", "id")
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if not name.startswith(skip) and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(d, name))
    return tmp_path


def _setup(fake_path: Path, *, locked: int = 0, uid: int = 0, wait: float = 60, **env: str):
    log = fake_path / "calls.log"
    full = {"PATH": f"{fake_path / 'fakes'}:{fake_path / 'tools'}", "HOME": str(fake_path), "FAKE_LOG": str(log),
            "FAKE_DIR": str(fake_path), "FAKE_APT_LOCKED": str(locked), "FAKE_APT_LOCK_TEXT": LOCKED,
            "FAKE_UID": str(uid), "PIXSCRIBE_SETUP_APT_WAIT": str(wait), "PIXSCRIBE_SETUP_APT_POLL": "0.05", **env}
    p = subprocess.run([str(ROOT / "dev" / "setup")], env=full, capture_output=True, text=True, timeout=120)
    calls = log.read_text().splitlines() if log.exists() else []
    return p, calls


def _pip(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("python -m pip install -e .[dev]")]


def test_waits_for_apt_lock_then_installs_then_pip(fake_path):
    p, calls = _setup(fake_path, locked=3)
    assert p.returncode == 0, p.stderr
    apt = [c for c in calls if c.startswith("apt-get")]
    assert len(apt) == 4 and all("install" in c and "chromium" in c for c in apt)
    assert "another process holds apt's lock" in p.stderr and "4242 (unattended-upgr)" in p.stderr
    assert p.stderr.count("holds apt's lock") == 1  # one message, not one per try
    assert calls[-1] == f"python -m pip install -e .[dev] (in {ROOT})"


def test_lock_never_freed_is_bounded_and_pip_still_runs(fake_path):
    p, calls = _setup(fake_path, locked=10_000, wait=1)
    assert p.returncode == 0, p.stderr
    assert "apt's lock still held after 1 s" in p.stderr and "tests that need them are skipped" in p.stderr
    assert len(_pip(calls)) == 1 and calls[-1].startswith("python -m pip")


def test_other_apt_failure_updates_once_then_gives_up_and_pip_runs(fake_path):
    p, calls = _setup(fake_path, FAKE_APT_FAIL="E: Unable to locate package chromium")
    assert p.returncode == 0, p.stderr
    assert [c.split()[1] for c in calls if c.startswith("apt-get")] == ["install", "update"]
    assert "could not install" in p.stderr and "Unable to locate package chromium" in p.stderr
    assert len(_pip(calls)) == 1


def test_not_root_asks_for_the_packages_and_pip_runs(fake_path):
    p, calls = _setup(fake_path, uid=1000)
    assert p.returncode == 0, p.stderr
    assert not [c for c in calls if c.startswith("apt-get")]
    assert "please install" in p.stderr and "chromium" in p.stderr
    assert len(_pip(calls)) == 1


def test_a_failed_pip_install_fails_setup(fake_path):
    p, calls = _setup(fake_path, FAKE_PIP_RC="3")
    assert p.returncode == 3 and len(_pip(calls)) == 1
