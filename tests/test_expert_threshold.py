"""Expert Threshold routing and the token shuffle before Expert Choice.

References: the binomial law of experts per token when each expert takes the
``R = K / N`` upper tail of independent scores (unrouted share
``(1 - R)^N``); equal expected loads ``T K / N``; measured leakage exactly 0
for the lagged threshold and above 0 for a same-batch one; Expert Choice
applied by hand to the permuted tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, rng, simulate
from routesim.leakage.measure import measure_leakage
from routesim.routing.expert_choice import expert_choice_mask
from routesim.routing.expert_threshold import shuffled_expert_choice_mask, token_permutation


def _cfg(router, steps=60, skew="uniform", **extra):
    base = {"run": {"steps": steps}, "router": {"num_experts": 16, "topk": 2, **router},
            "traffic": {"skew": skew} if skew != "uniform" else {},
            "controller": {"type": "none"},
            "batch": {"num_sequences": 8, "seq_length": 64, "micro_batch_size": 2}}
    if skew == "zipf":
        base["traffic"]["zipf_exponent"] = 1.0
    for k, v in extra.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base)


def test_threshold_routing_takes_the_upper_tail_of_each_expert():
    ds = simulate(_cfg({"router_type": "expert_threshold"}, steps=30), progress=False)
    unrouted = ds["unrouted_share"].values[10:].mean()
    assert unrouted == pytest.approx((1 - 2 / 16) ** 16, abs=0.01)
    hist = ds["experts_per_token"].values[10:].sum(axis=(0, 1, 2))
    from scipy import stats
    expect = stats.binom.pmf(np.arange(17), 16, 2 / 16) * hist.sum()
    top = 7  # pool the tail
    obs = np.append(hist[:top], hist[top:].sum())
    exp = np.append(expect[:top], expect[top:].sum())
    # micro-batch thresholds fluctuate: a loose chi-square (large samples)
    assert np.abs(obs - exp).max() / hist.sum() < 0.01


def test_threshold_routing_balances_a_skewed_popularity():
    et = simulate(_cfg({"router_type": "expert_threshold", "threshold_ema": 0.8}, steps=60,
                       skew="zipf", batch={"num_sequences": 4}), progress=False)
    free = simulate(_cfg({}, steps=10, skew="zipf"), progress=False)
    load = et["expert_load"].values[20:].astype(float)
    share = load.sum(axis=(0, 1, 2)) / load.sum()
    assert np.abs(share * 16 - 1).max() < 0.1                   # each expert about K T / N
    assert et["maxvio_batch"].values[20:].mean() < 0.1 * free["maxvio_batch"].values.mean()


def test_lagged_threshold_is_causal_and_a_same_batch_one_leaks():
    cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2,
                                       "router_type": "expert_threshold"},
                            "controller": {"type": "none"},
                            "batch": {"num_sequences": 1, "seq_length": 32}})
    assert measure_leakage(cfg, 16, 300, 0).bits == 0.0
    current = measure_leakage(cfg, 16, 300, 0, timing="current", method="per_expert")
    assert current.ci[0] > 1.0


def test_shuffled_expert_choice_is_expert_choice_on_the_permuted_tokens():
    gen = np.random.default_rng(0)
    s = gen.random((2, 3, 16, 4))
    perm = token_permutation(np, rng.point_keys(0, [0, 1], 3), 5, 0, 16)
    got = shuffled_expert_choice_mask(np, s, 2, 8, perm)
    for p in range(2):
        for r in range(3):
            order = perm[p, r]
            by_hand = expert_choice_mask(np, s[p, r][order], 2, 8)
            want = np.empty_like(by_hand)
            want[order] = by_hand
            np.testing.assert_array_equal(got[p, r], want)


def test_shuffled_expert_choice_in_the_engine_and_its_leakage():
    cfg = _cfg({"router_type": "expert_choice", "expert_choice_block": 32,
                "expert_choice_shuffle": True}, steps=3)
    ds = simulate(cfg, progress=False)
    assert (ds["expert_load"].values == 8 * 64 * 2 // 16).all()   # every expert: its c per block
    plain = _cfg({"router_type": "expert_choice", "expert_choice_block": 32}, steps=3)
    assert not np.array_equal(ds["experts_per_token"].values,
                              simulate(plain, progress=False)["experts_per_token"].values)
    small = config_from_dict({"router": {"num_experts": 8, "topk": 2,
                                         "router_type": "expert_choice", "expert_choice_block": 8,
                                         "expert_choice_shuffle": True},
                              "controller": {"type": "none"},
                              "batch": {"num_sequences": 2, "seq_length": 16}})
    res = measure_leakage(small, 8, 300, 0, method="per_expert")
    assert res.label == "expert choice, shuffled" and res.block == 32 and res.ci[0] > 1.0


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match=r"router\.expert_choice_shuffle"):
        _cfg({"router_type": "expert_choice", "expert_choice_shuffle": True})
    with pytest.raises(ConfigError, match=r"router\.threshold_ema"):
        _cfg({"router_type": "expert_threshold", "threshold_ema": 1.0})
    with pytest.raises(ConfigError, match=r"router\.threshold_ema"):
        _cfg({"threshold_ema": 0.5})
