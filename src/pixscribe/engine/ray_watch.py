"""Last words for a driver that Ray ends (``--executor ray``).

Why a run could end with exit 1 and no message: a Ray node's raylet fate-shares with its
agents (the dashboard agent, the runtime-env agent), so killing one stops the raylet and its
object store; the core worker inside the driver then ends the driver from C++ at once
(``connection.cc: The connection to the plasma store is failed. Terminate the process.``,
``_exit(1)``): no Python code runs, so nothing inside the driver can say why. The run cannot
go on either: the node that held its workers and objects is gone.

So a small watcher process is started beside the driver once Ray is connected. It holds a
pipe from the driver and learns the Ray session's folder; the driver writes ``ok`` when it
leaves through Python (:meth:`Watch.done`, also at exit), and the watcher then stays silent.
When the pipe ends without ``ok`` and Ray's log of the driver says Ray ended it, the watcher
prints one line on the driver's stderr: the node's reason (from the raylet's log) and that
what was written is intact, to resume with the same command. A driver killed by anyone else
(``kill -9``) gets no line from it.

    python -m pixscribe.engine.ray_watch PID    # reads "session DIR" / "ok" lines on stdin
"""

from __future__ import annotations

import atexit
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

_RAY_ENDED = re.compile(r"Terminate the process|^\[[^\]]* F \d+ \d+\]", re.M)
_REASON = re.compile(r'reason_message: "([^"]+)"')


class Watch:
    """The driver's end of the pipe to its watcher."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        atexit.register(self.done)

    def done(self) -> None:
        """This driver leaves through Python: the watcher has nothing to say."""
        if self.proc.stdin is None or self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write("ok\n")
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass


def watch_driver(ray: Any) -> Watch | None:
    """Start the watcher of this process for the Ray session ``ray`` is connected to."""
    import os

    session = _session_dir(ray)
    if session is None:
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pixscribe.engine.ray_watch", str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # Ctrl-C in the terminal is the driver's
        assert proc.stdin is not None
        proc.stdin.write(f"session {session}\n")
        proc.stdin.flush()
    except OSError:
        return None
    return Watch(proc)


def _session_dir(ray: Any) -> str | None:
    try:
        return str(ray._private.worker._global_node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - a client connection (ray://) has no local node
        return None


def last_words(pid: int, session: Path) -> str | None:
    """The line to print for driver ``pid`` gone without ``ok``: None unless Ray ended it."""
    logs = session / "logs"
    driver = "".join(_tail(p) for p in logs.glob(f"python-core-driver-*_{pid}.log"))
    if not _RAY_ENDED.search(driver):
        return None
    found = _REASON.findall(_tail(logs / "raylet.out"))
    why = found[-1] if found else "the driver lost its connection to the node's object store"
    return (f"error: Ray ended this run: its Ray node stopped ({why.rstrip('.')}). What was written is intact: "
            "rerun the same command to resume (with --ray-address, once that node is back)")


def _tail(path: Path, size: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def main(argv: list[str]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid, session, ok = int(argv[0]), None, False
    for line in sys.stdin:
        word, _, rest = line.rstrip("\n").partition(" ")
        if word == "session":
            session = Path(rest)
        ok = ok or word == "ok"
    if ok or session is None:
        return
    msg = last_words(pid, session)
    if msg:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
