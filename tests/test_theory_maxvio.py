"""Expected MaxVio: Gaussian maxima, 1/sqrt(T) decay, plateau, design effect, engine.

References: closed forms for the maximum of 2 and 3 standard normals,
Monte Carlo against quadrature, the exact engine without a controller
(balanced and skewed traffic, with and without sequence correlation).
"""

from __future__ import annotations

import numpy as np
import pytest

from routesim import ConfigError
from routesim.config import BatchConfig, Config, ControllerConfig, RouterConfig, RunConfig
from routesim.config import SweepConfig, TrafficConfig
from routesim.run import simulate
from routesim.theory import (
    design_effect,
    expected_max_gaussian,
    expected_maxvio,
    load_map,
    selection_covariance,
    sequence_covariance,
)
from routesim.traffic import popularity


def test_gaussian_maximum_closed_forms():
    m2, se2 = expected_max_gaussian(np.zeros(2), np.eye(2), samples=200_000)
    m3, se3 = expected_max_gaussian(np.zeros(3), np.eye(3), samples=200_000)
    assert abs(m2 - 1 / np.sqrt(np.pi)) < 4 * se2
    assert abs(m3 - 3 / (2 * np.sqrt(np.pi))) < 4 * se3


def test_quadrature_is_exact_for_exchangeable_zero_sum_vectors():
    n = 12
    cov = 0.3 * (np.eye(n) - 1.0 / n)
    q, _ = expected_max_gaussian(np.zeros(n), cov, method="quad")
    m, se = expected_max_gaussian(np.zeros(n), cov, samples=100_000)
    assert abs(q - m) < 4 * se


def test_balanced_decay_and_imbalance_plateau():
    n, k = 16, 2
    cov = selection_covariance(np.zeros(n), topk=k)
    p = np.full(n, k / n)
    tokens = np.array([1e3, 4e3, 1.6e4, 6.4e4])
    mv, _ = expected_maxvio(p, cov, tokens=tokens, topk=k, method="quad")
    assert np.allclose(mv[:-1] / mv[1:], 2.0)  # 1/sqrt(tokens)
    mild = popularity("linear", n, linear_spread=0.05)
    skewed = load_map(mild, topk=k)
    cov_s = selection_covariance(mild, topk=k)
    big, _ = expected_maxvio(skewed, cov_s, tokens=np.array([1e3, 1e4, 1e5, 1e11]), topk=k,
                             method="quad")
    plateau = skewed.max() * n / k - 1
    assert np.all(np.diff(big) < 0) and big[-2] > plateau
    assert abs(big[-1] - plateau) < 1e-4 * plateau  # levels off at the imbalance


def test_bad_probabilities_are_refused():
    cov = np.eye(3)
    with pytest.raises(ConfigError, match="p_PE"):
        expected_maxvio([0.5, 1.2, 0.3], cov, tokens=100, topk=1)
    with pytest.raises(ConfigError, match="topk"):
        expected_maxvio([0.5, 0.5, 0.5], cov, tokens=100, topk=3)
    with pytest.raises(ConfigError, match="tokens"):
        expected_maxvio([0.5, 0.5, 0.5], cov, tokens=-1, topk=1)


def _engine_maxvio(skew, rho, steps=150):
    n, k = 16, 2
    cfg = Config(run=RunConfig(steps=steps, record_displacement=False),
                 batch=BatchConfig(num_sequences=16, seq_length=256),
                 router=RouterConfig(num_experts=n, topk=k),
                 traffic=TrafficConfig(skew=skew, **({"zipf_exponent": 0.3} if skew == "zipf"
                                                     else {})),
                 controller=ControllerConfig(type="none"),
                 sweep=SweepConfig(parameters={"traffic.seq_correlation": [rho]}))
    mv = simulate(cfg, progress=False)["maxvio_batch"].values.ravel()
    return mv.mean(), mv.std() / np.sqrt(mv.size)


@pytest.mark.parametrize("skew", ["uniform", "zipf"])
def test_engine_maxvio_without_controller(skew):
    n, k, tokens = 16, 2, 16 * 256
    mu = popularity(skew, n, zipf_exponent=0.3)
    p = load_map(mu, topk=k)
    pred, _ = expected_maxvio(p, selection_covariance(mu, topk=k), tokens=tokens, topk=k,
                              samples=40_000)
    sim, se = _engine_maxvio(skew, 0.0)
    assert abs(sim - pred) < 4 * se + 0.03 * pred


def test_design_effect_of_sequence_correlation():
    n, k, length, rho = 16, 2, 256, 0.02
    mu = np.zeros(n)
    cov = selection_covariance(mu, topk=k)
    seq = sequence_covariance(mu, topk=k, seq_correlation=rho, draws=400)
    deff = design_effect(cov, seq, length)
    assert np.all(deff > 1.5)  # 256 tokens share the component: strongly inflated
    eff = cov + (length - 1) * seq
    pred, _ = expected_maxvio(np.full(n, k / n), eff, tokens=16 * length, topk=k,
                              samples=40_000)
    sim, se = _engine_maxvio("uniform", rho)
    assert abs(sim - pred) < 4 * se + 0.06 * pred
