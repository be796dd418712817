"""Native-library calls that could crash the process, run in a child process that dies alone.

A C extension fed unlucky input may segfault, abort or loop forever; in the run's own
process that ends the whole run (exit -11, no rows, no message) and every rerun dies the
same way. :class:`Isolated` keeps one long-lived child (``python -m pixscribe.native
MODULE:FUNC``) that serves requests one at a time over its pipes: a length-prefixed JSON
request in, a length-prefixed JSON answer out. When the child dies or does not answer
within ``timeout`` seconds, the call raises :class:`NativeCrash` (naming the signal or exit
code), the child is reaped, and the next call starts a fresh one. Callers turn that into an
error of the row, so the run goes on.

Validation of the input stays the first line of defence (bounded work, no undefined
behaviour); the child is the second, for what validation did not foresee. It also caps its
own address space (``max_memory``), so a runaway allocation ends the child, not the run.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

_HEADER = struct.Struct("<Q")
MAX_ANSWER = 64 << 20  # a child's answer larger than this is a protocol error


class NativeCrash(RuntimeError):
    """The child died or hung while serving a request."""


class _StartFailed(NativeCrash):
    pass


def _signal_name(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Isolated:
    """``Isolated("pixscribe.native.coco:polygons_rle")(payload) -> answer`` in a child process."""

    def __init__(self, target: str, *, what: str, timeout: float = 60.0, max_memory: int = 2 << 30,
                 start_timeout: float = 120.0):
        self.target, self.what, self.timeout, self.max_memory = target, what, timeout, max_memory
        self.start_timeout = start_timeout
        self._p: subprocess.Popen[bytes] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.started = 0  # children started (1 + restarts after crashes)

    def _child(self) -> subprocess.Popen[bytes]:
        if self._p is not None and self._pid == os.getpid() and self._p.poll() is None:
            return self._p
        self._pid = os.getpid()  # a forked copy of this object starts its own child
        self._p = None
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "PIXSCRIBE_NATIVE_MAX_MEMORY": str(self.max_memory),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the modules this process imports
        self._p = subprocess.Popen([sys.executable, "-P", "-m", "pixscribe.native", self.target],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   env=env, start_new_session=True)  # Ctrl-C reaches the run, which closes it
        self.started += 1
        try:
            self._read(self._p, self.start_timeout)  # its imports done: from here on, ``timeout`` per request
        except (OSError, NativeCrash):
            raise _StartFailed(f"{self.what} could not start ({_signal_name(self._reap(self._p))})") from None
        return self._p

    def __call__(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        with self._lock:
            try:
                p = self._child()
                assert p.stdin is not None
                p.stdin.write(_HEADER.pack(len(body)) + body)
                p.stdin.flush()
                answer = json.loads(self._read(p, self.timeout))
            except _StartFailed:
                raise
            except (OSError, ValueError, NativeCrash) as exc:
                raise self._died(self._p, exc) from None
        if "error" in answer:
            raise ValueError(str(answer["error"]))
        return answer["result"]

    @staticmethod
    def _read(p: subprocess.Popen[bytes], timeout: float) -> bytes:
        assert p.stdout is not None
        deadline = time.monotonic() + timeout
        head = _read_exactly(p.stdout.fileno(), _HEADER.size, deadline)
        (n,) = _HEADER.unpack(head)
        if n > MAX_ANSWER:
            raise ValueError(f"answer of {n} bytes")
        return _read_exactly(p.stdout.fileno(), n, deadline)

    def _died(self, p: subprocess.Popen[bytes] | None, exc: BaseException) -> NativeCrash:
        if p is None:  # Popen itself failed
            return NativeCrash(f"{self.what} could not start: {exc}")
        code = self._reap(p)
        if isinstance(exc, TimeoutError):
            return NativeCrash(f"{self.what} did not answer within {self.timeout:g} s (killed)")
        return NativeCrash(f"{self.what} crashed ({_signal_name(code)})")

    def _reap(self, p: subprocess.Popen[bytes]) -> int | None:
        """Kill the child if it still runs, wait for it, close its pipes; its exit status."""
        if p.poll() is None:
            p.kill()
        try:
            code = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._close_pipes(p)
        self._p = None
        return code

    @staticmethod
    def _close_pipes(p: subprocess.Popen[bytes]) -> None:
        for f in (p.stdin, p.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            p, self._p = self._p, None
            if p is None or self._pid != os.getpid():
                return
            self._close_pipes(p)  # EOF on its stdin: the child exits
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _read_exactly(fd: int, n: int, deadline: float) -> bytes:
    buf = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise NativeCrash("end of output")
            buf += chunk
    return bytes(buf)


__all__ = ["Isolated", "NativeCrash"]
