"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def photo_base(size: tuple[int, int]) -> np.ndarray:
    """A real photo (scikit-image's astronaut) resized to ``size`` as the base of generated images;
    where scikit-image is not installed (a vLLM environment), smooth colour fields with edges, as
    costly to decode as a photo of that size."""
    try:
        from pixscribe.testing import sample_photo

        img = sample_photo("astronaut")
    except ImportError:
        rng = np.random.default_rng(1)
        fields = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(fields).resize((512, 384), Image.Resampling.BICUBIC)
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.int16)


def generate_jpegs(directory: Path, n: int, size: tuple[int, int], quality: int = 90, seed: int = 0) -> list[Path]:
    """n distinct JPEGs: a real photo with per-image noise and a shifted colour cast."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob("*.jpg"))
    if len(existing) >= n:
        return existing[:n]
    rng = np.random.default_rng(seed)
    base = photo_base(size)
    out = []
    for i in range(n):
        p = directory / f"img{i:06d}.jpg"
        out.append(p)
        if p.exists():
            continue
        noise = rng.integers(-12, 12, size=(size[1] // 8, size[0] // 8, 1), dtype=np.int16)
        noise = np.kron(noise, np.ones((8, 8, 3), dtype=np.int16))
        arr = np.clip(base + noise + (i % 17) - 8, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(p, "JPEG", quality=quality)
    return out


class Stopwatch:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.seconds = time.perf_counter() - self.t0


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=quality)
    return b.getvalue()
