"""TIPCap fixtures: a tiny CLIP and tiny GPT-2 built locally, a small caption world, a trained tiny model.

Torch runs these tiny models single-threaded (``torch_one_thread``): on a shared 2-core
machine, two threads on 32-wide matrices are more than ten times slower than one.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest

COLORS = ["red", "blue", "green", "yellow"]
ANIMALS = ["cat", "dog", "horse", "bird"]
PLACES = ["grass", "table", "road"]
WORLD = [f"a {c} {a} on the {p}" for c, a, p in itertools.product(COLORS, ANIMALS, PLACES)]


@contextlib.contextmanager
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def torch_one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tipcap_tiny(tmp_path_factory) -> dict[str, Path]:
    """``{"clip": dir, "gpt2": dir, "corpus": WORLD as .txt}``."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    pytest.importorskip("lemminflect")
    from pixscribe.testing.tiny_tipcap import build_tiny_clip, build_tiny_gpt2

    root = tmp_path_factory.mktemp("tipcap_tiny")
    corpus = root / "world.txt"
    corpus.write_text("\n".join(WORLD) + "\n")
    return {"clip": build_tiny_clip(root), "gpt2": build_tiny_gpt2(root, sentences=WORLD, vocab_size=300),
            "corpus": corpus}


def tiny_config(tiny: dict[str, Path], output: Path, **kw):
    """A TrainConfig for the tiny models (fast learning rate, no progress bar)."""
    from pixscribe.methods.tipcap.config import TrainConfig

    base = dict(output=str(output), texts=[str(tiny["corpus"])], clip=str(tiny["clip"]), lm=str(tiny["gpt2"]),
                steps=20, batch_size=16, lr=3e-3, warmup_steps=5, save_every=1000, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tipcap_trained(tipcap_tiny, tmp_path_factory) -> Path:
    """A tiny TIPCap trained 150 steps text-only. The isotropic noise is large on purpose (sigma^2 = 1):
    it drowns most of the text embedding, so the decoder must learn to read the prompt."""
    from pixscribe.methods.tipcap.train import train

    out = tmp_path_factory.mktemp("tipcap_trained")
    with one_thread():
        train(tiny_config(tipcap_tiny, out, steps=150, noise="isotropic", noise_variance=1.0, prompt_dropout=0.3))
    return out
