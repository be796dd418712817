"""Make the output folders of tests/engine/test_resume_after_move.py with the pixscribe of main at
887eef9: the code before issue 24 moved every method into methods/<name>/ (see README.md here).

Run with that commit's code and tests first on the path, from a copy of that commit's tests/
(its plugin package is written against its own API):

    git archive 887eef9 src tests | tar -x -C /tmp/old
    cp tests/compat/make_fixture_moved.py /tmp/old/tests/compat/
    cd /tmp/old && PYTHONPATH=src python tests/compat/make_fixture_moved.py DEST

DEST gets ``in/`` (the inputs of make_fixture.py) and one finished output folder per entry
of :data:`RUNS`, each made by the real command; the test runs the same command lines with
today's code on a relocated copy.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# name -> (input table under in/, arguments after it); "ECHO" is the loopback echo server's URL
ECHO = ["--backend", "openai", "--base-url", "ECHO", "--vlm", "pixscribe-test"]
RUNS: dict[str, tuple[str, list[str]]] = {
    "out_recap": ("imgs.jsonl", ["--method", "recap", *ECHO]),
    "out_recap_prompt": ("imgs.jsonl", ["--method", "recap", "--prompt", "Say it.", "--max-new-tokens", "16",
                                        *ECHO]),
    "out_region": ("regions.jsonl", ["--method", "region", "--region-prompt", "focal", *ECHO]),
    "out_region_box": ("images.jsonl", ["--method", "region", "--region-prompt", "box", "--task", "dense",
                                        "-S", "region.box_convention=norm1000", *ECHO]),
    "out_textualize": ("imgs.jsonl", ["--method", "scripted-textualize", "--batch-size", "4"]),
    "out_textualize_partial": ("imgs.jsonl", ["--method", "scripted-textualize", "--shard-size", "5",
                                              "--batch-size", "1", "--flush-rows", "1"]),
}
# made with the test plugin's method: the real textualize stages (and options), scripted models
PLUGIN = {"out_textualize", "out_textualize_partial"}
# cut short when made (shard 0 done, shard 1 in batch files, shard 2 not started): the test resumes it
PARTIAL = {"out_textualize_partial": ["--limit", "7"]}


def command(name: str, inp: Path, out: Path, echo_url: str) -> list[str]:
    table, args = RUNS[name]
    return ["caption", str(inp / table), "-o", str(out), *[echo_url if a == "ECHO" else a for a in args],
            "--no-progress"]


def main(dest: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_fixture import cli, inputs, plugin_env

    from pixscribe.testing.openai_server import ServerProcess

    inp = dest / "in"
    inputs(inp)
    with ServerProcess("--mode", "echo") as srv, tempfile.TemporaryDirectory() as t:
        env = plugin_env(Path(t))
        for name in RUNS:
            cli(*command(name, inp, dest / name, srv.url), *PARTIAL.get(name, []),
                env=env if name in PLUGIN else None)
    for leftover in dest.glob("out_*/_state/leases/*"):
        leftover.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
