"""The gap in torch: training noise (reparameterised), the inverse mapping, and the KL regulariser.

Training (text only reaches the decoder): ``x = t + eps`` with

- ``full``: ``eps = L z``, ``z ~ N(0, I)``, ``L`` the Cholesky factor of ``Sigma``
  (reparameterised, so ``L`` can be learned when the setting says so);
- ``isotropic``: ``eps = sigma z`` (CapDec's baseline);
- ``none``: ``eps = 0``.

Inference: ``x = v - mu``, the inverse of the gap's mean shift (the spread cannot be
undone per sample; the decoder was trained to be robust to it). Without image data
(setting 4) ``mu`` is 0 and ``x = v``.

Learnable ``L`` (settings 2 and 4) is parameterised as ``tril(A, -1) + diag(softplus(a))``
so it stays a valid Cholesky factor, and :meth:`GapNoise.kl` is
``KL(N(0, L L^T) || N(0, L0 L0^T))`` against the prior's factor ``L0``.
"""

from __future__ import annotations

import math

import numpy as np

from ...deps import require
from .config import NOISE_MODES

torch = require("torch", extra="tipcap", what="TIPCap")
nn = torch.nn
F = torch.nn.functional


def _inv_softplus(x: "torch.Tensor") -> "torch.Tensor":
    return x + torch.log(-torch.expm1(-x))


class GapNoise(nn.Module):
    """Holds ``mu`` and the gap's spread; samples training noise and applies the inverse mapping."""

    def __init__(self, dim: int, mode: str = "full", *, learnable: bool = False):
        super().__init__()
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {mode!r}: one of {', '.join(NOISE_MODES)}")
        self.dim, self.mode, self.learnable = dim, mode, bool(learnable and mode == "full")
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("sigma", torch.tensor(0.0))  # isotropic std
        self.register_buffer("prior_chol", torch.eye(dim))  # L0 of the KL prior
        if self.learnable:
            self.chol_off = nn.Parameter(torch.zeros(dim, dim))
            self.chol_diag = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("chol_fixed", torch.zeros(dim, dim))

    @torch.no_grad()
    def set_gap(self, mean: np.ndarray, chol: np.ndarray, *, isotropic_variance: float | None = None,
                prior_chol: np.ndarray | None = None) -> None:
        """Load an estimated gap: ``mean``, its covariance's Cholesky factor, the isotropic variance."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        lt = torch.as_tensor(chol, dtype=torch.float32)
        var = isotropic_variance if isotropic_variance is not None else float(np.square(chol).sum()) / self.dim
        self.sigma.fill_(math.sqrt(max(var, 0.0)))
        self.prior_chol.copy_(torch.as_tensor(prior_chol if prior_chol is not None else chol, dtype=torch.float32))
        if self.learnable:
            self.chol_off.copy_(torch.tril(lt, -1))
            self.chol_diag.copy_(_inv_softplus(torch.diagonal(lt).clamp_min(1e-6)))
        else:
            self.chol_fixed.copy_(lt)

    def chol(self) -> "torch.Tensor":
        """The current lower Cholesky factor of ``Sigma``."""
        if self.learnable:
            return torch.tril(self.chol_off, -1) + torch.diag(F.softplus(self.chol_diag))
        return self.chol_fixed

    def covariance(self) -> "torch.Tensor":
        if self.mode == "isotropic":
            return torch.eye(self.dim, device=self.mean.device) * self.sigma**2
        if self.mode == "none":
            return torch.zeros(self.dim, self.dim, device=self.mean.device)
        lt = self.chol()
        return lt @ lt.T

    def sample(self, text: "torch.Tensor", generator: "torch.Generator | None" = None) -> "torch.Tensor":
        """Training input: ``text`` (B, d) plus a gap sample of the configured mode."""
        if self.mode == "none":
            return text
        z = torch.randn(text.shape, generator=generator, device=text.device, dtype=text.dtype)
        if self.mode == "isotropic":
            return text + self.sigma.to(text.dtype) * z
        return text + z @ self.chol().to(text.dtype).T

    def invert(self, image: "torch.Tensor") -> "torch.Tensor":
        """Inference input: the image embedding moved back by the gap's mean."""
        return image - self.mean.to(image.dtype)

    def kl(self) -> "torch.Tensor":
        """``KL(N(0, Sigma) || N(0, Sigma_prior))``; zero when ``Sigma`` is not learned."""
        if not self.learnable:
            return torch.zeros((), device=self.mean.device)
        lt, l0 = self.chol(), self.prior_chol
        a = torch.linalg.solve_triangular(l0, lt, upper=False)
        logdet = 2 * (torch.log(torch.diagonal(l0)).sum() - torch.log(torch.diagonal(lt)).sum())
        return 0.5 * (a.square().sum() - self.dim + logdet)


__all__ = ["GapNoise", "NOISE_MODES"]
