"""CLIP embeddings: any Hugging Face CLIP-style model, batched, with a resumable on-disk cache.

:class:`ClipEncoder` loads a model that has ``get_text_features`` / ``get_image_features``
(CLIP, SigLIP, ...) by hub id or local directory with ``trust_remote_code`` off and
safetensors weights only, and returns L2-normalised float32 rows.

:class:`EmbeddingCache` stores embeddings keyed by a string (a text's hash, or an image
input's id and source): each computed batch is one ``part-NNNNNN.npz`` written to a
temporary name and renamed, so an interrupted run keeps every finished batch and a rerun
computes only the missing keys. The cache directory is per model fingerprint and kind,
so a changed model never reuses stale vectors.

:func:`embed_cached` is the plain batched function the engine can route later.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...deps import require
from ...errors import ModelUnavailable


def text_key(text: str) -> str:
    return hashlib.sha256(("text\x00" + text).encode()).hexdigest()[:32]


def image_key(input_id: str | None, source: str) -> str:
    return hashlib.sha256(f"image\x00{input_id or ''}\x00{source}".encode()).hexdigest()[:32]


def model_fingerprint(model: str, revision: str | None = None) -> str:
    """Identifies a model's weights: hub id + revision, or a local dir's config and weight files' sizes/mtimes."""
    h = hashlib.sha256(f"{model}\x00{revision or ''}".encode())
    p = Path(model)
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.suffix in (".json", ".safetensors") and f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class EmbeddingCache:
    """Append-only key -> vector store in ``root/<kind>-<fingerprint>/part-*.npz``."""

    def __init__(self, root: str | Path, kind: str, fingerprint: str):
        self.dir = Path(root) / f"{kind}-{fingerprint}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._vec: dict[str, np.ndarray] = {}
        self._parts = 0
        for f in sorted(self.dir.glob("part-*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    keys, emb = z["keys"], z["emb"]
            except Exception:  # a corrupt part (disk trouble): recompute its keys
                continue
            self._vec.update(zip(keys.tolist(), emb))
            self._parts = max(self._parts, int(f.stem.split("-")[1]) + 1)

    def __contains__(self, key: str) -> bool:
        return key in self._vec

    def __len__(self) -> int:
        return len(self._vec)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def add(self, keys: Sequence[str], emb: np.ndarray) -> None:
        """Persist one batch atomically (temporary file, then rename)."""
        if not len(keys):
            return
        emb = np.asarray(emb, dtype=np.float32)
        path = self.dir / f"part-{self._parts:06d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.asarray(list(keys)), emb=emb)
        os.replace(tmp, path)
        self._parts += 1
        self._vec.update(zip(keys, emb))


def embed_cached(items: Iterable[tuple[str, Any]], compute: Callable[[list[Any]], np.ndarray],
                 cache: EmbeddingCache | None, batch_size: int = 64,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Embed ``(key, item)`` pairs in batches, skipping keys already cached; returns ``{key: vector}``.

    ``items`` may be lazy; ``compute`` gets the items of one batch of missing keys.
    ``on_batch(n)`` is called after each computed batch.
    """
    out: dict[str, np.ndarray] = {}
    keys: list[str] = []
    batch: list[Any] = []

    def run() -> None:
        emb = compute(batch)
        if cache is not None:
            cache.add(keys, emb)
        out.update(zip(keys, np.asarray(emb, dtype=np.float32)))
        if on_batch:
            on_batch(len(keys))
        keys.clear()
        batch.clear()

    for key, item in items:
        if key in out:
            continue
        if cache is not None and key in cache:
            out[key] = cache.get([key])[0]
            continue
        keys.append(key)
        batch.append(item)
        if len(batch) >= batch_size:
            run()
    if batch:
        run()
    return out


@contextmanager
def quiet_hf():
    """No transformers progress bars or info logs while loading (the run has its own progress)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _hf_kwargs(revision: str | None) -> dict[str, Any]:
    return {"revision": revision, "trust_remote_code": False}


class ClipEncoder:
    """Text and image features of a CLIP-style model, L2-normalised, as float32 numpy rows."""

    def __init__(self, model: str, *, revision: str | None = None, device: str = "cpu", batch_size: int = 64):
        torch = require("torch", extra="tipcap", what="TIPCap's CLIP encoder")
        tf = require("transformers", extra="tipcap", what="TIPCap's CLIP encoder")
        self.torch, self.name, self.revision, self.device, self.batch_size = torch, model, revision, device, batch_size
        try:
            with quiet_hf():
                self.model = tf.AutoModel.from_pretrained(model, use_safetensors=True, **_hf_kwargs(revision))
                self.processor = tf.AutoProcessor.from_pretrained(model, **_hf_kwargs(revision))
            self.model.to(device)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"the CLIP model {model!r} could not be loaded ({exc}); pass a hub id or a local "
                                   "directory with safetensors weights (huggingface-cli download ID --local-dir DIR)"
                               ) from exc
        if not (hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")):
            raise ModelUnavailable(f"{model!r} ({type(self.model).__name__}) has no get_text_features/"
                                   "get_image_features: TIPCap needs a CLIP-style dual encoder")
        self.model.eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tc = getattr(self.model.config, "text_config", self.model.config)
        self.max_tokens = int(getattr(tc, "max_position_embeddings", 77))
        self.fingerprint = model_fingerprint(model, revision)
        self.truncated = 0

    def _unit(self, e: Any) -> np.ndarray:
        e = getattr(e, "pooler_output", e)
        e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return e.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text; texts over the model's token limit are truncated (counted in ``truncated``)."""
        rows = []
        for s in range(0, len(texts), self.batch_size):
            chunk = list(texts[s:s + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens)
            full = self.tokenizer(chunk, truncation=False)["input_ids"]
            self.truncated += sum(len(x) > self.max_tokens for x in full)
            with self.torch.no_grad():
                rows.append(self._unit(self.model.get_text_features(**{k: v.to(self.device) for k, v in enc.items()})))
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """One unit vector per RGB PIL image."""
        rows = []
        for s in range(0, len(images), self.batch_size):
            px = self.processor(images=list(images[s:s + self.batch_size]), return_tensors="pt")["pixel_values"]
            with self.torch.no_grad():
                rows.append(self._unit(self.model.get_image_features(pixel_values=px.to(self.device))))
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        cfg = self.model.config
        d = getattr(cfg, "projection_dim", None) or getattr(getattr(cfg, "text_config", cfg), "hidden_size", None)
        return int(d)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "revision": self.revision, "class": type(self.model).__name__, "dim": self.dim,
                "fingerprint": self.fingerprint}


__all__ = ["ClipEncoder", "EmbeddingCache", "embed_cached", "image_key", "model_fingerprint", "text_key"]
