"""The compiled pass of the expected-load quadrature against the NumPy pass.

Both evaluate the same integrals on the same nodes, the NumPy pass with a
balanced tree of truncated polynomial products (:mod:`routesim.theory._poisson`),
the compiled one with a sequential recursion and prefix/suffix products, so
they agree to rounding; the NumPy pass is itself checked against Monte Carlo
and closed forms in ``test_theory_expected_load.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from routesim.theory import _count_kernel, _quadrature
from routesim.theory.expected_load import (
    jacobian,
    load_map,
    load_map_and_jacobians,
    own_probability,
    selection_covariance,
)

pytestmark = pytest.mark.skipif(not _count_kernel.AVAILABLE, reason="needs Numba")

CASES = [
    # score function, bias mode, bias on, noise, K, N
    ("sigmoid", "additive", "scores", "normal", 2, 8),
    ("sigmoid", "additive", "scores", "gumbel", 1, 7),
    ("sqrtsoftplus", "multiplicative", "scores", "gumbel", 3, 9),
    ("sqrtsoftplus", "additive", "scores", "normal", 4, 11),
    ("sigmoid", "additive", "logits", "logistic", 1, 6),
    ("sigmoid", "multiplicative", "scores", "logistic", 5, 12),
    ("softmax", "multiplicative", "scores", "normal", 4, 10),
]


def _both(monkeypatch, fn):
    monkeypatch.setattr(_quadrature, "COMPILED_FROM", None)
    numpy_out = fn()
    monkeypatch.setattr(_quadrature, "COMPILED_FROM", 0)
    return numpy_out, fn()


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_compiled_pass_equals_the_numpy_pass(monkeypatch, case):
    score, mode, on, noise, k, n = case
    rng = np.random.default_rng(k * 100 + n)
    mu = rng.normal(0.0, 1.2, size=(3, n))
    if mode == "multiplicative" and on == "scores":
        bias = rng.uniform(0.7, 1.4, size=(3, n))
    else:
        bias = rng.normal(0.0, 0.3, size=(3, n))
    # a saturated expert: its sigmoid scores pile up against 1 + b
    mu[0, 0] = 6.0
    kw = dict(topk=k, score_function=score, noise=noise, bias_mode=mode, bias_on=on,
              noise_scale=np.array([1.0, 0.6, 1.7]))

    def everything():
        out = [load_map(mu, bias, **kw)]
        if score == "softmax":
            return out
        out += list(load_map_and_jacobians(mu, bias, **kw))
        out.append(jacobian(mu, bias, wrt="mu", **kw))
        out.append(selection_covariance(mu, bias, **kw))
        out.append(own_probability(mu, bias, np.array([0, n - 1, 2]), **kw))
        return out

    numpy_out, compiled_out = _both(monkeypatch, everything)
    for a, b in zip(numpy_out, compiled_out):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-13)


def test_compiled_pass_is_used_from_the_threshold(monkeypatch):
    """Large work goes to the compiled pass (it is the one called), small work does not."""
    calls = []
    real = _count_kernel.integrals

    def spy(*args, **kwargs):
        calls.append(args[3].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(_count_kernel, "integrals", spy)
    monkeypatch.setattr(_quadrature, "COMPILED_FROM", 1 << 17)
    load_map(np.zeros(4), topk=2)
    assert calls == []
    mu = np.linspace(-1.0, 1.0, 64)
    p = load_map(mu, topk=4)
    assert len(calls) == 1
    # the compiled pass keeps the map's invariant: sum_i p_i = K
    assert abs(p.sum() - 4.0) < 1e-9
