"""Threshold (large-N) approximation of the load map, and the one-pass Jacobians,
against independent references: a scipy root finder on the closed-form survival
functions, finite differences, and the separate exact quadratures."""

import numpy as np
import pytest
from scipy import optimize, special

from routesim.theory.expected_load import jacobian, load_map, load_map_and_jacobians
from routesim.theory.threshold_map import threshold_change, threshold_map


def _q_sigmoid_normal(tau, mu, b, s):
    """P(sigmoid(mu + s eps) + b > tau), eps standard normal (closed form)."""
    u = np.clip(tau - b, 1e-300, 1 - 1e-16)
    inside = (tau - b > 0) & (tau - b < 1)
    return np.where(inside, special.ndtr((mu - special.logit(u)) / s),
                    np.where(tau - b <= 0, 1.0, 0.0))


def test_threshold_level_matches_a_root_finder():
    rng = np.random.default_rng(5)
    mu, b, s, k = rng.normal(0, 0.5, 40), rng.normal(0, 0.05, 40), 1.3, 6
    tm = threshold_map(mu, b, topk=k, noise_scale=s)
    tau = optimize.brentq(lambda t: _q_sigmoid_normal(t, mu, b, s).sum() - k,
                          b.min() + 1e-9, b.max() + 1 - 1e-9, xtol=1e-14)
    assert tm.tau_P[0] == pytest.approx(tau, abs=1e-10)
    np.testing.assert_allclose(tm.p_PE[0], _q_sigmoid_normal(tau, mu, b, s), atol=1e-9)
    assert tm.p_PE.sum() == pytest.approx(k, abs=1e-9)


@pytest.mark.parametrize("kw", [{}, {"bias_mode": "multiplicative"},
                                {"score_function": "sqrtsoftplus", "noise": "gumbel"}])
def test_threshold_change_is_the_derivative(kw):
    rng = np.random.default_rng(6)
    mu = rng.normal(0, 0.5, 24)
    b = 1.0 + rng.normal(0, 0.05, 24) if kw.get("bias_mode") else rng.normal(0, 0.05, 24)
    db, dmu = 1e-6 * rng.standard_normal(24), 1e-6 * rng.standard_normal(24)
    tm = threshold_map(mu, b, topk=4, **kw)
    moved = threshold_map(mu + dmu, b + db, topk=4, **kw)
    pred = threshold_change(tm, db[None], dmu[None])
    np.testing.assert_allclose(pred, moved.p_PE - tm.p_PE, atol=1e-11)


def test_one_pass_jacobians_equal_the_separate_quadratures():
    rng = np.random.default_rng(7)
    mu, b = rng.normal(0, 0.5, (2, 12)), rng.normal(0, 0.05, (2, 12))
    kw = dict(topk=3, noise="logistic", noise_scale=1.7)
    p, jb, jm = load_map_and_jacobians(mu, b, **kw)
    np.testing.assert_allclose(p, load_map(mu, b, **kw), atol=1e-13)
    np.testing.assert_allclose(jb, jacobian(mu, b, **kw), atol=1e-13)
    np.testing.assert_allclose(jm, jacobian(mu, b, wrt="mu", **kw), atol=1e-13)


@pytest.mark.parametrize("kind,gate", [("logit", "sigmoid"), ("logit_logb", "sigmoid"),
                                       ("score_add", "sigmoid"), ("score_add", "sqrtsoftplus"),
                                       ("score_mul", "sigmoid"), ("score_mul", "sqrtsoftplus")])
@pytest.mark.parametrize("noise", ["normal", "logistic", "gumbel"])
def test_compiled_warm_solve_equals_the_numpy_path(kind, gate, noise):
    """The compiled Newton solve (its own per-expert terms) against the NumPy terms."""
    from routesim.theory import _threshold_kernel
    from routesim.theory._levels import Transform
    from routesim.theory.threshold_map import solve_threshold

    if not _threshold_kernel.AVAILABLE:
        pytest.skip("needs Numba")
    rng = np.random.default_rng(7)
    mu = rng.normal(size=(4, 48))
    b = rng.normal(scale=0.1, size=(4, 48))
    if kind in ("logit_logb", "score_mul"):
        b = np.exp(b)
    s = rng.uniform(0.5, 2.0, size=4)
    tr = Transform(kind, gate)
    start = solve_threshold(tr, noise, mu, b, s, 6, None).tau_P + 0.01
    fast = solve_threshold(tr, noise, mu, 1.001 * b, s, 6, start, compiled=True)
    slow = solve_threshold(tr, noise, mu, 1.001 * b, s, 6, start, compiled=False)
    for name in ("p_PE", "f_PE", "g_bias_PE", "g_mu_PE", "tau_P"):
        got, want = getattr(fast, name), getattr(slow, name)
        assert np.max(np.abs(got - want)) <= 1e-9 * np.max(np.abs(want)), name
