"""Which built-in law is which dual method; rate schedules; non-uniform targets."""

import numpy as np
import pytest

from routesim import config_from_dict, simulate
from routesim.controllers import get_law
from routesim.controllers.laws import (dual_ascent_update, proportional_update,
                                       sign_centred_update, sign_update)
from routesim.controllers.schedules import rate_factor
from routesim.exceptions import ConfigError
from routesim.optimisation import dual_function, optimal_assignment, topk_assignment
from routesim.routing.select import quantile_dual_estimate

T, E, K = 256, 8, 2


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, E)) + np.linspace(0.8, -0.8, E)


def _dual_gradient(s, bias, cap, h=1e-7):
    """dg/dp at p = -b by central differences of the dual function (independent of the laws)."""
    p = -bias
    eye = np.eye(E) * h
    return (dual_function(s, p + eye, K, cap) - dual_function(s, p - eye, K, cap)) / (2 * h)


@pytest.mark.parametrize("seed", range(3))
def test_sign_law_is_sign_dual_ascent_and_proportional_is_dual_ascent(seed):
    s = _scores(seed)
    bias = np.random.default_rng(seed + 10).normal(scale=0.3, size=E)
    cap = np.full(E, T * K / E)
    grad = _dual_gradient(s, bias, cap)                  # = C - c(p): capacity minus load
    load = topk_assignment(s, bias, K).sum(0).astype(float)
    assert np.allclose(grad, cap - load, atol=1e-5)
    u = 1e-3
    assert np.allclose(sign_update(np, bias, load, u), bias + u * np.sign(np.round(grad, 6)))
    step = sign_update(np, bias, load, u) - bias
    assert np.allclose(sign_centred_update(np, bias, load, u), bias + step - step.mean())
    c_bar = T * K / E
    assert np.allclose(proportional_update(np, bias, load, 0.1), bias + (0.1 / c_bar) * grad)
    assert np.allclose(dual_ascent_update(np, bias, load, 0.1 / c_bar), bias + (0.1 / c_bar) * grad)


def test_quantile_estimate_is_the_exact_dual_minimiser_over_the_expert_prices():
    """Given the token prices alpha, the estimate minimises the dual over beta exactly."""
    z = _scores(1)
    b = np.random.default_rng(2).normal(scale=0.2, size=E)
    est = quantile_dual_estimate(np, z[None, None], b[None, None], K)[0, 0]
    alpha = -np.partition(-(z + b), K, axis=1)[:, K]           # (K+1)-th largest of z - beta
    cap = T * K / E

    def dual(beta):  # D(alpha, beta) = sum max(0, z - alpha - beta) + K sum alpha + C sum beta
        return (np.maximum(0, z - alpha[:, None] - beta).sum(0) + cap * beta)

    beta = -est
    for d in (1e-3, -1e-3, 0.05, -0.05):
        assert np.all(dual(beta) <= dual(beta + d) + 1e-9)
    # iterated, it closes the Lagrangian gap (block-coordinate descent on the dual)
    sol = optimal_assignment(z, K)
    gaps, bias = [], np.zeros(E)
    for _ in range(5):
        bias = quantile_dual_estimate(np, z[None, None], bias[None, None], K)[0, 0]
        gaps.append(float(dual_function(z, bias.max() - bias, K, sol.capacity_E)) - sol.objective)
    assert all(a >= b - 1e-9 for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.01 * gaps[0] + 0.01 * sol.price_of_balance


def _cfg(**controller):
    return config_from_dict({
        "run": {"steps": 40, "kernel": "generic", "bias_dtype": "float64"},
        "batch": {"num_sequences": 2, "seq_length": 128},
        "router": {"num_experts": E, "topk": K, "score_function": "sigmoid"},
        "traffic": {"kind": "frozen", "skew": "linear", "linear_spread": 0.5},
        "controller": controller})


def test_proportional_and_dual_ascent_runs_agree_with_the_step_conversion():
    u = 0.05
    c_bar = 256 * K / E
    a = simulate(_cfg(type="proportional", bias_update_rate=u), progress=False)
    b = simulate(_cfg(type="dual_ascent", bias_update_rate=u / c_bar), progress=False)
    assert np.allclose(a["bias"].values, b["bias"].values, rtol=1e-9, atol=1e-12)
    assert np.array_equal(a["expert_load"].values, b["expert_load"].values)


@pytest.mark.parametrize("schedule", [
    {"rate_schedule": "inv_sqrt"}, {"rate_schedule": "inv", "rate_warmup": 5},
    {"rate_schedule": "cosine", "rate_horizon": 20, "rate_final": 0.1},
    {"rate_freeze": 25}])
def test_schedules_scale_each_bias_step(schedule):
    u = 0.01
    ds = simulate(_cfg(type="sign", bias_update_rate=u, **schedule), progress=False)
    t = np.arange(40)
    expected = u * {
        "inv_sqrt": lambda: 1 / np.sqrt(t + 1), "inv": lambda: np.minimum(1, (t + 1) / 5) / (t + 1),
        "cosine": lambda: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, 20) / 20)),
        "constant": lambda: np.where(t < 25, 1.0, 0.0)}[schedule.get("rate_schedule", "constant")]()
    assert np.allclose(ds["bias_update_rate"].values[:, 0], expected)
    bias = ds["bias"].values[:, 0, 0]
    steps = np.abs(np.diff(bias, axis=0)).max(-1)          # the sign law moves by exactly u(t)
    load = ds["expert_load"].values[:-1, 0, 0]
    unbalanced = (load != load.mean(-1, keepdims=True)).any(-1)   # else sign(0) = 0 everywhere
    assert unbalanced.sum() > 10
    assert np.allclose(steps[unbalanced], expected[:-1][unbalanced], rtol=1e-9, atol=1e-15)
    assert np.all(steps[~unbalanced] == 0)


def test_rate_factor_vectorised_over_points_matches_each_point():
    kinds = ["constant", "cosine", "inv_sqrt", "inv"]
    t = np.arange(30)
    together = rate_factor(kinds, t, [0, 3, 0, 2], [1, 10, 1, 1], [0, 0.2, 0, 0],
                           [np.inf, 20, np.inf, 5])
    for j, k in enumerate(kinds):
        alone = rate_factor([k], t, [[0, 3, 0, 2][j]], [[1, 10, 1, 1][j]], [[0, 0.2, 0, 0][j]],
                            [[np.inf, 20, np.inf, 5][j]])
        assert np.array_equal(together[:, j], alone[:, 0])


Q = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]


@pytest.mark.parametrize("law,u", [("sign", 0.003), ("proportional", 0.05),
                                   ("dual_ascent", 0.001), ("rms", 0.003), ("quantile", None)])
def test_non_uniform_targets_are_reached_and_measured(law, u):
    ctrl = {"type": law, "target_shares": Q}
    if u is not None:
        ctrl["bias_update_rate"] = u
    cfg = _cfg(**ctrl).replace(**{"run.steps": 150})
    ds = simulate(cfg, progress=False)
    load = ds["expert_load"].values[:, 0, 0].astype(float)
    share = load / load.sum(-1, keepdims=True)
    assert np.abs(share[-20:].mean(0) - Q).max() < 0.01
    assert np.allclose(ds["maxvio_target"].values[:, 0, 0], (share / Q).max(-1) - 1)
    assert np.allclose(ds["capacity_overflow"].values[:, 0, 0],
                       (load / (256 * K * np.array(Q))).max(-1) - 1)


def test_uniform_targets_given_explicitly_change_nothing():
    a = simulate(_cfg(type="sign", bias_update_rate=0.01), progress=False)
    b = simulate(_cfg(type="sign", bias_update_rate=0.01, target_shares=[1 / E] * E),
                 progress=False)
    assert np.array_equal(a["bias"].values, b["bias"].values)


@pytest.mark.parametrize("controller,message", [
    ({"target_shares": [0.5, 0.5, 0.1, -0.1, 0, 0, 0, 0]}, "controller.target_shares = .*>= 0"),
    ({"target_shares": [0.2] * 8}, "controller.target_shares = .*must sum to 1"),
    ({"target_shares": [0.25] * 4}, "controller.target_shares = .*one share per expert"),
    ({"rate_schedule": "cosine", "rate_final": -0.5}, "controller.rate_final = -0.5"),
    ({"rate_warmup": -1}, "controller.rate_warmup = -1"),
    ({"rate_horizon": 10}, "controller.rate_horizon = 10: has no effect"),
    ({"type": "quantile", "rate_schedule": "inv"}, "controller.rate_schedule = 'inv': has no"),
])
def test_bad_targets_and_schedules_are_refused_naming_the_field(controller, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**controller)


def test_a_user_law_without_the_target_input_is_refused_with_targets():
    from routesim.controllers import registered_temporarily

    def hold(xp, bias, load, memory, params):
        return bias, memory

    with registered_temporarily("hold_q", hold):
        with pytest.raises(ConfigError, match="controller.type = 'hold_q' does not read"):
            _cfg(type="hold_q", target_shares=Q)
    assert "target_share" in get_law("sign").inputs
