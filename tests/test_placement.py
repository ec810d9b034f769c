"""Expert placement: rank loads, Gini, EPLB-style planning, the straggler theory, the engine.

References: plain-Python loops for the Gini double sum, EPLB's replication
rule (a heap) and greedy balanced packing; a brute-force Monte Carlo of
tokens (top-K of normal logits) for the rank-load moments and the straggler
ratio; the exact engine's computation batches for the counting-noise
straggler and for the skewed plateau.
"""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, simulate
from routesim import placement as pl
from routesim.theory import (counting_straggler, expected_straggler, load_map,
                             rank_load_moments, selection_covariance)
from routesim.traffic import popularity


def _gini_double_sum(x):
    x = np.asarray(x, dtype=float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())


def _replicate_heap(load, extra):
    copies = [1] * len(load)
    heap = [(-l, i) for i, l in enumerate(load)]
    heapq.heapify(heap)
    for _ in range(extra):
        _, i = heapq.heappop(heap)
        copies[i] += 1
        heapq.heappush(heap, (-load[i] / copies[i], i))
    return copies


def _pack_loop(load, copies, ep):
    slots = sorted(((load[e] / copies[e], e) for e in range(len(load)) for _ in range(copies[e])),
                   key=lambda s: -s[0])
    per = len(slots) // ep
    rank_load, used = [0.0] * ep, [0] * ep
    for w, _ in slots:
        k = min((r for r in range(ep) if used[r] < per), key=lambda r: (rank_load[r], r))
        rank_load[k] += w
        used[k] += 1
    return sorted(rank_load)


def test_gini_matches_double_sum():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 50, size=(5, 9))
    np.testing.assert_allclose(pl.gini(x), [_gini_double_sum(r) for r in x], rtol=1e-12)


def test_replication_and_packing_match_reference_loops():
    rng = np.random.default_rng(2)
    for _ in range(20):
        load = rng.gamma(0.7, size=12) * 100
        copies = pl.replicate_hottest(load, 4)
        assert copies.tolist() == _replicate_heap(load.tolist(), 4)
        share = pl.greedy_pack(load, copies, 4)
        np.testing.assert_allclose(share.sum(-1), 1.0)
        slots_per_rank = (share * copies[:, None]).sum(0)
        assert np.allclose(slots_per_rank, 4)
        np.testing.assert_allclose(np.sort(pl.rank_loads(load, share)),
                                   _pack_loop(load.tolist(), copies.tolist(), 4))


def test_planning_is_vectorised_over_rows():
    rng = np.random.default_rng(3)
    load = rng.gamma(0.7, size=(3, 2, 8))
    share = pl.plan_placement(load, 4, replicas=4)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(share[i, j], pl.plan_placement(load[i, j], 4, 4))


def _token_mc(mu, topk, share, tokens, trials, seed):
    """Rank loads of ``trials`` batches of ``tokens`` tokens, routed one by one."""
    rng = np.random.default_rng(seed)
    out = np.empty((trials, share.shape[1]))
    for i in range(trials):
        z = mu + rng.standard_normal((tokens, len(mu)))
        chosen = np.argsort(-z, axis=1)[:, :topk]
        load = np.bincount(chosen.ravel(), minlength=len(mu))
        out[i] = load @ share
    return out


def test_rank_moments_and_straggler_match_token_monte_carlo():
    n, k, ep, tokens = 8, 2, 4, 256
    mu = popularity("zipf", n, zipf_exponent=0.8)
    share = pl.placement_matrix(pl.contiguous_map(n, ep), ep)
    p = load_map(mu, topk=k)
    sigma = selection_covariance(mu, topk=k)
    mean, cov = rank_load_moments(p, sigma, share, tokens=tokens)
    ranks = _token_mc(mu, k, share, tokens, 3000, 0)
    se = ranks.std(0) / np.sqrt(len(ranks))
    assert np.all(np.abs(ranks.mean(0) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(ranks.T), cov, rtol=0.12, atol=0.05 * cov.max())
    ratio = ranks.max(1) / (tokens * k / ep)
    theory, theory_se = expected_straggler(p, sigma, share, tokens=tokens, topk=k)
    assert abs(ratio.mean() - theory) < 4 * np.hypot(ratio.std() / np.sqrt(len(ratio)),
                                                     theory_se) + 0.003


def test_counting_straggler_is_the_uniform_case_of_the_general_formula():
    n, k, ep, t = 16, 4, 4, 1000
    p = np.full(n, k / n)
    sigma = selection_covariance(np.zeros(n), topk=k)
    share = pl.placement_matrix(pl.contiguous_map(n, ep), ep)
    general, se = expected_straggler(p, sigma, share, tokens=t, topk=k, samples=200_000)
    assert abs(counting_straggler(n, k, ep, t) - general) < 4 * se


@pytest.mark.parametrize("ep", [4, 8])
def test_engine_straggler_matches_counting_noise(ep):
    """Balanced popularity, no controller: the straggler ratio is counting noise alone."""
    cfg = config_from_dict({
        "run": {"steps": 40, "kernel": "generic"}, "router": {"num_experts": 32, "topk": 4},
        "controller": {"type": "none"},
        "batch": {"num_sequences": 16, "seq_length": 64, "micro_batch_size": 2},
        "placement": {"ep_size": ep}})
    ds = simulate(cfg, progress=False)
    sim = ds["rank_straggler"].values.ravel()
    theory = counting_straggler(32, 4, ep, 2 * ep * 64)
    assert abs(sim.mean() - theory) < 4 * sim.std() / np.sqrt(sim.size) + 0.002
    assert ds.attrs["computation_batch_sequences"] == 2 * ep
    # rank loads are the step's expert loads summed over each rank's block
    load = ds["expert_load"].values.reshape(40, 1, 1, ep, 32 // ep).sum(-1)
    np.testing.assert_array_equal(ds["rank_load"].values, load)


def test_engine_skewed_plateau_and_replication():
    """Zipf popularity, no controller: the plateau of the theory, and EPLB brings it near 1."""
    n, k, ep = 16, 2, 4
    cfg = config_from_dict({
        "run": {"steps": 30, "kernel": "generic"}, "router": {"num_experts": n, "topk": k},
        "traffic": {"skew": "zipf", "zipf_exponent": 1.0}, "controller": {"type": "none"},
        "batch": {"num_sequences": 8, "seq_length": 128, "micro_batch_size": 2},
        "placement": {"ep_size": ep, "optimise": "greedy", "replicate_hottest": 4}})
    ds = simulate(cfg, progress=False)
    mu = popularity("zipf", n, zipf_exponent=1.0)
    p, sigma = load_map(mu, topk=k), selection_covariance(mu, topk=k)
    share = pl.placement_matrix(pl.contiguous_map(n, ep), ep)
    tokens = 2 * ep * 128
    theory, se = expected_straggler(p, sigma, share, tokens=tokens, topk=k)
    sim = ds["rank_straggler"].values.ravel()
    assert abs(sim.mean() - theory) < 4 * np.hypot(sim.std() / np.sqrt(sim.size), se) + 0.01
    planned = pl.plan_placement(tokens * p, ep, 4)
    theory_r, se_r = expected_straggler(p, sigma, planned, tokens=tokens, topk=k)
    sim_r = ds["rank_straggler_planned"].values.ravel()
    assert sim_r.mean() < sim.mean() - 0.3
    assert abs(sim_r.mean() - theory_r) < 4 * np.hypot(sim_r.std() / np.sqrt(sim_r.size),
                                                       se_r) + 0.01
    assert int(ds["planned_copies"].sum()) == n + 4


@pytest.mark.parametrize("placement, field", [
    ({"ep_size": 3}, "placement.ep_size"),
    ({"ep_size": 4, "map": [0, 1, 2, 3]}, "placement.map"),
    ({"ep_size": 4, "map": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4]}, "placement.map"),
    ({"ep_size": 4, "map": [0] * 5 + [1] * 3 + [2] * 4 + [3] * 4}, "placement.map"),
    ({"ep_size": 4, "optimise": "greedy", "replicate_hottest": 2},
     "placement.replicate_hottest"),
    ({"ep_size": 4, "replicate_hottest": 4}, "placement.replicate_hottest"),
    ({"map": [0] * 16}, "placement.map"),
])
def test_bad_placement_is_refused_naming_the_field(placement, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict({"router": {"num_experts": 16, "topk": 2},
                          "batch": {"num_sequences": 8, "micro_batch_size": 2},
                          "placement": placement})


def test_a_given_map_is_used():
    rank = [3, 2, 1, 0] * 4
    cfg = config_from_dict({
        "run": {"steps": 2}, "router": {"num_experts": 16, "topk": 2},
        "batch": {"num_sequences": 8, "seq_length": 16, "micro_batch_size": 2},
        "placement": {"ep_size": 4, "map": rank}})
    ds = simulate(cfg, progress=False)
    load = ds["expert_load"].values
    expect = np.stack([load[..., np.asarray(rank) == r].sum(-1) for r in range(4)], -1)
    np.testing.assert_array_equal(ds["rank_load"].values, expect)
