"""Seeded bootstrap confidence intervals for corpus scores.

Choice (documented): images are resampled with replacement and the *mean of the
per-image scores* is recomputed on each resample; the 2.5th and 97.5th percentiles give
the 95% interval. This is the common approach. It does not recompute corpus-level
statistics on each resample: BLEU's corpus score pools n-gram counts and CIDEr-D's idf
depends on the reference corpus, so for those the interval is that of the per-image
mean around the same data (for CIDEr-D the corpus score *is* the per-image mean; for
BLEU the pooled corpus score usually lies inside it but need not be its centre).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def bootstrap_ci(
    per_image: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if not per_image:
        return out
    n = len(next(iter(per_image.values())))
    if n == 0 or n_resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))  # the same resamples for every metric
    for k, v in per_image.items():
        a = np.asarray(v, dtype=np.float64)
        if len(a) != n:
            continue
        mask = ~np.isnan(a)
        if not mask.any():
            continue
        a2 = np.where(mask, a, 0.0)
        s = a2[idx].sum(1)
        c = mask[idx].sum(1)
        means = s / np.maximum(c, 1)
        lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[k] = [float(lo), float(hi)]
    return out
