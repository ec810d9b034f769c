"""The optimal-assignment oracle against brute-force enumeration; its measures; cycles."""

import itertools

import numpy as np
import pytest

from routesim.exceptions import ConfigError
from routesim.optimisation import (
    agreement,
    capacity_overflow,
    detect_cycle,
    dual_correlation,
    dual_function,
    kkt_residuals,
    lagrangian_gap,
    optimal_assignment,
    topk_assignment,
)


def brute_force(scores, topk, capacity):
    """Best 0/1 assignment by enumerating every token's K-subset."""
    t, e = scores.shape
    subsets = list(itertools.combinations(range(e), topk))
    best, best_x = -np.inf, None
    for choice in itertools.product(subsets, repeat=t):
        x = np.zeros((t, e))
        for row, sub in enumerate(choice):
            x[row, list(sub)] = 1
        if np.all(x.sum(0) <= capacity + 1e-9):
            value = float((scores * x).sum())
            if value > best:
                best, best_x = value, x
    return best, best_x


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("t,e,k", [(4, 3, 1), (5, 4, 2), (3, 4, 3)])
def test_oracle_matches_brute_force_and_its_dual(seed, t, e, k):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(t, e))
    cap = rng.integers(1, t + 1, size=e).astype(float)
    while np.minimum(cap, t).sum() < t * k:
        cap[rng.integers(e)] += 1
    best, _ = brute_force(s, k, cap)
    sol = optimal_assignment(s, k, cap)
    assert sol.objective == pytest.approx(best, abs=1e-9)
    x = sol.assignment_TE
    assert np.allclose(x, np.round(x)) and np.allclose(x.sum(1), k)   # an integral vertex
    assert np.all(x.sum(0) <= cap + 1e-9)
    assert float((s * x).sum()) == pytest.approx(best, abs=1e-9)
    # strong duality at the reported prices, weak duality at any others
    assert float(dual_function(s, sol.price_E, k, cap)) == pytest.approx(best, abs=1e-9)
    others = np.abs(rng.normal(size=(50, e)))
    assert np.all(dual_function(s, others, k, cap) >= best - 1e-9)
    # unconstrained top-K by enumeration
    assert sol.unconstrained == pytest.approx(brute_force(s, k, np.full(e, t))[0])


def test_default_capacity_is_exact_balance_and_prices_route_it():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(400, 8)) + np.linspace(1, -1, 8)
    sol = optimal_assignment(s, 2)
    assert np.allclose(sol.load_E, 100)
    routed = topk_assignment(s, sol.dual_bias_E, 2)  # continuous scores: no ties at the prices
    assert agreement(routed, sol.assignment_TE) > 0.97
    assert capacity_overflow(routed.sum(0), sol.capacity_E) < 0.05


def test_non_uniform_targets_shape_the_optimum():
    s = np.random.default_rng(2).normal(size=(200, 4))
    sol = optimal_assignment(s, 1, target_shares=[0.4, 0.3, 0.2, 0.1])
    assert sol.load_E.tolist() == [80, 60, 40, 20]


@pytest.mark.parametrize("kwargs,field", [
    ({"scores_TE": [[0.0, np.nan], [1.0, 2.0]], "topk": 1}, "scores[0, 1] = nan"),
    ({"scores_TE": [[0.0, 1.0], [1.0, 2.0]], "topk": 3}, "topk = 3"),
    ({"scores_TE": [[0.0, 1.0], [1.0, 2.0]], "topk": 1, "capacity_E": [1, -1]}, "capacity = "),
    ({"scores_TE": [[0.0, 1.0], [1.0, 2.0]], "topk": 2, "capacity_E": [2, 1]},
     "infeasible for topk = 2"),
    ({"scores_TE": [[0.0, 1.0], [1.0, 2.0]], "topk": 1, "target_shares": [0.7, 0.7]},
     "target_shares = [0.7, 0.7]: must sum to 1"),
])
def test_bad_oracle_input_is_refused_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        optimal_assignment(**kwargs)


def test_measures_against_hand_computed_values():
    s = np.array([[1.0, 0.0], [1.0, 0.5]])
    sol = optimal_assignment(s, 1)
    both = topk_assignment(s, np.zeros(2), 1)            # both tokens on expert 0
    assert capacity_overflow(both.sum(0), sol.capacity_E) == 1.0
    assert agreement(both, sol.assignment_TE) == 0.5
    assert lagrangian_gap(s, np.zeros(2), 1, sol.capacity_E, sol.objective) == pytest.approx(0.5)
    feas, slack = kkt_residuals(both.sum(0), np.array([0.0, 0.2]), sol.capacity_E)
    assert feas == 1.0 and slack == pytest.approx(0.2 * 1 / 2)
    assert dual_correlation(sol.dual_bias_E * 3 + 7, sol.price_E) == pytest.approx(1.0)
    assert dual_correlation(-sol.dual_bias_E, sol.price_E) == pytest.approx(-1.0)


def test_cycle_of_a_sign_map_on_a_frozen_matrix():
    """An independent sign map on a frozen matrix ends in a cycle the detector finds."""
    rng = np.random.default_rng(3)
    s = rng.normal(size=(64, 4)) + [0.6, 0.2, -0.2, -0.6]
    b, traj = np.zeros(4), []
    for _ in range(400):
        traj.append(b.copy())
        load = topk_assignment(s, b, 1).sum(0)
        b = b + 0.05 * np.sign(load.mean() - load)
    cyc = detect_cycle(np.array(traj))
    assert cyc.found and cyc.period >= 1
    tail = np.array(traj)[cyc.entered:]
    tail = tail - tail.mean(1, keepdims=True)
    assert np.allclose(tail[cyc.period:], tail[:-cyc.period], atol=1e-9)
    if cyc.period > 1:  # not a shorter one
        assert not np.allclose(tail[1:], tail[:-1])
    centred = np.array(traj) - np.array(traj).mean(1, keepdims=True)
    before = cyc.entered - 1          # the step before entry does not repeat yet
    assert cyc.entered == 0 or not np.allclose(centred[before + cyc.period], centred[before],
                                               atol=cyc.tolerance)


def test_cycle_refuses_bad_input():
    with pytest.raises(ConfigError, match="trajectory"):
        detect_cycle(np.array([[np.nan, 0.0]] * 5))
    with pytest.raises(ConfigError, match="tol = -1"):
        detect_cycle(np.zeros((5, 2)), tol=-1)
