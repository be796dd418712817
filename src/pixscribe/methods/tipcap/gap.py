"""The modality-gap model: estimators of ``N(mu, Sigma)`` for TIPCap's four data settings.

TIPCap models the gap between a CLIP image embedding ``v`` and the embedding ``t`` of its
caption (both L2-normalised) as ``v - t ~ N(mu, Sigma)`` with a *full* covariance. The
decoder is trained on text embeddings perturbed with samples of that spread, and at
inference the image embedding is moved back by the mean (see :mod:`.noise`).

Estimators (numpy only, no torch):

- :func:`estimate_paired` (settings 1 and 2): the mean and a Ledoit-Wolf shrunk
  covariance of the residuals ``v_i - t_i``. With a few thousand pairs in 512-1024
  dimensions the sample covariance is badly conditioned or singular; shrinkage towards a
  scaled identity keeps it positive definite.
- :func:`estimate_unpaired` (setting 3): moment matching. If ``v = t' + g`` with ``g``
  independent of the text ``t'``, then ``E[v] - E[t] = mu`` and ``Cov(v) - Cov(t) = Sigma``;
  the difference of the two (shrunk) covariances is projected onto the positive-definite
  cone (eigenvalues floored), and the number of floored eigenvalues is reported.
- :func:`prior_gap` (setting 4, text only): the prior ``N(0, sigma^2 I)`` with CapDec's
  ``sigma^2 = 0.016``; training then learns ``Sigma`` under a KL regulariser towards it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CAPDEC_VARIANCE = 0.016  # CapDec's noise variance (std ~0.126), the text-only prior


@dataclass
class GapStats:
    """An estimated gap ``N(mean, cov)`` and how it was obtained."""

    mean: np.ndarray
    cov: np.ndarray
    method: str  # "paired", "moments" or "prior"
    n_image: int = 0
    n_text: int = 0
    shrinkage: float | None = None  # Ledoit-Wolf coefficient (paired: of the residuals)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def cholesky(self) -> np.ndarray:
        """The lower Cholesky factor of ``cov`` (made positive definite first if needed)."""
        return cholesky_pd(self.cov)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly statistics for ``training.json`` (the full arrays go to safetensors)."""
        ev = np.linalg.eigvalsh(self.cov)
        out: dict[str, Any] = {
            "method": self.method,
            "dim": self.dim,
            "n_image": self.n_image,
            "n_text": self.n_text,
            "mean_norm": float(np.linalg.norm(self.mean)),
            "cov_trace": float(np.trace(self.cov)),
            "cov_eig_min": float(ev[0]),
            "cov_eig_max": float(ev[-1]),
            "cov_condition": float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf"),
            "cov_effective_rank": float(ev.sum() ** 2 / np.square(ev).sum()) if ev.any() else 0.0,
            "shrinkage": self.shrinkage,
        }
        out.update(self.extra)
        return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (CLIP normalisation); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _check(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x dim), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name}: at least {min_rows} samples are needed to estimate a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def shrunk_covariance(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of the rows of ``x`` and the shrinkage coefficient.

    Uses scikit-learn's :func:`sklearn.covariance.ledoit_wolf` (data centred there). The
    target is ``trace(S)/d * I``, so the result is positive definite for any shrinkage > 0.
    """
    from ...deps import require

    cov_mod = require("sklearn.covariance", extra="tipcap", package="scikit-learn", what="TIPCap's gap estimator")
    cov, shrink = cov_mod.ledoit_wolf(np.asarray(x, dtype=np.float64))
    return np.asarray(cov, dtype=np.float64), float(shrink)


def sample_covariance(x: np.ndarray) -> np.ndarray:
    """The unbiased sample covariance (no shrinkage), for comparison and ``--shrinkage none``."""
    return np.cov(np.asarray(x, dtype=np.float64), rowvar=False).reshape(x.shape[1], x.shape[1])


def _covariance(x: np.ndarray, shrinkage: str) -> tuple[np.ndarray, float | None]:
    if shrinkage == "ledoit_wolf":
        return shrunk_covariance(x)
    if shrinkage == "none":
        return sample_covariance(x), None
    raise ValueError(f"unknown shrinkage {shrinkage!r} (ledoit_wolf or none)")


def estimate_paired(image: np.ndarray, text: np.ndarray, *, shrinkage: str = "ledoit_wolf",
                    normalize: bool = True) -> GapStats:
    """Settings 1-2: ``mu`` and full ``Sigma`` of the residuals ``v_i - t_i`` of paired embeddings."""
    v = _check(image, "image embeddings")
    t = _check(text, "text embeddings")
    if v.shape != t.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {v.shape} and {t.shape}")
    if normalize:
        v, t = l2_normalize(v), l2_normalize(t)
    r = v - t
    cov, shrink = _covariance(r, shrinkage)
    cos = np.sum(v * t, axis=1) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(t, axis=1), 1e-12)
    return GapStats(r.mean(0), cov, "paired", n_image=len(v), n_text=len(t), shrinkage=shrink,
                    extra={"pair_cosine_mean": float(cos.mean())})


def project_pd(cov: np.ndarray, floor: float | None = None) -> tuple[np.ndarray, int]:
    """The nearest (Frobenius) symmetric matrix with eigenvalues >= ``floor``, and how many were raised.

    ``floor`` defaults to ``1e-4 * trace / d`` (and at least 1e-10), so the result has a Cholesky factor.
    """
    c = (np.asarray(cov, dtype=np.float64) + np.asarray(cov, dtype=np.float64).T) / 2
    w, q = np.linalg.eigh(c)
    if floor is None:
        floor = max(1e-4 * max(float(np.trace(c)), 0.0) / c.shape[0], 1e-10)
    raised = int(np.sum(w < floor))
    w = np.maximum(w, floor)
    return (q * w) @ q.T, raised


def estimate_unpaired(image: np.ndarray, text: np.ndarray, *, shrinkage: str = "ledoit_wolf",
                      normalize: bool = True) -> GapStats:
    """Setting 3: match the first two moments of unpaired image and text embeddings."""
    v = _check(image, "image embeddings")
    t = _check(text, "text embeddings")
    if v.shape[1] != t.shape[1]:
        raise ValueError(f"image and text embeddings differ in dimension: {v.shape[1]} vs {t.shape[1]}")
    if normalize:
        v, t = l2_normalize(v), l2_normalize(t)
    cv, sv = _covariance(v, shrinkage)
    ct, st = _covariance(t, shrinkage)
    cov, raised = project_pd(cv - ct)
    return GapStats(v.mean(0) - t.mean(0), cov, "moments", n_image=len(v), n_text=len(t),
                    shrinkage=None if sv is None else max(sv, st or 0.0),
                    extra={"eigenvalues_floored": raised, "shrinkage_image": sv, "shrinkage_text": st})


def prior_gap(dim: int, variance: float = CAPDEC_VARIANCE) -> GapStats:
    """Setting 4: the prior ``N(0, variance * I)`` (no image is seen, so the mean gap is unknown: 0)."""
    if dim < 1 or variance <= 0:
        raise ValueError(f"a prior needs dim >= 1 and variance > 0, got {dim} and {variance}")
    return GapStats(np.zeros(dim), np.eye(dim) * float(variance), "prior", extra={"prior_variance": float(variance)})


def cholesky_pd(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; a matrix that is not numerically PD is projected first."""
    c = np.asarray(cov, dtype=np.float64)
    try:
        return np.linalg.cholesky((c + c.T) / 2)
    except np.linalg.LinAlgError:
        return np.linalg.cholesky(project_pd(c)[0])


def kl_gaussians(mean0: np.ndarray, cov0: np.ndarray, mean1: np.ndarray, cov1: np.ndarray) -> float:
    """``KL(N(mean0, cov0) || N(mean1, cov1))`` in nats (for reports and tests)."""
    d = len(mean0)
    l1 = cholesky_pd(cov1)
    a = np.linalg.solve(l1, cholesky_pd(cov0))
    diff = np.linalg.solve(l1, np.asarray(mean1) - np.asarray(mean0))
    logdet1 = 2 * np.log(np.diag(l1)).sum()
    logdet0 = 2 * np.log(np.diag(cholesky_pd(cov0))).sum()
    return float(0.5 * (np.square(a).sum() + diff @ diff - d + logdet1 - logdet0))


__all__ = [
    "CAPDEC_VARIANCE",
    "GapStats",
    "cholesky_pd",
    "estimate_paired",
    "estimate_unpaired",
    "kl_gaussians",
    "l2_normalize",
    "prior_gap",
    "project_pd",
    "sample_covariance",
    "shrunk_covariance",
]
