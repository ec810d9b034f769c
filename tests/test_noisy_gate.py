"""Noisy top-K gate: the smooth load estimator against Monte Carlo, the importance and
load gradients against central finite differences in float64."""

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from routesim.learning import noisy_gate
from routesim.gates import softplus

from _numerics import fd_grad, rel_err

RTOL = 1e-4


def topk_mask(h, k):
    idx = np.argsort(-h, axis=-1)[..., :k]
    m = np.zeros(h.shape, dtype=bool)
    np.put_along_axis(m, idx, True, axis=-1)
    return m


def test_topk_softmax_is_softmax_of_the_kept_logits():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 6))
    m = topk_mask(h, 3)
    g = noisy_gate.topk_softmax(np, h, m)
    for t in range(5):
        kept = np.flatnonzero(m[t])
        assert np.allclose(g[t, kept], softmax(h[t, kept]))
        assert np.all(g[t, ~m[t]] == 0)


def test_normal_cdf_matches_scipy_and_strict_backend():
    u = np.linspace(-6, 6, 13)
    assert np.allclose(noisy_gate.normal_cdf(np, u), norm.cdf(u), rtol=1e-12)
    xps = pytest.importorskip("array_api_strict")
    assert np.allclose(np.asarray(noisy_gate.normal_cdf(xps, xps.asarray(u))), norm.cdf(u))


def test_load_probability_matches_monte_carlo():
    # P(x, i): redraw only expert i's noise; how often is it in the top-K of H?
    rng = np.random.default_rng(1)
    e, k, draws = 6, 2, 200_000
    clean = rng.normal(size=e)
    raw = rng.normal(size=e)
    sigma = softplus(np, raw)
    h = clean + rng.normal(size=e) * sigma
    p = noisy_gate.load_probability(np, clean[None], h[None], sigma[None], k)[0]
    for i in range(e):
        others = np.delete(h, i)
        fresh = clean[i] + rng.normal(size=draws) * sigma[i]
        beaten_by = np.sum(others[None, :] > fresh[:, None], axis=1)
        mc = np.mean(beaten_by < k)
        assert abs(p[i] - mc) < 4 * np.sqrt(mc * (1 - mc) / draws) + 1e-9


@pytest.mark.parametrize("groups", [1, 2])
def test_importance_loss_gradient(groups):
    rng = np.random.default_rng(2)
    t, e, k = 8, 5, 2
    h = rng.normal(size=(t, e))
    m = topk_mask(h, k)
    value, grad = noisy_gate.importance_loss(np, h, m, groups)
    imp = [noisy_gate.topk_softmax(np, h, m)[g * t // groups:(g + 1) * t // groups].sum(0)
           for g in range(groups)]
    assert np.isclose(value, np.mean([i.var() / i.mean() ** 2 for i in imp]))
    fd = fd_grad(lambda hh: float(noisy_gate.importance_loss(np, hh, m, groups)[0]), h)
    assert rel_err(grad, fd) < RTOL


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_load_loss_gradients(k, groups):
    rng = np.random.default_rng(3 + k)
    t, e = 6, 5
    clean = rng.normal(size=(t, e))
    raw = rng.normal(size=(t, e))
    eps = rng.normal(size=(t, e))
    value, d_clean, d_raw = noisy_gate.load_loss(np, clean, raw, eps, k, groups)
    sigma = softplus(np, raw)
    prob = noisy_gate.load_probability(np, clean, clean + eps * sigma, sigma, k)
    loads = [prob[g * t // groups:(g + 1) * t // groups].sum(0) for g in range(groups)]
    assert np.isclose(value, np.mean([v.var() / v.mean() ** 2 for v in loads]))
    fd_c = fd_grad(lambda c: float(noisy_gate.load_loss(np, c, raw, eps, k, groups)[0]), clean)
    fd_r = fd_grad(lambda r: float(noisy_gate.load_loss(np, clean, r, eps, k, groups)[0]), raw)
    assert rel_err(d_clean, fd_c) < RTOL
    assert rel_err(d_raw, fd_r) < RTOL


def test_noise_off_gives_clean_logits():
    clean = np.array([[0.3, -1.0]])
    h, sigma = noisy_gate.noisy_logits(np, clean, np.zeros((1, 2)), None)
    assert h is clean and np.allclose(sigma, np.log(2.0))


def test_load_loss_strict_backend_agrees():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(9)
    c, r, eps = (rng.normal(size=(2, 6, 4)) for _ in range(3))
    a = noisy_gate.load_loss(np, c, r, eps, 2, 2)
    b = noisy_gate.load_loss(xps, xps.asarray(c), xps.asarray(r), xps.asarray(eps), 2, 2)
    for u, v in zip(a, b):
        assert np.allclose(u, np.asarray(v))
