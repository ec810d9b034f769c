"""Measured leakage: causal routers read 0, Expert Choice against its exact
conditional entropy and its capacities, estimators, constructive channels."""

import math

import numpy as np
import pytest
import scipy.stats

import routesim
from routesim import ConfigError
from routesim.leakage import measure as leakage
from routesim.config import config_from_dict
from routesim.leakage.entropy import (
    draws_needed,
    entropy_chao_shen,
    entropy_ci,
    entropy_miller_madow,
    entropy_of_labels,
    entropy_plugin,
)
from routesim.leakage.measure import measure_leakage
from routesim.leakage.setup import CONTEXT_STREAM, block_logits, leakage_setup
from routesim.leakage.channel import (
    channel_codebook,
    channel_expert_choice,
    decode_expert_choice,
    digit_range,
    encode_expert_choice,
)
from routesim.theory import leakage_exact, leakage_split


def _cfg(seqs=1, length=8, n=4, k=2, router=None, controller=None, traffic=None):
    return config_from_dict({
        "batch": {"num_sequences": seqs, "seq_length": length},
        "router": {"num_experts": n, "topk": k, **(router or {})},
        "controller": controller or {},
        "traffic": traffic or {},
    })


EC = {"router_type": "expert_choice"}


# ---------------------------------------------------------------------------
# Causal routers: exactly 0 bits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("router,controller,seqs,length", [
    ({}, {}, 1, 16),                                                   # lagged sign bias
    ({}, {"type": "proportional", "bias_update_rate": 0.5}, 2, 8),
    ({"capacity_factor": 1.0, "token_drop_policy": "position"}, {}, 2, 8),
    ({}, {"type": "quantile"}, 1, 16),                                  # lagged dual
])
def test_causal_routers_measure_exactly_zero(router, controller, seqs, length):
    cfg = _cfg(seqs, length, n=8, router=router, controller=controller)
    res = measure_leakage(cfg, 4, 500, 3, contexts=3)
    assert res.bits == 0.0 and res.ci == (0.0, 0.0) and res.distinct == 1
    assert channel_codebook(cfg, 4, 300, 3).bits == 0.0


@pytest.mark.parametrize("router,controller,timing", [
    ({}, {"bias_update_rate": 0.05}, "current"),                       # same-batch bias
    ({"capacity_factor": 1.0}, {}, "lagged"),                          # probs dropping
    ({}, {"type": "quantile"}, "current"),                             # current dual
])
def test_non_causal_routers_leak(router, controller, timing):
    cfg = _cfg(2, 8, n=8, router=router, controller=controller)
    res = measure_leakage(cfg, 4, 400, 1, timing=timing, contexts=2)
    assert res.ci[0] > 0.0
    assert channel_codebook(cfg, 4, 400, 1, timing=timing).bits > 0.0


# ---------------------------------------------------------------------------
# Expert Choice
# ---------------------------------------------------------------------------
def _exact_conditional_entropy(cfg, position, seed):
    """Entropy of the early routing given the early scores, in closed form.

    Expert i takes its j-th best early token iff at most c - j late tokens beat
    it; late logits are N(mu_i, 1), so that count is Binomial(n_late, q_j).
    """
    setup = leakage_setup(cfg, position)
    n_early = setup.early_index.size
    n_late, cap = setup.block - n_early, setup.capacity
    ctx = block_logits(setup, seed, 0, CONTEXT_STREAM, np.arange(n_early))
    total = 0.0
    for i in range(ctx.shape[1]):
        x = np.sort(ctx[:, i])[::-1]
        j = np.arange(1, min(n_early, cap) + 1)
        q = scipy.stats.norm.sf(x[j - 1] - setup.mu_E[i])
        at_least = np.concatenate([[1.0], scipy.stats.binom.cdf(cap - j, n_late, q), [0.0]])
        total += scipy.stats.entropy(-np.diff(at_least), base=2)
    return total


@pytest.mark.parametrize("seqs,length,position", [(1, 16, 8), (2, 8, 3)])
def test_expert_choice_matches_its_exact_conditional_entropy(seqs, length, position):
    cfg = _cfg(seqs, length, router=EC, traffic={"skew": "linear"})
    exact = _exact_conditional_entropy(cfg, position, seed=4)
    res = measure_leakage(cfg, position, 6000, 4, method="per_expert")
    assert res.ci[0] <= exact <= res.ci[1]
    assert res.bits == pytest.approx(exact, abs=0.08)


def test_expert_choice_tiny_block_is_positive_and_below_the_capacities():
    cfg = _cfg(1, 8, router=EC)
    res = measure_leakage(cfg, 4, 3000, 0, contexts=2)
    assert res.ci[0] > 0.5
    assert res.per_token <= leakage_exact(8, 4, 2)
    assert res.ci[1] <= leakage_split(4, 4, 4, 2)


def test_joint_equals_per_expert_for_independent_columns_and_bounds_it_otherwise():
    ec = _cfg(1, 8, router=EC)
    joint = measure_leakage(ec, 4, 4000, 2, method="joint")
    per = measure_leakage(ec, 4, 4000, 2, method="per_expert")
    assert joint.bits == pytest.approx(per.bits, abs=0.1)
    # Token choice couples the experts: the per-expert sum is an upper bound.
    cap = _cfg(1, 16, n=8, router={"capacity_factor": 1.0})
    joint = measure_leakage(cap, 8, 1000, 2, method="joint")
    per = measure_leakage(cap, 8, 1000, 2, method="per_expert")
    assert joint.bits_plugin <= per.bits_plugin + 1e-9


def test_same_seed_same_numbers_whatever_the_chunking(monkeypatch):
    cfg = _cfg(1, 8, router=EC)
    first = measure_leakage(cfg, 4, 300, 7, contexts=2)
    monkeypatch.setattr(leakage, "CHUNK_ELEMENTS", 64)  # two draws per chunk
    again = measure_leakage(cfg, 4, 300, 7, contexts=2)
    assert all(np.array_equal(a, b) for a, b in zip(first.counts, again.counts))
    assert (first.bits, first.ci) == (again.bits, again.ci)
    assert measure_leakage(cfg, 4, 300, 8, contexts=2).counts[0].tolist() != \
        first.counts[0].tolist()


def test_package_reexports_measure_leakage():
    assert routesim.measure_leakage is measure_leakage


# ---------------------------------------------------------------------------
# Constructive channels
# ---------------------------------------------------------------------------
def test_digit_channel_recovers_the_split_capacity_on_a_tiny_block():
    cfg = _cfg(1, 8, router=EC)
    res = channel_expert_choice(cfg, 4, 300, 0)
    assert res.errors == 0
    assert res.recovered >= 1.0
    assert res.recovered == pytest.approx(4 * math.log2(5))


def test_encoder_and_decoder_round_trip_on_several_sequences():
    cfg = _cfg(2, 16, n=8, router=EC)
    setup = leakage_setup(cfg, 5)
    lo, hi = digit_range(setup)
    digits = np.random.default_rng(0).integers(lo, hi + 1, size=(50, 8))
    ctx = block_logits(setup, 0, 0, CONTEXT_STREAM, np.arange(setup.early_index.size))
    mask = leakage.route_block(setup, encode_expert_choice(setup, ctx, digits), np.zeros(8))
    np.testing.assert_array_equal(decode_expert_choice(setup, mask), digits)


def test_codebook_channel_never_beats_the_split_capacity():
    cfg = _cfg(1, 8, router=EC)
    res = channel_codebook(cfg, 4, 2000, 0)
    assert 1.0 <= res.bits <= leakage_split(4, 4, 4, 2) + 1e-12


# ---------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------
def test_estimators_on_known_distributions():
    assert float(entropy_plugin(np.array([2, 2, 2, 2]))) == pytest.approx(2.0)
    # Miller-Madow reduces the plug-in bias (Paninski 2003): 20 outcomes, 60 draws.
    p = np.full(20, 0.05)
    gen = np.random.default_rng(0)
    counts = gen.multinomial(60, p, size=2000)
    truth = math.log2(20)
    bias_plugin = float(np.mean(entropy_plugin(counts))) - truth
    bias_mm = float(np.mean(entropy_miller_madow(counts))) - truth
    bias_cs = float(np.mean(entropy_chao_shen(counts))) - truth
    assert bias_plugin < -0.1 and abs(bias_mm) < abs(bias_plugin) / 2
    assert abs(bias_cs) < abs(bias_plugin)


def test_chao_shen_by_hand():
    c = np.array([3, 1, 1])
    pa = (1 - 2 / 5) * c / 5
    expected = np.sum(-pa * np.log2(pa) / (1 - (1 - pa) ** 5))
    assert float(entropy_chao_shen(c)) == pytest.approx(expected)


def test_labels_entropy_matches_counts_entropy():
    labels = np.random.default_rng(1).integers(0, 7, size=(3, 500))
    for est, fn in (("plugin", entropy_plugin), ("miller_madow", entropy_miller_madow)):
        got = entropy_of_labels(labels, est)
        want = [fn(np.bincount(row)) for row in labels]
        np.testing.assert_allclose(got, want)


def test_bootstrap_interval_covers_and_draws_needed_gives_the_width():
    p = 0.8 ** np.arange(12)
    p /= p.sum()
    truth = scipy.stats.entropy(p, base=2)
    hits = 0
    for s in range(40):
        x = np.random.default_rng(s).choice(p.size, 300, p=p)
        lo, hi = entropy_ci([x], "miller_madow", 0.95, 300, s)
        hits += lo <= truth <= hi
    assert hits >= 34
    n = draws_needed([np.round(p * 1e6)], 0.05)
    x = np.random.default_rng(99).choice(p.size, n, p=p)
    lo, hi = entropy_ci([x], "miller_madow", 0.95, 300, 0)
    assert 0.03 < (hi - lo) / 2 < 0.07


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cfg,kw,match", [
    (_cfg(traffic={"kind": "features"}), {}, "traffic.kind = 'features'"),
    (_cfg(traffic={"seq_correlation": 0.2}), {}, "traffic.seq_correlation = 0.2"),
    (_cfg(), {"position": 8}, r"position = 8: must be an integer in \[1, 8\)"),
    (_cfg(), {"timing": "now"}, "timing = 'now'"),
    (_cfg(), {"method": "pairs"}, "method = 'pairs'"),
    (_cfg(), {"draws": 1}, "draws = 1"),
    (_cfg(), {"estimator": "nsb"}, "estimator = 'nsb'"),
    (_cfg(seqs=2, length=6, router={"router_type": "expert_choice",
                                    "expert_choice_block": 4}), {},
     "router.expert_choice_block = 4: must be a multiple or a divisor"),
])
def test_bad_measurements_are_refused(cfg, kw, match):
    args = {"position": 4, "draws": 10, **kw}
    with pytest.raises(ConfigError, match=match):
        measure_leakage(cfg, args.pop("position"), args.pop("draws"), 0, **args)


def test_digit_channel_refuses_softmax_and_token_choice():
    with pytest.raises(ConfigError, match="router.score_function = 'softmax'"):
        channel_expert_choice(_cfg(router={**EC, "score_function": "softmax"}), 4, 10, 0)
    with pytest.raises(ConfigError, match="router.router_type = 'token_choice'"):
        channel_expert_choice(_cfg(), 4, 10, 0)


# ---------------------------------------------------------------------------
# the capacity router of the leakage measurement against a hand loop
# ---------------------------------------------------------------------------
def _hand_capacity_route(z_DTE, bias_E, k, scale, cap, policy, seqs, length):
    """Sigmoid gate, top-K of s + b (lower index wins ties), weights s / sum(s) * scale over
    the chosen, then per expert keep ``cap`` tokens: largest weights (earlier token on a tie)
    or the first in [position, sequence] order."""
    d_cnt, t_cnt, e_cnt = z_DTE.shape
    out = np.zeros(z_DTE.shape, dtype=bool)
    for d in range(d_cnt):
        s = 1.0 / (1.0 + np.exp(-z_DTE[d]))
        routed = {e: [] for e in range(e_cnt)}  # expert -> [(sort key, token)]
        for t in range(t_cnt):
            chosen = sorted(range(e_cnt), key=lambda e: (-(s[t, e] + bias_E[e]), e))[:k]
            total = sum(s[t, e] for e in chosen)
            for e in chosen:
                weight = s[t, e] / total * scale
                seq, pos = divmod(t, length)
                order = (-weight, t) if policy == "probs" else (pos, seq)
                routed[e].append((order, t))
        for e, items in routed.items():
            for _, t in sorted(items)[:cap]:
                out[d, t, e] = True
    return out


@pytest.mark.parametrize("policy", ["probs", "position"])
def test_capacity_router_drops_by_gate_weight_or_position(policy):
    cfg = _cfg(seqs=2, length=8, n=5, k=2,
               router={"capacity_factor": 0.6, "token_drop_policy": policy,
                       "topk_scaling_factor": 2.0})
    setup = leakage_setup(cfg, position=4)
    assert setup.router == "capacity" and setup.capacity < setup.block
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 1.5, size=(6, setup.block, 5))
    bias = np.array([0.05, -0.1, 0.2, 0.0, -0.02])
    got = leakage.route_block(setup, z, bias)
    ref = _hand_capacity_route(z, bias, 2, 2.0, setup.capacity, policy, 2, 8)
    assert ref.sum() < 6 * setup.block * 2  # capacity drops some assignments
    np.testing.assert_array_equal(got, ref)


def test_measurement_routes_through_the_block_router():
    # one router for the engine and the measurement: no top-K or dropping of its own
    import ast
    import inspect

    from routesim.leakage import measure
    names = {n.attr for n in ast.walk(ast.parse(inspect.getsource(measure)))
             if isinstance(n, ast.Attribute)}
    assert "route_block" in names
    assert not names & {"select_topk", "selection_scores", "gate_weights", "drop_to_capacity",
                        "quantile_dual_estimate", "counts_per_sequence"}
