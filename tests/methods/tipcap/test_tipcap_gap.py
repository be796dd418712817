"""TIPCap's gap model: the estimators recover known Gaussians; shrinkage keeps Sigma PD; the torch noise is exact."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from pixscribe.methods.tipcap.gap import (  # noqa: E402
    cholesky_pd,
    estimate_paired,
    estimate_unpaired,
    kl_gaussians,
    prior_gap,
    project_pd,
    sample_covariance,
    shrunk_covariance,
)


def rand_cov(d, rng, hi=1e-1, lo=1e-3):
    """A full (rotated, anisotropic) covariance with eigenvalues from hi down to lo."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.geomspace(hi, lo, d)) @ q.T


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_paired_estimator_recovers_known_mean_and_full_covariance():
    rng = np.random.default_rng(0)
    d, n = 12, 20_000
    mu, sigma = rng.normal(size=d) * 0.1, rand_cov(d, rng)
    t = rng.normal(size=(n, d)) * 0.3
    v = t + rng.multivariate_normal(mu, sigma, size=n)
    est = estimate_paired(v, t, normalize=False)
    assert np.linalg.norm(est.mean - mu) < 0.01
    assert rel(est.cov, sigma) < 0.04
    # the off-diagonal structure is really recovered: a diagonal model is far off
    assert rel(np.diag(np.diag(sigma)), sigma) > 0.5
    assert rel(np.diag(np.diag(est.cov)), sigma) > 0.5
    assert est.method == "paired" and est.n_image == n and 0 <= est.shrinkage < 0.01
    s = est.summary()
    assert s["dim"] == d and s["cov_eig_min"] > 0 and s["mean_norm"] == pytest.approx(np.linalg.norm(est.mean))


def test_paired_estimator_works_on_clip_normalised_embeddings():
    rng = np.random.default_rng(1)
    d, n = 8, 5000
    t = rng.normal(size=(n, d))
    v = t + rng.normal(size=(n, d)) * 0.5
    est = estimate_paired(v, t)  # normalize=True: residuals of unit vectors
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.allclose(est.mean, (vn - tn).mean(0))
    assert np.allclose(est.cov, shrunk_covariance(vn - tn)[0])
    with pytest.raises(ValueError, match="same shape"):
        estimate_paired(v[:10], t[:9])
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate_paired(v[:1], t[:1])


def test_moment_matching_recovers_gap_from_unpaired_samples():
    rng = np.random.default_rng(2)
    d, n = 12, 20_000
    mu, sigma = rng.normal(size=d) * 0.1, rand_cov(d, rng)
    m, c = rng.normal(size=d) * 0.2, rand_cov(d, rng, 2e-1, 1e-2)
    texts = rng.multivariate_normal(m, c, size=n)
    other_texts = rng.multivariate_normal(m, c, size=n)  # the images' captions are not in `texts`
    images = other_texts + rng.multivariate_normal(mu, sigma, size=n)
    est = estimate_unpaired(images, texts, normalize=False)
    assert np.linalg.norm(est.mean - mu) < 0.02
    assert rel(est.cov, sigma) < 0.15
    assert np.linalg.eigvalsh(est.cov)[0] > 0 and est.method == "moments"
    np.linalg.cholesky(est.cov)  # usable for the reparameterisation


def test_moment_matching_floors_an_indefinite_difference():
    rng = np.random.default_rng(3)
    texts = rng.normal(size=(500, 6)) * 0.5
    images = rng.normal(size=(500, 6)) * 0.2  # less spread than the texts: Cov(v) - Cov(t) < 0
    est = estimate_unpaired(images, texts, normalize=False)
    assert est.extra["eigenvalues_floored"] == 6
    assert np.linalg.eigvalsh(est.cov)[0] > 0
    c, raised = project_pd(np.diag([1.0, -1.0, 0.5]))
    assert raised == 1 and np.linalg.eigvalsh(c)[0] > 0 and np.allclose(np.diag(c)[[0, 2]], [1.0, 0.5])


@pytest.mark.parametrize("d,n", [(64, 20), (512, 200)])
def test_shrinkage_keeps_sigma_positive_definite_with_few_samples(d, n):
    rng = np.random.default_rng(4)
    sigma = rand_cov(d, rng)
    x = rng.multivariate_normal(np.zeros(d), sigma, size=n)
    s = sample_covariance(x)
    assert np.linalg.matrix_rank(s) < d  # singular: no Cholesky factor
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(s)
    lw, shrink = shrunk_covariance(x)
    assert 0 < shrink < 1
    assert np.linalg.eigvalsh(lw)[0] > 0
    np.linalg.cholesky(lw)
    assert rel(lw, sigma) < rel(s, sigma)  # and closer to the truth than the sample covariance
    est = estimate_paired(x + 1.0, np.ones((n, d)), normalize=False)
    assert np.linalg.eigvalsh(est.cov)[0] > 0


def test_prior_and_kl():
    p = prior_gap(5, 0.016)
    assert np.allclose(p.cov, 0.016 * np.eye(5)) and not p.mean.any() and p.method == "prior"
    assert kl_gaussians(p.mean, p.cov, p.mean, p.cov) == pytest.approx(0.0, abs=1e-12)
    # closed form for isotropic Gaussians: 0.5 d (r - 1 - ln r)
    r = 0.5
    assert kl_gaussians(p.mean, r * p.cov, p.mean, p.cov) == pytest.approx(0.5 * 5 * (r - 1 - np.log(r)))
    with pytest.raises(ValueError):
        prior_gap(0)
    a = cholesky_pd(np.diag([1.0, 0.0]))  # PSD but singular: projected first
    assert np.all(np.diag(a) > 0)


torch = pytest.importorskip("torch")


def test_full_noise_is_reparameterised_with_the_cholesky_factor():
    from pixscribe.methods.tipcap.noise import GapNoise

    rng = np.random.default_rng(5)
    d = 6
    sigma = rand_cov(d, rng)
    mu = rng.normal(size=d)
    g = GapNoise(d, "full")
    g.set_gap(mu, np.linalg.cholesky(sigma))
    torch.manual_seed(0)
    t = torch.zeros(200_000, d)
    eps = g.sample(t).double().numpy()
    assert np.abs(eps.mean(0)).max() < 3e-3  # zero-mean: the mean is undone at inference instead
    assert rel(np.cov(eps, rowvar=False), sigma) < 0.02
    v = torch.randn(3, d)
    assert torch.allclose(g.invert(v), v - torch.as_tensor(mu, dtype=torch.float32))
    assert float(g.kl()) == 0.0  # nothing learned

    iso = GapNoise(d, "isotropic")
    iso.set_gap(mu, np.linalg.cholesky(sigma), isotropic_variance=0.016)
    e = iso.sample(t[:50_000]).numpy()
    assert e.std() == pytest.approx(0.016**0.5, rel=0.02)
    none = GapNoise(d, "none")
    assert torch.equal(none.sample(v), v)


def test_learnable_gap_kl_matches_closed_form_and_has_gradients():
    from pixscribe.methods.tipcap.noise import GapNoise

    d = 4
    g = GapNoise(d, "full", learnable=True)
    prior = np.linalg.cholesky(0.016 * np.eye(d))
    g.set_gap(np.zeros(d), prior * 0.5, prior_chol=prior)  # start at a quarter of the prior's variance
    assert np.allclose(g.covariance().detach().numpy(), 0.004 * np.eye(d), atol=1e-7)
    kl = g.kl()
    assert kl.item() == pytest.approx(kl_gaussians(np.zeros(d), 0.004 * np.eye(d), np.zeros(d), 0.016 * np.eye(d)),
                                      rel=1e-4)
    kl.backward()
    assert g.chol_diag.grad is not None and (g.chol_diag.grad < 0).all()  # KL pulls the variance up to the prior
    loss = g.sample(torch.zeros(8, d)).square().sum()
    loss.backward()
    assert g.chol_off.grad is not None
