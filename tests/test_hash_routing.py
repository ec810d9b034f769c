"""Hash routing: token ids from a Zipf law through a fixed table, and its balance limit.

References: the multinomial law of the token ids (chi-square), each expert's
expected share ``sum_{v -> e} f_v`` (binomial standard errors), the
long-window MaxVio of the table and the bound ``N f_max / K - 1`` that no
table beats (an exhaustive check over every table of a small vocabulary).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from routesim import ConfigError, config_from_dict, rng, simulate
from routesim.routing.hash import hash_table, token_frequencies, token_ids
from routesim.theory import hash_balance_limit, hash_table_maxvio


def test_token_ids_follow_the_zipf_law():
    f = token_frequencies(50, 1.1)
    ids = token_ids(np, rng.point_keys(3, [0], 1), 2, 0, 20000, np.cumsum(f))
    counts = np.bincount(ids.ravel(), minlength=50)
    assert stats.chisquare(counts, 20000 * f).pvalue > 1e-3


def test_no_table_beats_the_bound():
    f = token_frequencies(5, 1.5)
    n, k = 4, 2
    pairs = list(itertools.combinations(range(n), k))
    best = min(hash_table_maxvio(f, t, n) for t in itertools.product(pairs, repeat=5))
    bound = hash_balance_limit(f, n, k)
    assert bound > 0 and best >= bound - 1e-12
    assert best == pytest.approx(bound)  # here the top id can be isolated on its own pair


def _cfg(n=16, k=2, vocab=200, a=1.2, steps=60, layers=1):
    return config_from_dict({
        "run": {"steps": steps}, "router": {"num_experts": n, "topk": k, "router_type": "hash",
                                            "hash_vocab_size": vocab, "hash_zipf_exponent": a},
        "controller": {"type": "none"}, "model": {"num_layers": layers},
        "batch": {"num_sequences": 8, "seq_length": 128}})


def test_engine_loads_match_the_table_shares():
    cfg = _cfg()
    ds = simulate(cfg, progress=False)
    f = token_frequencies(200, 1.2)
    table = hash_table(200, 16, 2, seed=0)
    share = np.bincount(table.ravel(), weights=np.repeat(f, 2), minlength=16)
    tokens = 60 * 8 * 128
    total = ds["expert_load"].sum("step").values.ravel()
    var = tokens * share * (1 - share)   # each token maps to expert e or not: binomial
    assert np.all(np.abs(total - tokens * share) < 5 * np.sqrt(var) + 1)
    limit = hash_table_maxvio(f, table, 16)
    assert ds["maxvio_global_run"].item() == pytest.approx(limit, abs=0.05)
    assert ds["maxvio_global_run"].item() >= hash_balance_limit(f, 16, 2) - 0.05


def test_each_layer_has_its_own_table():
    ds = simulate(_cfg(layers=2, steps=5), progress=False)
    top = ds["expert_load"].sum("step").values[0, :, 0].argmax(-1)
    t0, t1 = hash_table(200, 16, 2, 0, 0), hash_table(200, 16, 2, 0, 1)
    assert top[0] in t0[0] and top[1] in t1[0] and not np.array_equal(t0, t1)


def test_hash_with_a_controller_is_refused():
    with pytest.raises(ConfigError, match=r"controller\.type"):
        config_from_dict({"router": {"router_type": "hash", "num_experts": 8, "topk": 2},
                          "controller": {"type": "ema"}})


def test_hash_first_layers_are_hash_routed_and_the_others_token_choice():
    """Rows of model.hash_layers equal a hash run's layers; the rest a token-choice run's."""
    base = {"run": {"steps": 6, "kernel": "generic"},
            "router": {"num_experts": 16, "topk": 2, "hash_vocab_size": 300},
            "traffic": {"skew": "zipf", "zipf_exponent": 0.5},
            "batch": {"num_sequences": 4, "seq_length": 32}}

    def run(model, router=None, controller=None):
        d = {**base, "model": model, "router": {**base["router"], **(router or {})},
             "controller": controller or {"type": "sign", "bias_update_rate": 0.01}}
        return simulate(config_from_dict(d), progress=False)["expert_load"].values

    mixed = run({"num_layers": 4, "hash_layers": 2})
    hashed = run({"num_layers": 4}, {"router_type": "hash"}, {"type": "none"})
    plain = config_from_dict({**base, "model": {"num_layers": 4},
                              "router": {"num_experts": 16, "topk": 2},
                              "controller": {"type": "sign", "bias_update_rate": 0.01}})
    plain = simulate(plain, progress=False)["expert_load"].values
    np.testing.assert_array_equal(mixed[:, :, :2], hashed[:, :, :2])
    np.testing.assert_array_equal(mixed[:, :, 2:], plain[:, :, 2:])
    with pytest.raises(ConfigError, match=r"model\.hash_layers"):
        config_from_dict({**base, "model": {"num_layers": 2, "hash_layers": 3}})
    with pytest.raises(ConfigError, match=r"model\.hash_layers"):
        config_from_dict({**base, "model": {"num_layers": 2, "hash_layers": 1},
                          "router": {**base["router"], "capacity_factor": 1.0}})
