"""Linear stability of the bias laws: poles, critical rate, settling, steady noise.

References: eigenvalues of the per-mode companion matrix and brute-force
iteration of the recursions, python-control when installed, the exact
engine at large T, and a hypothesis property over random scenarios on the
noise-free loop b -> law(b, p(b)).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routesim import ConfigError, UnstableLoopError
from routesim.config import (
    BatchConfig,
    Config,
    ControllerConfig,
    RouterConfig,
    RunConfig,
    SweepConfig,
    TrafficConfig,
)
from routesim.run import simulate
from routesim.theory import (
    closed_loop_poles,
    critical_rate,
    deterministic_trajectory,
    equilibrium,
    jacobian,
    loop_gains,
    selection_covariance,
    settling_steps,
    stable_region,
    steady_error_covariance,
)
from routesim.theory.maxvio import load_error_covariance
from routesim.traffic import popularity

LAWS = [("proportional", 0.0, 0.1), ("ema", 0.7, 0.1), ("momentum_tanh", 0.5, 0.2)]


def _companion(law, u, lam, n, beta, kappa):
    """Per-mode state matrix written out from the update laws (x, memory)."""
    if law == "proportional":
        return np.array([[1 - u * lam]])
    if law == "ema":  # mem' = beta mem + (1-beta) (F - 1/N), F - 1/N = lam x / N; x' = x - u mem'
        k = (1 - beta) * lam / n
        return np.array([[1 - u * k, -u * beta], [k, beta]])
    k = -(1 - beta) * lam / kappa  # v' = beta v + (1-beta) e / kappa, e = -lam x; x' = x + u v'
    return np.array([[1 + u * k, u * beta], [k, beta]])


@pytest.mark.parametrize("law,beta,kappa", LAWS)
def test_poles_are_companion_eigenvalues(law, beta, kappa):
    n = 16
    for u, lam in [(0.3, 2.0), (5.0, 1.5), (40.0, 3.0)]:
        poles = closed_loop_poles(law, u, lam, num_experts=n, momentum=beta, tanh_scale=kappa)
        eig = np.linalg.eigvals(_companion(law, u, lam, n, beta, kappa))
        assert np.allclose(np.sort_complex(np.unique(np.round(poles, 12))),
                           np.sort_complex(np.unique(np.round(eig, 12))))


def test_poles_against_python_control():
    control = pytest.importorskip("control")
    for law, beta, kappa in LAWS[1:]:
        a = _companion(law, 7.0, 2.0, 16, beta, kappa)
        sys = control.ss(a, np.ones((a.shape[0], 1)), np.ones((1, a.shape[0])), 0, dt=1)
        poles = closed_loop_poles(law, 7.0, 2.0, num_experts=16, momentum=beta,
                                  tanh_scale=kappa)
        assert np.allclose(np.sort_complex(sys.poles()), np.sort_complex(poles))


@pytest.mark.parametrize("law,beta,kappa", LAWS)
def test_critical_rate_is_the_boundary(law, beta, kappa):
    n, lam = 16, 2.5
    uc = float(critical_rate(law, lam, num_experts=n, momentum=beta, tanh_scale=kappa))
    def rho(u):
        return np.max(np.abs(np.linalg.eigvals(_companion(law, u, lam, n, beta, kappa))))

    assert rho(0.99 * uc) < 1.0 < rho(1.01 * uc)
    assert abs(rho(uc) - 1.0) < 1e-9
    region = stable_region(law, [0.5 * uc, 0.99 * uc, 1.01 * uc], [beta], lam, num_experts=n,
                           tanh_scale=kappa)
    assert region[:, 0].tolist() == [True, True, False]


def test_settling_steps_match_iteration():
    lam = np.array([0.0, 1.0, 2.5, 4.0])
    for u in (0.05, 0.2, 0.45):
        pred = float(settling_steps("proportional", u, lam, num_experts=4, reduction=0.01))
        x = np.ones(4)
        steps = 0
        while np.max(np.abs(x[1:])) > 0.01:
            x = (1 - u * lam) * x
            steps += 1
        assert steps == int(np.ceil(pred - 1e-9))
    assert np.isinf(settling_steps("proportional", 0.6, lam, num_experts=4))


def test_loop_gains_uniform_closed_form():
    # isotropic map: J = c (I - 11^T/N) has one zero and N-1 equal gains N c / K
    n, k, c = 8, 2, 0.3
    lam = loop_gains(c * (np.eye(n) - 1.0 / n), k)
    assert np.allclose(lam, [0.0] + [n * c / k] * (n - 1))


def test_steady_error_covariance_closed_form_and_monte_carlo():
    n, k, u = 6, 2, 0.3
    a = 2.0 * (np.eye(n) - 1.0 / n)
    noise = 1e-4 * (np.eye(n) - 1.0 / n)
    cov = steady_error_covariance("proportional", u, a, noise)
    assert np.allclose(cov, noise * 2.0 / (2.0 - u * 2.0))
    # EMA: iterate the linear system with noise and compare the variance
    rng = np.random.default_rng(0)
    beta = 0.6
    x = np.zeros(n)
    mem = np.zeros(n)
    errs = []
    root = np.linalg.cholesky(noise + 1e-12 * np.eye(n))
    for t in range(40_000):
        nz = root @ rng.standard_normal(n)
        e = -a @ x + nz
        mem = beta * mem + (1 - beta) * (-e / n)
        x = x - 15.0 * mem
        if t > 100:
            errs.append(e)
    mc = np.cov(np.array(errs), rowvar=False)
    pred = steady_error_covariance("ema", 15.0, a, noise, momentum=beta)
    assert np.allclose(np.diag(mc), np.diag(pred), rtol=0.05)
    with pytest.raises(UnstableLoopError, match=r"unstable \(spectral radius [0-9.]+ >= 1\)"):
        steady_error_covariance("proportional", 1.2, a, noise)


def _scenario(n, k, skew, spread):
    mu = popularity(skew, n, linear_spread=spread, zipf_exponent=spread)
    b = equilibrium(mu, topk=k)
    lam = loop_gains(jacobian(mu, b, topk=k), k)
    return mu, b, lam


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.sampled_from([4, 6, 8]), k_frac=st.floats(0.1, 0.6),
       skew=st.sampled_from(["linear", "zipf"]), spread=st.floats(0.2, 1.2),
       frac=st.floats(0.1, 0.8))
def test_property_settles_below_and_not_above_critical_rate(n, k_frac, skew, spread, frac):
    k = max(1, min(n - 1, int(round(k_frac * n))))
    mu, _, lam = _scenario(n, k, skew, spread)
    uc = float(critical_rate("proportional", lam[-1], num_experts=n))
    rates = np.array([frac * uc, 1.25 * uc])
    predicted = float(settling_steps("proportional", rates[0], lam, num_experts=n,
                                     reduction=1e-3))
    steps = int(3 * predicted) + 40  # safety factor 3 (the start is nonlinear)
    traj = deterministic_trajectory(mu, law="proportional", rate=None, rates=rates,
                                    steps=steps, topk=k, nodes=32)
    maxvio = traj["maxvio_SP"]
    assert maxvio[-1, 0] < 1e-2  # settled below u_c
    assert np.max(maxvio[-4:, 1]) > 1e-2  # keeps oscillating above u_c


def test_exact_engine_settles_within_predicted_time():
    n, k = 8, 2
    mu, b, lam = _scenario(n, k, "zipf", 1.0)
    uc = float(critical_rate("proportional", lam[-1], num_experts=n))
    rates = [0.5 * uc, 1.3 * uc]
    cfg = Config(run=RunConfig(steps=40, record_displacement=False, bias_dtype="float64"),
                 batch=BatchConfig(num_sequences=64, seq_length=512),
                 router=RouterConfig(num_experts=n, topk=k),
                 traffic=TrafficConfig(skew="zipf"),
                 controller=ControllerConfig(type="proportional"),
                 sweep=SweepConfig(parameters={"controller.bias_update_rate": rates}))
    ds = simulate(cfg, progress=False)
    mv = ds["maxvio_batch"].isel(replica=0).values
    tokens = 64 * 512
    noise = load_error_covariance(selection_covariance(mu, b, topk=k), tokens=tokens, topk=k)
    floor = 3.0 * np.sqrt(np.max(np.diag(noise)))  # a few counting-noise standard deviations
    settle = float(settling_steps("proportional", rates[0], lam, num_experts=n,
                                  reduction=1e-2))
    first = int(np.argmax(mv[:, 0] < floor))
    assert mv[first, 0] < floor and first <= 2 * settle + 5
    assert np.mean(mv[20:, 1]) > 5 * floor  # above u_c the engine does not settle


def test_deterministic_trajectory_takes_rates_alone():
    """``rates=`` needs no ``rate=``; each row equals the single-rate run (an independent call)."""
    mu = np.array([0.5, 0.0, -0.5])
    both = deterministic_trajectory(mu, law="proportional", rates=[0.05, 0.2], steps=12, topk=1,
                                    nodes=32)
    for j, rate in enumerate([0.05, 0.2]):
        one = deterministic_trajectory(mu, law="proportional", rate=rate, steps=12, topk=1,
                                       nodes=32)
        np.testing.assert_allclose(both["maxvio_SP"][:, j], one["maxvio_SP"][:, 0], rtol=1e-12)
    with pytest.raises(ConfigError, match="exactly one of rate"):
        deterministic_trajectory(mu, law="proportional", steps=3, topk=1)


def test_import_routesim_exposes_theory():
    import subprocess
    import sys
    code = "import routesim; print(routesim.theory.critical_rate.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "critical_rate"
