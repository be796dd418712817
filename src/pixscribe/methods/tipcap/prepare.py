"""From the run's inputs to what training needs: texts, their CLIP embeddings, and the gap.

CLIP runs once here (text and image embeddings, cached on disk under the run's cache
directory) and is freed before the decoder is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InputFileError
from .config import TrainConfig
from .data import Problems, embed_images, read_texts
from .embed import ClipEncoder, EmbeddingCache, embed_cached, text_key
from .gap import CAPDEC_VARIANCE, GapStats, estimate_paired, estimate_unpaired, prior_gap


@dataclass
class Prepared:
    texts: list[str]
    text_emb: np.ndarray  # (N, d) unit rows, aligned with texts
    gap: GapStats
    clip: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)

    @property
    def dim(self) -> int:
        return int(self.text_emb.shape[1])


def _embed_texts(texts: list[str], enc: ClipEncoder, cache: EmbeddingCache, batch: int) -> np.ndarray:
    keys = [text_key(t) for t in texts]
    vec = embed_cached(zip(keys, texts), enc.embed_texts, cache, batch_size=batch)
    return np.stack([vec[k] for k in keys]) if keys else np.zeros((0, enc.dim), np.float32)


def _pairs(cfg: TrainConfig, enc: ClipEncoder, caches: dict[str, EmbeddingCache], problems: Problems):
    """Image and caption embeddings of every (image, caption) pair; an image with k captions gives k pairs."""
    im = embed_images(cfg.pairs, enc, caches["image"], caption_column=cfg.caption_column, problems=problems,
                      batch_size=cfg.embed_batch_size)
    rows = [i for i, caps in enumerate(im.captions) for _ in caps]
    caps = [c for cs in im.captions for c in cs]
    if len(caps) < 2:
        raise InputFileError(f"only {len(caps)} usable image-caption pair(s) in {', '.join(cfg.pairs)}: need at "
                             "least 2")
    return im.emb[rows], _embed_texts(caps, enc, caches["text"], cfg.embed_batch_size), caps, len(im.keys)


def estimate_gap(cfg: TrainConfig, enc: ClipEncoder, caches: dict[str, EmbeddingCache], text_emb: np.ndarray,
                 problems: Problems) -> tuple[GapStats, list[str], dict[str, int]]:
    """The gap for the configured setting, the pair captions (added to the texts) and data sizes."""
    if cfg.setting in ("paired", "web"):
        v, t, caps, n_img = _pairs(cfg, enc, caches, problems)
        return estimate_paired(v, t, shrinkage=cfg.shrinkage), caps, {"pairs": len(caps), "pair_images": n_img}
    if cfg.setting == "unpaired":
        im = embed_images(cfg.images, enc, caches["image"], problems=problems, batch_size=cfg.embed_batch_size)
        if len(im.keys) < 2:
            raise ConfigError(f"only {len(im.keys)} readable image(s) in {', '.join(cfg.images)}: need at least 2")
        return estimate_unpaired(im.emb, text_emb, shrinkage=cfg.shrinkage), [], {"unpaired_images": len(im.keys)}
    return prior_gap(text_emb.shape[1], cfg.noise_variance or CAPDEC_VARIANCE), [], {}


def prepare(cfg: TrainConfig, console: Any = None) -> Prepared:
    """Read the inputs, embed them with CLIP (cached), estimate the gap; CLIP is freed afterwards."""
    problems = Problems(console=console)
    corpus = read_texts(cfg.texts, cfg.text_column, problems, max_chars=cfg.max_text_chars)
    if not corpus:
        raise InputFileError(f"the text corpus ({', '.join(cfg.texts)}) holds no text")
    enc = ClipEncoder(cfg.clip, revision=cfg.clip_revision, device=cfg.device, batch_size=cfg.embed_batch_size)
    root = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output) / "_cache"
    caches = {kind: EmbeddingCache(root, kind, enc.fingerprint) for kind in ("text", "image")}
    if console is not None:
        console.print(f"embedding {len(corpus)} texts with {cfg.clip} (cache: {root})", highlight=False)
    corpus_emb = _embed_texts(corpus, enc, caches["text"], cfg.embed_batch_size)
    gap, pair_caps, sizes = estimate_gap(cfg, enc, caches, corpus_emb, problems)
    texts = corpus + pair_caps
    emb = np.concatenate([corpus_emb, _embed_texts(pair_caps, enc, caches["text"], cfg.embed_batch_size)])
    sizes.update({"corpus_texts": len(corpus), "train_texts": len(texts),
                  "clip_truncated_texts_this_run": enc.truncated, "skipped_inputs": problems.count})
    clip = enc.describe()
    del enc
    return Prepared(texts, emb.astype(np.float32), gap, clip, sizes, problems)


__all__ = ["Prepared", "estimate_gap", "prepare"]
