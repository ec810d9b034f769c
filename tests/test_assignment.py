"""Frozen traffic and the oracle's Dataset variables."""

import numpy as np
import pytest

from routesim import config_from_dict, simulate
from routesim.assignment import selection_scores_SPRTE
from routesim.exceptions import ConfigError
from routesim.optimisation import optimal_assignment, topk_assignment


def _cfg(drop=(), **over):
    d = {"run": {"steps": 60, "kernel": "generic"}, "batch": {"num_sequences": 2, "seq_length": 64},
         "router": {"num_experts": 8, "topk": 2, "score_function": "sigmoid"},
         "traffic": {"kind": "frozen", "skew": "linear", "linear_spread": 0.5},
         "controller": {"bias_update_rate": 0.02}}
    for key, value in over.items():
        section, name = key.split(".")
        d.setdefault(section, {})[name] = value
    for key in drop:
        section, name = key.split(".")
        del d[section][name]
    return config_from_dict(d)


@pytest.mark.parametrize("source", ["popularity", "separation"])
def test_frozen_traffic_replays_one_matrix_and_is_deterministic(source):
    cfg = (_cfg() if source == "popularity" else
           _cfg(("traffic.skew", "traffic.linear_spread"), **{"traffic.frozen_source": source}))
    s = selection_scores_SPRTE(cfg, None, [0, 3, 17])
    assert np.array_equal(s[0], s[1]) and np.array_equal(s[0], s[2])
    a, b = simulate(cfg, progress=False), simulate(cfg, progress=False)
    assert np.array_equal(a["bias"].values, b["bias"].values)


def test_separation_source_is_scaled_normal_logits():
    drop = ("traffic.skew", "traffic.linear_spread")
    cfg1 = _cfg(drop, **{"traffic.frozen_source": "separation"})
    cfg3 = _cfg(drop, **{"traffic.frozen_source": "separation", "traffic.separation": 3.0})
    z1 = np.log(selection_scores_SPRTE(cfg1, None, [0]).astype(np.float64))
    z1 = z1 - np.log1p(-np.exp(z1))                                     # logit of sigmoid
    z3 = selection_scores_SPRTE(cfg3, None, [0]).astype(np.float64)
    z3 = np.log(z3 / (1 - z3))
    ok = np.abs(z3) < 6                       # where float32 sigmoid still resolves z
    assert ok.mean() > 0.9 and np.allclose(z3[ok], 3 * z1[ok], rtol=1e-3, atol=1e-3)
    assert abs(z1.std() - 1.0) < 0.1


def test_oracle_variables_against_a_direct_recomputation():
    ds = simulate(_cfg(), progress=False)
    cfg = _cfg()
    s = selection_scores_SPRTE(cfg, None, [0])[0, 0, 0]
    bias = ds["bias"].values[:, 0, 0]
    chosen = topk_assignment(s, bias.astype(np.float32), 2)
    # the re-derived routing is the engine's, step by step
    assert np.array_equal(chosen.sum(-2), ds["expert_load"].values[:, 0, 0])
    sol = optimal_assignment(s.astype(np.float64), 2)
    assert np.allclose(ds["oracle_objective"].values[:, 0, 0], sol.objective)
    routed = (s.astype(np.float64) * chosen).sum((-2, -1))
    assert np.allclose(ds["oracle_gap"].values[:, 0, 0], sol.objective - routed)
    cap = 128 * 2 / 8
    assert np.allclose(ds["capacity_overflow"].values[:, 0, 0],
                       ds["expert_load"].values[:, 0, 0].max(-1) / cap - 1)
    assert int(ds["cycle_period"].item()) >= 1
    assert np.allclose(ds["regret"].values[-1], ds["lagrangian_gap"].values.sum(0))


def test_oracle_on_stochastic_traffic_solves_each_step():
    cfg = _cfg(**{"traffic.kind": "popularity", "run.oracle": "on", "run.steps": 3})
    ds = simulate(cfg, progress=False)
    objective = ds["oracle_objective"].values[:, 0, 0]
    assert len(set(np.round(objective, 6))) == 3 and "cycle_period" not in ds
    s = selection_scores_SPRTE(cfg, None, [2])[0, 0, 0].astype(np.float64)
    assert objective[2] == pytest.approx(optimal_assignment(s, 2).objective)


@pytest.mark.parametrize("over,message", [
    ({"traffic.separation": 2.0}, "traffic.separation = 2.0: has no effect"),
    ({"traffic.frozen_source": "separation", "traffic.separation": -1.0},
     "traffic.separation = -1.0"),
    ({"traffic.drift": "random_walk"}, "traffic.drift = 'random_walk': has no effect"),
    ({"run.oracle": "on", "router.num_groups": 4, "router.group_topk": 2},
     "run.oracle = 'on': group-limited"),
    ({"traffic.kind": "popularity", "run.oracle": "off"}, "run.oracle = 'off': has no effect"),
])
def test_bad_frozen_and_oracle_settings_are_refused(over, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**over)


def test_oracle_variables_do_not_depend_on_the_other_points():
    cfg = _cfg(**{"run.steps": 30}).replace(
        **{"sweep.parameters": {"controller.bias_update_rate": [0.005, 0.02, 0.05]}})
    whole = simulate(cfg, progress=False)
    alone = simulate(cfg, point_indices=[2], progress=False)
    for name in ("oracle_gap", "capacity_overflow", "dual_correlation", "regret",
                 "cycle_period", "bias_update_rate"):
        assert np.array_equal(whole[name].sel(point=[2]).values, alone[name].values,
                              equal_nan=True), name
