"""SPICE (optional): needs the SPICE 1.0 jar and Stanford CoreNLP 3.6.0 jars locally.

pycocoevalcap ships ``spice/spice-1.0.jar`` and its ``lib/`` but downloads
``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar`` on first use,
which does not work offline. To use SPICE, get those two jars yourself and either copy
them into pycocoevalcap's ``spice/lib/`` or point ``$PIXSCRIBE_CORENLP_DIR`` at a
directory holding them (they are then symlinked into a private copy of ``lib/``).
Nothing here fakes a score: without the jars, :func:`spice_scores` raises
:class:`SpiceUnavailable` saying what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from ..deps import MissingDependency

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class SpiceUnavailable(MissingDependency):
    pass


def _spice_dir() -> Path:
    try:
        import pycocoevalcap
    except ImportError as exc:
        raise SpiceUnavailable("SPICE needs pycocoevalcap's spice-1.0.jar: pip install 'pixscribe[metrics]'") from exc
    for base in getattr(pycocoevalcap, "__path__", []):
        d = Path(base) / "spice"
        if (d / "spice-1.0.jar").is_file():
            return d
    raise SpiceUnavailable("pycocoevalcap is installed but spice/spice-1.0.jar is missing")


def check_spice() -> tuple[Path, Path]:
    """(spice jar dir, directory with the CoreNLP jars) or :class:`SpiceUnavailable`."""
    d = _spice_dir()
    if not shutil.which(os.environ.get("JAVA", "java")):
        raise SpiceUnavailable("SPICE needs Java 8+ on PATH")
    env = os.environ.get("PIXSCRIBE_CORENLP_DIR")
    for cand in ([Path(env)] if env else []) + [d / "lib"]:
        if all((cand / j).is_file() for j in CORENLP_JARS):
            return d, cand
    raise SpiceUnavailable(
        "SPICE needs Stanford CoreNLP 3.6.0 locally: put " + " and ".join(CORENLP_JARS)
        + f" in {d / 'lib'} or in a directory named by $PIXSCRIBE_CORENLP_DIR; or leave 'spice' out of --metrics"
    )


def spice_scores(gts: Mapping[object, Sequence[str]], res: Mapping[object, Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus and per-image SPICE F-scores (runs ``java -jar spice-1.0.jar`` once)."""
    d, corenlp = check_spice()
    ids = list(gts)
    with tempfile.TemporaryDirectory(prefix="pixscribe-spice-") as tmp:
        t = Path(tmp)
        jar_dir = d
        if corenlp != d / "lib":  # a private copy of the jar dir with the CoreNLP jars linked in
            jar_dir = t / "spice"
            (jar_dir / "lib").mkdir(parents=True)
            os.symlink(d / "spice-1.0.jar", jar_dir / "spice-1.0.jar")
            for f in list((d / "lib").iterdir()) + [corenlp / j for j in CORENLP_JARS]:
                os.symlink(f, jar_dir / "lib" / f.name)
        inp = t / "in.json"
        out = t / "out.json"
        inp.write_text(json.dumps([{"image_id": str(i), "test": res[i][0], "refs": list(gts[i])} for i in ids]))
        cmd = [os.environ.get("JAVA", "java"), "-jar", "-Xmx8G", str(jar_dir / "spice-1.0.jar"), str(inp),
               "-out", str(out), "-subset", "-silent"]
        r = subprocess.run(cmd, cwd=str(jar_dir), capture_output=True, text=True)
        if r.returncode != 0 or not out.is_file():
            raise SpiceUnavailable(f"SPICE failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        data = {str(x["image_id"]): x["scores"]["All"]["f"] for x in json.loads(out.read_text())}
    per = [float(data[str(i)]) for i in ids]
    return (sum(per) / len(per) if per else 0.0), per
