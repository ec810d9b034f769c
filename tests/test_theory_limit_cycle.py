"""The sign controller's relay loop: exact cycles, the noisy mean field, the engine.

References: the controller functions of routesim.controllers iterated in a
plain loop, a Monte Carlo run of the per-expert chain, the
Ornstein-Uhlenbeck limit of the chain, and the exact engine (amplitude
within 20 %).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from routesim import ConfigError
from routesim.config import (
    BatchConfig,
    Config,
    ControllerConfig,
    RouterConfig,
    RunConfig,
    SweepConfig,
    TrafficConfig,
)
from routesim.controllers import sign_centred_update, sign_update
from routesim.run import simulate
from routesim.theory import (
    equilibrium,
    harmonic_balance,
    jacobian,
    linear_plant,
    relay_cycle,
    relay_stationary,
    selection_covariance,
)
from routesim.traffic import popularity


@pytest.mark.parametrize("centred", [False, True])
def test_relay_cycle_matches_the_controller_iterated(centred):
    rng = np.random.default_rng(2)
    n, u = 6, 0.02
    m = rng.standard_normal((n, n))
    a = m @ m.T
    a = a - a.mean(0) - a.mean(1)[:, None] + a.mean()  # zero row and column sums, PSD
    bstar = 0.1 * rng.standard_normal(n)
    plant = linear_plant(a, bstar)
    out = relay_cycle(plant, u, np.zeros(n), centred=centred)
    law = sign_centred_update if centred else sign_update
    b = np.zeros(n)
    for _ in range(out["transient"]):
        b = law(np, b, -plant(b), u)  # the law sees loads; -e is the load up to scale
    for t in range(2 * out["period"]):
        assert np.allclose(b, out["bias_SE"][t % out["period"]], atol=1e-12)
        b = law(np, b, -plant(b), u)


def test_two_expert_cycle_and_harmonic_balance():
    # Relay around an integrator from 0.35: period 2 between the lattice points
    # 0.05 and -0.05 of b - b*, as in REFERENCES B1.
    a = np.array([[1.0, -1.0], [-1.0, 1.0]])
    out = relay_cycle(linear_plant(a, [0.35, -0.35]), 0.1, np.zeros(2))
    assert out["period"] == 2
    assert np.allclose(np.sort(out["bias_SE"][:, 0] - 0.35), [-0.05, 0.05])
    hb = harmonic_balance(2.0, 0.1)
    assert int(hb["period"]) == 2 and np.isclose(hb["error_amplitude"], 0.4 / np.pi)
    with pytest.raises(ConfigError, match="rate"):
        relay_cycle(linear_plant(a, [0.0, 0.0]), -0.1, np.zeros(2))


def test_noise_free_chain_is_the_period_two_cycle():
    lam, u = np.full(32, 3.0), 0.01
    out = relay_stationary(lam, np.zeros(32), u, offsets=16)
    assert np.isclose(out["bias_rms"], u / 2)
    # offsets uniform: E[lam^2 y^2] over {a - u, a} is lam^2 u^2 / 3
    assert np.isclose(out["error_rms"], 3.0 * u / np.sqrt(3.0), rtol=1e-3)


def test_noisy_chain_matches_monte_carlo_and_ou_limit():
    lam, sigma, u = 5.0, 0.05, 0.002
    out = relay_stationary([lam] * 16, [sigma] * 16, u, offsets=8)
    # Monte Carlo of the chain itself (independent experts on random offsets)
    rng = np.random.default_rng(4)
    y = u * (rng.random(4000) - 0.5)
    samples = []
    for t in range(3000):
        up = rng.random(y.size) < special.ndtr(-lam * y / sigma)
        y = y + np.where(up, u, -u)
        if t > 500:
            samples.append(y.copy())
    s = np.array(samples)
    mc_rms = np.sqrt(np.mean((s - s.mean(0)) ** 2))
    assert abs(out["bias_rms"] / mc_rms - 1) < 0.03
    # many small steps: a linear restoring force 2 lam phi(0) u / sigma per step
    ou = np.sqrt(u * sigma * np.sqrt(2 * np.pi) / (4 * lam))
    assert abs(out["bias_rms"] / ou - 1) < 0.1


def test_engine_sign_amplitude_within_20_percent():
    n, k, seqs, length = 16, 2, 32, 256
    tokens = seqs * length
    mu = popularity("zipf", n)
    bstar = equilibrium(mu, topk=k)
    a = (n / k) * jacobian(mu, bstar, topk=k)
    sigma = np.sqrt(np.diag(selection_covariance(mu, bstar, topk=k))) * (n / k) / np.sqrt(tokens)
    rates = [0.01, 0.03]
    cfg = Config(run=RunConfig(steps=120, record_displacement=False, bias_dtype="float64"),
                 batch=BatchConfig(num_sequences=seqs, seq_length=length),
                 router=RouterConfig(num_experts=n, topk=k), traffic=TrafficConfig(skew="zipf"),
                 controller=ControllerConfig(type="sign"),
                 sweep=SweepConfig(parameters={"controller.bias_update_rate": rates}))
    ds = simulate(cfg, progress=False)
    bias = ds["bias"].isel(replica=0, step=slice(60, None)).values  # (S, P, E)
    for j, u in enumerate(rates):
        b = bias[:, j] - bias[:, j].mean(-1, keepdims=True)
        sim = np.sqrt(np.mean((b - b.mean(0)) ** 2))
        pred = relay_stationary(np.diag(a), sigma, u, cross_EE=a)["bias_rms"]
        assert abs(sim / pred - 1) < 0.2
