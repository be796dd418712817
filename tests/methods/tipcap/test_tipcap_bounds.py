"""``tipcap train --text`` on corpora that are not one caption per line: the real command, a
tiny real CLIP and GPT-2, files made here.

Before: one 48 MB line was tokenized whole (13.5 GB, not done after 10 minutes), and 200 kB
of random bytes named .txt was trained on as ~5,000 "captions" without a word."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys

import pytest
from fixtures_tipcap import WORLD

DATA_LIMIT = 3 << 30  # a tiny training needs well under 1 GB; the old path asked for many more


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


def _train(tiny, out, *texts, extra=()):
    args = [a for t in texts for a in ("--text", str(t))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pixscribe", "tipcap", "train", "-o", str(out), *args,
                           "--clip", str(tiny["clip"]), "--lm", str(tiny["gpt2"]), "--steps", "2", "--batch-size", "8",
                           "--no-progress", *extra], env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_bounded)  # fmt: skip


def test_a_48_mb_line_and_a_latin1_line_are_skipped_and_named(tipcap_tiny, tmp_path):
    corpus = tmp_path / "corpus.txt"
    with corpus.open("wb") as f:
        f.write(("\n".join(WORLD[:10]) + "\n").encode())
        f.write(b"a cat " * 8_000_000 + b"\n")  # line 11: 48,000,001 bytes
        f.write(("\n".join(WORLD[10:]) + "\n").encode())
        f.write("un caf\xe9 noir\n".encode("latin-1"))
    p = _train(tipcap_tiny, tmp_path / "m", corpus)
    assert p.returncode == 0, p.stderr[-3000:]
    msg = " ".join(p.stderr.split())
    assert f"{corpus}:11: a line of 48,000,001 bytes is over --max-text-chars 2,000" in msg
    assert f"{corpus}:{len(WORLD) + 2}: not UTF-8 text (byte 6)" in msg
    rep = json.loads((tmp_path / "m" / "training.json").read_text())
    assert rep["data"]["corpus_texts"] == len(WORLD) and rep["skipped"]["count"] == 2


@pytest.mark.parametrize("kind", ["random", "random without NUL bytes"])
def test_random_bytes_named_txt_are_refused_naming_the_file(tipcap_tiny, tmp_path, kind):
    data = random.Random(0).randbytes(200_000)
    if kind != "random":
        data = data.replace(b"\0", b"x")
    bad = tmp_path / "noise.txt"
    bad.write_bytes(data)
    p = _train(tipcap_tiny, tmp_path / "m", tipcap_tiny["corpus"], bad)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    msg = " ".join(p.stderr.split())
    want = "not a text file (a NUL byte at offset" if kind == "random" else "lines are not usable text"
    assert f"{bad}: " in msg and want in msg, msg
    assert not (tmp_path / "m" / "training.json").exists()
