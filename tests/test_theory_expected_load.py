"""The expected-load map, its Jacobian, the selection covariance and the equilibrium.

References: Monte Carlo (stated sampling tolerance), closed forms (Gumbel
noise with K = 1, 2 is the Plackett-Luce law), a brute-force integral with
scipy.integrate.quad and an explicit Poisson-binomial loop, and finite
differences.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import integrate, special

from routesim import ConfigError
from routesim.theory import (
    equilibrium,
    jacobian,
    load_map,
    load_map_mc,
    own_probability,
    selection_covariance,
)
from routesim.traffic import popularity

ROUTERS = [
    dict(score_function="sigmoid", noise="normal"),
    dict(score_function="sqrtsoftplus", noise="gumbel"),
    dict(score_function="sigmoid", noise="logistic", bias_mode="multiplicative"),
    dict(score_function="sigmoid", noise="logistic", bias_on="logits"),
    dict(score_function="softmax", noise="normal", bias_mode="multiplicative"),
]


def _bias(router: dict, n: int, seed: int = 1) -> np.ndarray:
    b = 0.15 * np.random.default_rng(seed).standard_normal(n)
    return np.exp(b) if router.get("bias_mode") == "multiplicative" else b


@pytest.mark.parametrize("router", ROUTERS)
def test_load_map_matches_monte_carlo(router):
    n, k = 8, 3
    mu = popularity("zipf", n, zipf_exponent=0.7)
    b = _bias(router, n)
    p = load_map(mu, b, topk=k, **router)
    pm, se = load_map_mc(mu, b, topk=k, samples=200_000, seed=3, **router)
    assert np.all(np.abs(p - pm) < 5 * se + 1e-4)  # 5 standard errors
    assert abs(p.sum() - k) < 1e-4


def _brute_force(mu, b, k):
    """Sigmoid, additive, normal: p_i = int phi(x) P(<K others above y_i(x)) dx (quad + DP)."""
    n = len(mu)

    def others_below(i, y):
        q = [special.ndtr(-(special.logit(y - b[j]) - mu[j])) if 0 < y - b[j] < 1
             else float(y - b[j] <= 0) for j in range(n) if j != i]
        d = np.zeros(n)
        d[0] = 1.0
        for qj in q:  # the Poisson-binomial recursion, one expert at a time
            d[1:] = d[1:] * (1 - qj) + d[:-1] * qj
            d[0] *= 1 - qj
        return d[:k].sum()

    out = []
    for i in range(n):
        f = lambda x: np.exp(-x * x / 2) / np.sqrt(2 * np.pi) * others_below(  # noqa: E731
            i, special.expit(mu[i] + x) + b[i])
        out.append(integrate.quad(f, -9, 9, limit=200, epsabs=1e-11)[0])
    return np.array(out)


def test_load_map_matches_brute_force_integral():
    mu = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    b = np.array([-0.2, 0.05, 0.0, 0.1, 0.15])
    p = load_map(mu, b, topk=2, nodes=128)
    assert np.allclose(p, _brute_force(mu, b, 2), atol=2e-7)


@pytest.mark.parametrize("k", [1, 2])
def test_gumbel_logits_is_plackett_luce(k):
    # Gumbel noise on the logits: the top-1 law is softmax(mu + b) exactly.
    mu = np.array([1.0, 0.4, 0.0, -0.3, -1.2])
    b = np.array([0.1, -0.2, 0.0, 0.3, 0.0])
    w = special.softmax(mu + b)
    ref = w if k == 1 else w + np.array([sum(w[j] * w[i] / (1 - w[j]) for j in range(5) if j != i)
                                         for i in range(5)])
    p = load_map(mu, b, topk=k, noise="gumbel", bias_on="logits", nodes=128)
    assert np.allclose(p, ref, atol=1e-7)


def test_vectorised_over_leading_axes_and_uniform_case():
    mu = np.stack([popularity("linear", 6, linear_spread=s) for s in (0.0, 0.5, 1.0)])
    p = load_map(mu[:, None, :], np.zeros((2, 6)), topk=2)
    assert p.shape == (3, 2, 6)
    assert np.allclose(p[0], 2 / 6, atol=1e-9)
    for i in range(3):
        assert np.allclose(p[i, 1], load_map(mu[i], np.zeros(6), topk=2))
    assert np.allclose(own_probability(mu, np.zeros(6), [0, 2, 5], topk=2),
                       p[:, 0][np.arange(3), [0, 2, 5]])


JAC_ROUTERS = [
    dict(score_function="sigmoid", noise="normal"),
    dict(score_function="sqrtsoftplus", noise="gumbel"),
    dict(score_function="sigmoid", noise="normal", bias_mode="multiplicative"),
    dict(score_function="sigmoid", noise="logistic", bias_on="logits"),
]


@pytest.mark.parametrize("router", JAC_ROUTERS)
def test_jacobian_matches_finite_differences(router):
    n, k = 6, 2
    mu = popularity("zipf", n, zipf_exponent=0.8)
    b = _bias(router, n)
    jac = jacobian(mu, b, topk=k, nodes=128, **router)
    eps = 1e-5
    fd = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = eps
        fd[:, j] = (load_map(mu, b + e, topk=k, nodes=128, **router)
                    - load_map(mu, b - e, topk=k, nodes=128, **router)) / (2 * eps)
    tol = 2e-3 if router["noise"] != "normal" else 1e-4  # corners of logistic/Gumbel laws
    assert np.max(np.abs(jac - fd)) < tol * np.max(np.abs(fd))
    invariant = b if router.get("bias_mode") == "multiplicative" else np.ones(n)
    assert np.allclose(jac @ invariant, 0.0, atol=1e-12)


def test_jacobian_with_respect_to_mu():
    n, k = 5, 2
    mu = popularity("zipf", n)
    b = _bias({}, n)
    jac = jacobian(mu, b, topk=k, wrt="mu", nodes=128)
    eps = 1e-5
    fd = np.stack([(load_map(mu + eps * np.eye(n)[j], b, topk=k, nodes=128)
                    - load_map(mu - eps * np.eye(n)[j], b, topk=k, nodes=128)) / (2 * eps)
                   for j in range(n)], axis=-1)
    assert np.max(np.abs(jac - fd)) < 1e-4 * np.max(np.abs(fd))


def test_jacobian_is_symmetric_psd_for_additive_bias():
    mu = popularity("zipf", 10)
    jac = jacobian(mu, _bias({}, 10), topk=3)
    assert np.allclose(jac, jac.T)
    assert np.min(np.linalg.eigvalsh(jac)) > -1e-10


def test_selection_covariance_matches_monte_carlo():
    n, k = 6, 3
    mu = popularity("zipf", n)
    b = _bias({}, n)
    cov = selection_covariance(mu, b, topk=k, nodes=128)
    rng = np.random.default_rng(7)
    z = mu + rng.standard_normal((400_000, n))
    sel = special.expit(z) + b
    idx = np.argpartition(-sel, k - 1, axis=-1)[:, :k]
    ind = np.zeros_like(sel)
    np.put_along_axis(ind, idx, 1.0, axis=-1)
    mc = np.cov(ind, rowvar=False)
    # standard error of a product moment of indicators: below 0.5 / sqrt(samples)
    assert np.max(np.abs(cov - mc)) < 5 * 0.5 / np.sqrt(400_000)
    assert np.allclose(cov.sum(axis=-1), 0.0, atol=1e-5)


def test_selection_covariance_uniform_closed_form():
    n, k = 7, 3
    cov = selection_covariance(np.zeros(n), topk=k)
    both = k * (k - 1) / (n * (n - 1))
    ref = np.full((n, n), both - (k / n) ** 2)
    np.fill_diagonal(ref, (k / n) * (1 - k / n))
    assert np.allclose(cov, ref, atol=1e-8)
    assert np.allclose(selection_covariance(np.zeros(n), topk=1) - np.diag(
        np.full(n, (1 / n) * (1 - 1 / n))), -1 / n ** 2 * (1 - np.eye(n)), atol=1e-8)


@pytest.mark.parametrize("router", ROUTERS[:3])
def test_equilibrium_balances(router):
    n, k = 8, 2
    mu = np.stack([popularity("zipf", n, zipf_exponent=a) for a in (0.5, 1.0)])
    b = equilibrium(mu, topk=k, **router)
    p = load_map(mu, b, topk=k, **router)
    assert np.max(np.abs(p * k / p.sum(-1, keepdims=True) - k / n)) < 1e-8
    if router.get("bias_mode") == "multiplicative":
        assert np.allclose(np.log(b).mean(-1), 0.0, atol=1e-10)
    else:
        assert np.allclose(b.mean(-1), 0.0, atol=1e-10)


def test_equilibrium_on_logits_undoes_popularity():
    mu = popularity("zipf", 6)
    assert np.allclose(equilibrium(mu, topk=2, bias_on="logits", noise="logistic"), -mu,
                       atol=1e-7)


def test_bad_input_is_refused_with_the_argument_named():
    mu = np.zeros(4)
    cases = [
        (dict(topk=4), "topk"),
        (dict(topk=0), "topk"),
        (dict(topk=2, noise="cauchy"), "noise"),
        (dict(topk=2, score_function="relu"), "score_function"),
        (dict(topk=2, noise_scale=0.0), "noise_scale"),
        (dict(topk=2, nodes=4), "nodes"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ConfigError, match=name):
            load_map(mu, **kwargs)
    with pytest.raises(ConfigError, match="bias_PE"):
        load_map(mu, np.array([0.0, np.nan, 0.0, 0.0]), topk=2)
    with pytest.raises(ConfigError, match="bias_PE"):
        load_map(mu, np.array([1.0, -1.0, 1.0, 1.0]), topk=2, bias_mode="multiplicative")
    with pytest.raises(ConfigError, match="mu_PE"):
        load_map(np.array([0.0, np.inf, 0.0]), topk=1)
    with pytest.raises(ConfigError, match="load_map_mc"):
        load_map(mu, np.array([0.1, 0, 0, 0]), topk=1, score_function="softmax")
    with pytest.raises(ConfigError, match="target_PE"):
        equilibrium(mu, topk=2, target_PE=[0.5, 0.5, 0.5, 1.5])


def test_softmax_additive_equal_bias_is_exact():
    mu = popularity("zipf", 5)
    for combo in itertools.product([0.0, 0.3], [1, 2]):
        shift, k = combo
        p = load_map(mu, np.full(5, shift), topk=k, score_function="softmax")
        q = load_map(mu, None, topk=k, bias_on="logits")
        assert np.allclose(p, q)


def test_one_expert_response_on_shared_levels_equals_the_full_map():
    """Rows that move only their own expert's bias may share the count levels of the
    others' bias: p_i(b* + y e_i) as the full map's entry i, at many nodes."""
    mu = popularity("zipf", 12, zipf_exponent=1.0)
    base = 0.05 * np.sin(np.arange(12))
    y = np.array([-0.2, -0.03, 0.0, 0.04, 0.3])
    bias = base + y[None, :, None] * np.eye(12)[:, None, :]  # (E, X, E)
    idx = np.broadcast_to(np.arange(12)[:, None], bias.shape[:2])
    shared = own_probability(np.broadcast_to(mu, bias.shape), bias, idx, topk=3,
                             others_bias_E=base)
    full = load_map(np.broadcast_to(mu, bias.shape), bias, topk=3, nodes=192)
    expected = np.take_along_axis(full, idx[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(shared, expected, rtol=2e-5)
    with pytest.raises(ConfigError, match="others_bias_E"):
        own_probability(np.stack([mu, mu + 0.1]), np.zeros((2, 12)), [0, 1], topk=3,
                        others_bias_E=base)
    with pytest.raises(ConfigError, match="others_bias_E: shape"):
        own_probability(mu, base, 0, topk=3, others_bias_E=base[:5])
