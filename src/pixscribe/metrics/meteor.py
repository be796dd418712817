"""METEOR 1.5 through the jar pycocoevalcap ships, kept running as one Java process.

Same protocol and options as pycocoevalcap's ``Meteor`` (``-stdio -l en -norm``): one
``SCORE ||| ref ||| ... ||| hyp`` line per image gives the sufficient statistics, one
``EVAL ||| stats ||| ...`` line gives the per-image scores and the corpus score. The
process is started once and reused for every call (and closed with :meth:`close` or at
exit). Inputs are the PTB-tokenized strings, as for the other COCO metrics.

Needs Java (``java`` on PATH, or ``$JAVA``) and the jar: ``pip install pycocoevalcap``
(or point ``$PIXSCRIBE_METEOR_JAR`` at ``meteor-1.5.jar``; its ``data/paraphrase-en.gz``
must sit beside it).
"""

from __future__ import annotations

import atexit
import collections
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Mapping, Sequence

from ..deps import MissingDependency


class MeteorUnavailable(MissingDependency):
    pass


def find_meteor_jar() -> Path:
    env = os.environ.get("PIXSCRIBE_METEOR_JAR")
    if env:
        p = Path(env)
        if not p.is_file():
            raise MeteorUnavailable(f"PIXSCRIBE_METEOR_JAR={env}: no such file")
        return p
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as exc:
        raise MeteorUnavailable(
            "METEOR needs the meteor-1.5.jar shipped with pycocoevalcap: pip install 'pixscribe[metrics]' "
            "(or set PIXSCRIBE_METEOR_JAR to the jar's path)"
        ) from exc
    for base in getattr(pycocoevalcap, "__path__", []):
        p = Path(base) / "meteor" / "meteor-1.5.jar"
        if p.is_file():
            return p
    raise MeteorUnavailable("pycocoevalcap is installed but meteor/meteor-1.5.jar is missing; reinstall it")


def find_java() -> str:
    java = os.environ.get("JAVA") or shutil.which("java")
    if not java:
        raise MeteorUnavailable(
            "METEOR needs Java 8+ on PATH (e.g. apt-get install default-jre-headless); "
            "or leave 'meteor' out of --metrics"
        )
    return java


class Meteor:
    """A persistent METEOR 1.5 process. ``compute_score(gts, res) -> (corpus, per_image)``."""

    def __init__(self, jar: str | Path | None = None, java: str | None = None, mem: str = "2G"):
        self.jar = Path(jar) if jar else find_meteor_jar()
        self.java = java or find_java()
        cmd = [self.java, "-jar", f"-Xmx{mem}", str(self.jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        try:
            self._p = subprocess.Popen(cmd, cwd=str(self.jar.parent), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise MeteorUnavailable(f"could not start METEOR ({' '.join(cmd)}): {exc}") from exc
        self.mem = mem
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)  # its last lines, for a failure
        threading.Thread(target=self._drain, daemon=True, name="meteor-stderr").start()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _drain(self) -> None:
        assert self._p.stderr is not None
        for raw in self._p.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").strip()[:300])

    def _readline(self) -> str:
        assert self._p.stdout is not None
        line = self._p.stdout.readline()
        if not line:
            raise MeteorUnavailable(self._why_it_stopped())
        return line.decode().strip()

    def _why_it_stopped(self) -> str:
        try:
            code = self._p.wait(timeout=10)  # EOF comes before the exit status: wait for it
        except subprocess.TimeoutExpired:
            code = None
        how = ("closed its output" if code is None else f"was killed by signal {-code}" if code < 0
               else f"exited with code {code}")
        errors = [ln for ln in self._stderr if "Error" in ln or "Exception" in ln]
        said = f": {errors[-1]}" if errors else (f": {self._stderr[-1]}" if self._stderr else "")
        hint = (f" (its heap is -Xmx{self.mem}: a very long caption can exhaust it; pixscribe eval bounds captions "
                "with --max-caption-chars)") if "OutOfMemory" in said else ""
        return f"METEOR (java -jar {self.jar.name}) {how}{said}{hint}"

    def compute_score(self, gts: Mapping[object, Sequence[str]], res: Mapping[object, Sequence[str]]):
        if set(gts) != set(res):
            raise ValueError("gts and res must have the same image ids")
        ids = list(gts)
        with self._lock:
            assert self._p.stdin is not None
            stats = []
            # SCORE lines in chunks: one round trip per chunk, small enough that neither pipe fills
            for c in range(0, len(ids), 100):
                chunk = ids[c:c + 100]
                for i in chunk:
                    if len(res[i]) != 1:
                        raise ValueError(f"image {i!r}: expected exactly one hypothesis")
                    hyp = res[i][0].replace("|||", "").replace("  ", " ")
                    self._p.stdin.write(("SCORE ||| " + " ||| ".join(gts[i]) + " ||| " + hyp + "\n").encode())
                self._p.stdin.flush()
                for _ in chunk:
                    stats.append(self._readline())
            self._p.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self._p.stdin.flush()
            per = [float(self._readline()) for _ in ids]
            corpus = float(self._readline())
        return corpus, per

    def close(self) -> None:
        p = getattr(self, "_p", None)
        if p is None or p.poll() is not None:
            return
        try:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=5)
        except Exception:
            p.kill()
            p.wait()

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
