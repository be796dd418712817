"""Leases: who may write which shard of an output directory, on local disks and on shared
file systems (NFS, Lustre) where ``flock``/``fcntl`` locks are not reliable.

Two kinds of files under ``_state/leases/``:

- ``owner-<id>.json``: one per running process (host, pid, start time, command), rewritten
  every ``heartbeat`` seconds by a background thread;
- ``<name>.claim``: a claim on a shard (``00003.claim``) or on planning (``plan.claim``),
  created with ``O_CREAT | O_EXCL`` (atomic on local disks, NFSv3+ and Lustre), holding the
  owner id.

A claim is live while its owner is: on the same host, while the owner's pid runs (checked
directly, so a ``kill -9``'d owner is taken over at once); elsewhere, while the owner's
heartbeat is younger than ``timeout``. A dead claim is taken over by renaming it to a
unique tombstone (only one renamer wins), checking that the tombstone is the dead claim,
then creating a new claim. A process that finds its own claim gone or taken (it was paused
past the timeout) stops before writing more (:class:`LeaseLost`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record import RunStop

DEFAULT_HEARTBEAT = 10.0
DEFAULT_TIMEOUT = 60.0


class LeaseHeld(RunStop):
    """Another live process holds a claim we need."""

    kind = "locked"


class LeaseLost(RunStop):
    kind = "locked"


@dataclass
class Holder:
    owner: str
    host: str | None = None
    pid: int | None = None
    started: str | None = None
    heartbeat_age: float | None = None
    command: str | None = None

    def describe(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid else self.owner
        since = f", started {self.started}" if self.started else ""
        beat = f", last heartbeat {self.heartbeat_age:.0f} s ago" if self.heartbeat_age is not None else ""
        cmd = f" ({self.command})" if self.command else ""
        return f"{who}{since}{beat}{cmd}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Leases:
    """The leases of one output directory, held by this process."""

    def __init__(self, state_dir: str | Path, *, timeout: float = DEFAULT_TIMEOUT,
                 heartbeat: float | None = None, command: str | None = None):
        self.dir = Path(state_dir) / "leases"
        self.timeout = float(timeout)
        self.heartbeat = float(heartbeat if heartbeat is not None else min(DEFAULT_HEARTBEAT, self.timeout / 3))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.command = command if command is not None else " ".join(sys.argv)[:300]
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- owner file and heartbeat ------------------------------------------------------
    @property
    def owner_path(self) -> Path:
        return self.dir / f"owner-{self.owner}.json"

    def start(self) -> "Leases":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pixscribe-lease")
        self._thread.start()
        return self

    def _beat(self) -> None:
        from ..io.writers import atomic_write_bytes

        info = {"owner": self.owner, "host": self.host, "pid": self.pid, "started": self.started,
                "heartbeat": time.time(), "command": self.command}
        atomic_write_bytes(self.owner_path, json.dumps(info).encode(), fsync_dir=False)

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._beat()
            except OSError:
                pass  # a full disk: the claim ages; checked before every write

    def close(self) -> None:
        """Release every claim and the owner file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for name in list(self.held):
            self.release(name)
        try:
            self.owner_path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "Leases":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- claims ------------------------------------------------------------------------
    def claim_path(self, name: str) -> Path:
        return self.dir / f"{name}.claim"

    def holder(self, name: str) -> Holder | None:
        """Who holds ``name`` (None if nobody, or a dead owner)."""
        try:
            owner = self.claim_path(name).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError:
            owner = ""
        if not owner:
            return Holder(owner="?", heartbeat_age=None)  # being written this instant
        return self._owner_if_alive(owner)

    def _owner_if_alive(self, owner: str) -> Holder | None:
        if owner == self.owner:
            return Holder(owner, self.host, self.pid, self.started, 0.0, self.command)
        try:
            info: dict[str, Any] = json.loads((self.dir / f"owner-{owner}.json").read_text())
        except (OSError, ValueError):
            return None  # no owner file: it stopped (or never started) -> dead
        age = time.time() - float(info.get("heartbeat", 0))
        h = Holder(owner, info.get("host"), info.get("pid"), info.get("started"), age, info.get("command"))
        if h.host == self.host and h.pid:
            return h if _pid_alive(int(h.pid)) else None
        return h if age < self.timeout else None

    def try_claim(self, name: str) -> Holder | None:
        """Claim ``name``; returns None on success, else the live holder."""
        p = self.claim_path(name)
        for _ in range(5):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                h = self.holder(name)
                if h is not None:
                    if h.owner == self.owner:
                        self.held.add(name)
                        return None
                    return h
                self._take_over(name)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner)
                f.flush()
                os.fsync(f.fileno())
            self.held.add(name)
            return None
        return self.holder(name) or Holder(owner="?")

    def _take_over(self, name: str) -> None:
        """Move a dead claim out of the way (one process wins the rename)."""
        p = self.claim_path(name)
        try:
            dead = p.read_text().strip()
        except OSError:
            return
        tomb = self.dir / f".{name}.dead-{self.owner}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(p, tomb)
        except FileNotFoundError:
            return  # another process took it over first
        try:
            got = tomb.read_text().strip()
        except OSError:
            got = dead
        if got != dead and self._owner_if_alive(got) is not None:
            try:  # we moved a claim made after our check: give it back
                os.link(tomb, p)
            except OSError:
                pass
        tomb.unlink(missing_ok=True)

    def claim(self, name: str, *, wait: bool = False, poll: float = 1.0, what: str = "") -> None:
        """Claim ``name`` or raise :class:`LeaseHeld` naming the holder (``wait``: until free)."""
        while True:
            h = self.try_claim(name)
            if h is None:
                return
            if not wait:
                raise LeaseHeld(
                    f"{what or name} in {self.dir.parent.parent} is being written by another run: {h.describe()}. "
                    "Wait for it to finish (or pass --wait), or write to another -o directory"
                )
            time.sleep(poll)

    def still_mine(self, name: str) -> bool:
        try:
            return self.claim_path(name).read_text().strip() == self.owner
        except OSError:
            return False

    def check(self, name: str) -> None:
        """Raise :class:`LeaseLost` if our claim on ``name`` is gone or taken."""
        if not self.still_mine(name):
            h = self.holder(name)
            by = f" by {h.describe()}" if h else ""
            raise LeaseLost(
                f"lost the claim on {name} in {self.dir.parent.parent}{by} (this process was paused longer than "
                f"the lease timeout of {self.timeout:.0f} s?); stopping before writing more. Rerun to resume"
            )

    def release(self, name: str) -> None:
        with self._lock:
            if self.still_mine(name):
                try:
                    self.claim_path(name).unlink()
                except OSError:
                    pass
            self.held.discard(name)

    def live_owners(self) -> list[Holder]:
        out = []
        for p in self.dir.glob("owner-*.json"):
            h = self._owner_if_alive(p.name[len("owner-"):-len(".json")])
            if h is not None and h.owner != self.owner:
                out.append(h)
        return out

    def sweep(self) -> None:
        """Remove claims and owner files of dead processes (tidy, not required): a process
        killed after a shard's marker, before it released the claim, left a claim on a shard
        nobody needs to claim again. A dead claim goes the way a take-over moves it."""
        for p in self.dir.glob("*.claim"):
            if self.holder(p.stem) is None:
                self._take_over(p.stem)
        for p in self.dir.glob("owner-*.json"):
            o = p.name[len("owner-"):-len(".json")]
            if o != self.owner and self._owner_if_alive(o) is None:
                p.unlink(missing_ok=True)
