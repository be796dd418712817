"""The test plugin package (tests/plugin_pkg), installed for real with pip into a folder
that subprocesses get on PYTHONPATH: the `pixscribe` command then finds ``--method
scripted`` through the ``pixscribe.methods`` entry-point group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    import shutil

    target = tmp_path_factory.mktemp("plugin_site")
    src = tmp_path_factory.mktemp("plugin_src") / "plugin_pkg"  # a copy: pip's build files stay out of tests/
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def pixscribe(env: dict[str, str], *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    """Run the real `pixscribe` command in a subprocess (``python -m pixscribe.cli``)."""
    e = {**env, **extra_env}
    return subprocess.run([sys.executable, "-m", "pixscribe.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def ctrl_c_reaches_it() -> None:
    """preexec_fn of a child the test sends SIGINT: a shell that starts the suite in the
    background (``(pytest &)``) ignores SIGINT, children inherit that, and Python then never
    raises KeyboardInterrupt, as Unix asks of a background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pixscribe_popen(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixscribe.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env, **extra_env},
                            preexec_fn=ctrl_c_reaches_it)
