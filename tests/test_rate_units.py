"""Rates in units of the critical rate, and the loop gain of every law.

References: the registered laws themselves (routesim.controllers.update_bias)
driven by a constant error and closed around a linear plant, and the exact
engine re-run from the stored config; never the gain formulas alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, run_sweep, simulate
from routesim.analysis import unstack_points
from routesim.config import Config
from routesim.config._rates import CRITICAL_RATE_LAWS
from routesim.controllers import update_bias
from routesim.controllers.dispatch import make_controller_params
from routesim.engines.exact import make_simulator
from routesim.theory import (critical_rates, effective_gain, equilibrium, jacobian,
                             resolve_rates)
from routesim.theory.stability import LINEAR_LAWS
from routesim.traffic import popularity

N, K = 8, 2
SCENARIO = {"router": {"num_experts": N, "topk": K}, "traffic": {"skew": "zipf"}}
LAWS = [("proportional", {}), ("ema", {"momentum": 0.9}), ("ema", {"momentum": 0.5}),
        ("momentum_tanh", {"momentum": 0.5, "tanh_scale": 0.5})]


def _law_config(law: str, extra: dict, rate) -> Config:
    return config_from_dict({**SCENARIO, "controller": {"type": law, "bias_update_rate": rate,
                                                        **extra}})


def _window(params, bias, memory, err_E, t):
    """One window of the real law on loads with relative error ``e = (mean - c) / mean``."""
    load = (1e6 * (1.0 - err_E))[None, None, :]
    return update_bias(np, params, bias, memory, load, None, t)


def test_the_law_sets_agree():
    assert CRITICAL_RATE_LAWS == LINEAR_LAWS


@pytest.mark.parametrize("law,extra", LAWS, ids=[f"{a}{b}" for a, b in LAWS])
def test_gain_table_matches_each_laws_response(law, extra):
    # first window: bias step g(lambda = 1) e; a sustained error: g / (1 - beta) e
    # (docs/configuration.md, "Loop gains of the laws")
    rate = 0.3
    cfg = _law_config(law, extra, rate).points()[0]
    params = make_controller_params([cfg])
    err = 1e-5 * np.array([3.0, -1.0, 2.0, -4.0, 1.0, 0.0, -2.0, 1.0])
    bias, memory = np.zeros((1, 1, N)), np.zeros((1, 1, N))
    steps = []
    for t in range(400):
        new, memory = _window(params, bias, memory, err, t)
        steps.append(new - bias)
        bias = new
    beta = cfg.controller.momentum if law != "proportional" else 0.0
    g = float(effective_gain(law, rate, 1.0, num_experts=N, momentum=beta,
                             tanh_scale=cfg.controller.tanh_scale))
    tiny = 1e-9 * g * np.max(np.abs(err))  # centring leaves rounding noise on the zero entry
    np.testing.assert_allclose(steps[0][0, 0], g * err, rtol=1e-6, atol=tiny)
    np.testing.assert_allclose(steps[-1][0, 0], g / (1 - beta) * err, rtol=1e-6, atol=tiny)


@pytest.mark.parametrize("law,extra", LAWS, ids=[f"{a}{b}" for a, b in LAWS])
def test_critical_rate_bounds_the_closed_loop(law, extra):
    # the real law closed around the linearised plant e = -A (b - b*) of the
    # scenario: a small offset along the fastest mode dies out at 0.95 u_c and
    # grows at 1.05 u_c
    mu = popularity("zipf", N)
    bstar = equilibrium(mu, topk=K)
    a = (N / K) * jacobian(mu, bstar, topk=K)
    vec = np.linalg.eigh(a)[1][:, -1]
    uc = critical_rates(_law_config(law, extra, "1 u_c"))[0]
    sizes = {}
    for mult in (0.95, 1.05):
        cfg = _law_config(law, extra, float(mult * uc)).points()[0]
        params = make_controller_params([cfg])
        bias = (bstar + 1e-6 * vec)[None, None, :]
        memory = np.zeros((1, 1, N))
        for t in range(600):
            err = -a @ (bias[0, 0] - bstar)
            bias, memory = _window(params, bias, memory, err, t)
            size = float(np.max(np.abs(bias[0, 0] - bias[0, 0].mean() - bstar)))
            if size > 1e-3:  # grown a thousandfold: unstable
                break
        sizes[mult] = size
    assert sizes[0.95] < 1e-7 and sizes[1.05] > 1e-3, sizes


def _tiny(sweep: dict, **controller) -> Config:
    return config_from_dict({
        **SCENARIO, "run": {"steps": 6, "record_displacement": False},
        "batch": {"num_sequences": 2, "seq_length": 64},
        "controller": {"type": "proportional", **controller}, "sweep": sweep})


def test_resolved_rates_are_stored_and_rerun_identically(tmp_path):
    cfg = _tiny({"controller.bias_update_rate": ["0.5 u_c", "2 u_c"]})
    uc = critical_rates(cfg)
    ds = simulate(cfg, progress=False)
    stored = json.loads(ds.attrs["config"])
    values = stored["sweep"]["resolved"]["controller.bias_update_rate"]
    np.testing.assert_allclose(values, [0.5 * uc[0], 2 * uc[1]], rtol=1e-11)
    assert stored["sweep"]["parameters"]["controller.bias_update_rate"] == ["0.5 u_c", "2 u_c"]
    assert ds["label"].values.tolist() == ["bias_update_rate=0.5 u_c", "bias_update_rate=2 u_c"]
    np.testing.assert_array_equal(ds["controller.bias_update_rate.resolved"].values, values)
    # the stored config runs the stored numbers: same loads as a run of plain numbers
    again = simulate(config_from_dict(stored), progress=False)
    np.testing.assert_array_equal(again["expert_load"].values, ds["expert_load"].values)
    plain = _tiny({"controller.bias_update_rate": values})
    np.testing.assert_array_equal(simulate(plain, progress=False)["expert_load"].values,
                                  ds["expert_load"].values)
    # one point of the sweep alone gives the same numbers (chunks resolve alike)
    one = simulate(cfg, point_indices=[1], progress=False)
    np.testing.assert_array_equal(one["expert_load"].values, ds["expert_load"].values[:, 1:])
    swept = run_sweep(cfg, tmp_path / "sweep", points_per_chunk=1, progress=False)
    np.testing.assert_array_equal(swept["expert_load"].values, ds["expert_load"].values)
    assert swept.attrs["config"] == ds.attrs["config"]


def test_grid_over_scenarios_keeps_its_grid():
    # the critical rate differs along the skew axis: one resolved number per point
    cfg = _tiny({"controller.bias_update_rate": ["0.5 u_c", "1 u_c"],
                 "traffic.zipf_exponent": [0.5, 1.5]})
    done = resolve_rates(cfg)
    rates = np.array(done.sweep.resolved["controller.bias_update_rate"]).reshape(2, 2)
    np.testing.assert_allclose(rates[1] / rates[0], 2.0, rtol=1e-10)
    assert rates[0, 0] != rates[0, 1]
    grid = unstack_points(simulate(cfg, progress=False))
    assert dict(grid["maxvio_batch"].sizes)["traffic.zipf_exponent"] == 2
    assert grid["controller.bias_update_rate.resolved"].shape == (2, 2)


def test_replace_drops_the_resolution_and_runs_need_it():
    done = resolve_rates(_tiny({"controller.bias_update_rate": ["0.5 u_c"]}))
    assert done.sweep.resolved
    moved = done.replace(**{"traffic.zipf_exponent": 2.0})
    assert not moved.sweep.resolved
    assert resolve_rates(moved).sweep.resolved != done.sweep.resolved
    with pytest.raises(ConfigError, match="not resolved"):
        make_simulator(moved)


def test_a_resolved_value_stands_only_for_an_expression():
    with pytest.raises(ConfigError, match=r"sweep.resolved.controller.bias_update_rate\[0\]"):
        _tiny({}, bias_update_rate=0.01).replace(
            **{"sweep.resolved": {"controller.bias_update_rate": [0.02]}})


@pytest.mark.parametrize("controller,message", [
    ({"type": "sign", "bias_update_rate": "0.5 u_c"}, "not 'sign'"),
    ({"type": "rms", "bias_update_rate": "1 u_c"}, "not 'rms'"),
    ({"type": "proportional", "bias_update_rate": "-1 u_c"}, "such as '0.5 u_c'"),
    ({"type": "proportional", "bias_update_rate": "0.5"}, "such as '0.5 u_c'"),
])
def test_refused_expressions(controller, message):
    with pytest.raises(ConfigError, match="controller.bias_update_rate") as err:
        config_from_dict({**SCENARIO, "controller": controller})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("section,values,field", [
    ("router", {"num_experts": N, "topk": K, "capacity_factor": 1.25}, "router.capacity_factor"),
    ("router", {"num_experts": N, "topk": K, "score_function": "softmax"},
     "router.score_function"),
    ("traffic", {"drift": "random_walk", "drift_std": 0.01}, "traffic.drift"),
])
def test_refused_where_no_critical_rate_is_predicted(section, values, field):
    data = {**SCENARIO, "controller": {"type": "ema", "bias_update_rate": "0.5 u_c"}}
    data[section] = values
    with pytest.raises(ConfigError, match=f"no critical rate is predicted with {field}"):
        config_from_dict(data)
