"""Expert Choice: the router against a loop, in the engine, and its routing shape."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from routesim import ConfigError, traffic
from routesim import simulate
from routesim._backend import to_numpy
from routesim.config import config_from_dict
from routesim.engines.exact import make_simulator
from routesim.routing.expert_choice import (
    expert_choice_capacity,
    expert_choice_mask,
    experts_per_token,
    experts_per_token_histogram,
    unrouted_share,
)
from routesim.gates import gate
from routesim.rng import point_keys


def _loop_mask(scores, topk, block):
    """Reference: per block and expert, sort tokens by (score desc, index asc)."""
    *lead, t, e = scores.shape
    flat = scores.reshape(-1, t, e)
    out = np.zeros(flat.shape, dtype=bool)
    cap = topk * block // e
    for a in range(flat.shape[0]):
        for b0 in range(0, t, block):
            for j in range(e):
                col = [(-flat[a, b0 + i, j], i) for i in range(block)]
                for _, i in sorted(col)[:cap]:
                    out[a, b0 + i, j] = True
    return out.reshape(scores.shape)


@pytest.mark.parametrize("shape,topk,block", [((2, 3, 16, 4), 2, 8), ((5, 12, 6), 1, 6),
                                              ((1, 1, 32, 8), 3, 16)])
def test_mask_matches_a_loop_with_ties(xp, shape, topk, block):
    # Rounded scores make many ties, which go to the earlier token.
    scores = np.random.default_rng(1).random(shape).round(1)
    got = to_numpy(expert_choice_mask(xp, xp.asarray(scores), topk, block))
    np.testing.assert_array_equal(got, _loop_mask(scores, topk, block))


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 10**6))
def test_every_expert_takes_exactly_its_capacity(blocks, k, seed):
    e, block = 4, 8
    scores = np.random.default_rng(seed).normal(size=(2, blocks * block, e))
    mask = expert_choice_mask(np, scores, k, block)
    per_block = mask.reshape(2, blocks, block, e).sum(axis=2)
    assert np.all(per_block == expert_choice_capacity(block, k, e))
    hist = experts_per_token_histogram(np, mask)
    assert np.all(hist.sum(-1) == blocks * block)
    assert np.all((hist * np.arange(e + 1)).sum(-1) == blocks * block * k)


def test_histogram_and_unrouted_share_against_counts():
    mask = np.random.default_rng(3).random((3, 50, 6)) < 0.2
    per_token = mask.sum(-1)
    np.testing.assert_array_equal(experts_per_token(np, mask), per_token)
    hist = experts_per_token_histogram(np, mask)
    for j in range(7):
        np.testing.assert_array_equal(hist[:, j], (per_token == j).sum(-1))
    np.testing.assert_allclose(unrouted_share(np, mask), (per_token == 0).mean(-1))


def test_bad_blocks_are_refused_naming_the_values():
    with pytest.raises(ConfigError, match=r"K\*T/N = 2\*6/8"):
        expert_choice_capacity(6, 2, 8)
    with pytest.raises(ConfigError, match="must divide the 12 tokens"):
        expert_choice_mask(np, np.zeros((12, 4)), 1, 8)
    with pytest.raises(ConfigError, match=r"router.expert_choice_block = 4: K\*T/N = 1\*4/8"):
        _config(block=4, k=1)


def _config(block=None, seqs=4, length=64, steps=3, n=8, k=2, **run):
    router = {"num_experts": n, "topk": k, "router_type": "expert_choice"}
    if block is not None:
        router["expert_choice_block"] = block
    return config_from_dict({
        "run": {"steps": steps, "replicas": 2, "record_displacement": True, **run},
        "batch": {"num_sequences": seqs, "seq_length": length, "micro_batch_size": 2},
        "traffic": {"skew": "linear", "linear_spread": 1.0},
        "router": router,
    })


@pytest.mark.parametrize("block", [None, 32, 16])
def test_engine_routes_expert_choice_as_the_router_on_the_traffic(block):
    cfg = _config(block)
    init, step = make_simulator(cfg)
    state, out = step(init())
    # Independent recomputation from the traffic of step 0, micro-batch by micro-batch.
    tparams = traffic.make_traffic_params(cfg.points())
    keys = point_keys(cfg.run.seed, [0], cfg.run.replicas)
    tstate = traffic.advance_traffic(np, tparams, traffic.init_traffic(np, tparams, keys),
                                     keys, 0)
    loads, hist = 0, 0
    for mb in range(2):
        z = traffic.logits(np, tparams, tstate, keys, 0, mb * 128, 128)
        mask = _loop_mask(gate(np, "sigmoid", z), 2, block or 128)
        loads = loads + mask.sum(axis=2)
        hist = hist + experts_per_token_histogram(np, mask)
    np.testing.assert_array_equal(out.load_PRE, loads)
    np.testing.assert_array_equal(out.kept_PRE, loads)
    np.testing.assert_array_equal(out.experts_per_token_PRJ, hist)
    np.testing.assert_allclose(out.unrouted_PR, hist[..., 0] / 256)
    assert np.all(np.isnan(out.displaced_PR))


def test_simulate_reports_balanced_loads_and_the_routing_shape():
    ds = simulate(_config(16), progress=False)
    assert np.all(ds["expert_load"].values == 2 * 256 // 8)
    assert np.all(ds["maxvio_batch"].values == 0.0)
    hist = ds["experts_per_token"]
    assert hist.sizes["num_assigned"] == 9
    np.testing.assert_array_equal(hist.sum("num_assigned").values, 256)
    np.testing.assert_allclose(ds["unrouted_share"].values, hist.isel(num_assigned=0) / 256)


def test_large_blocks_give_binomial_experts_per_token():
    # Independent sigmoid columns: as T grows each expert takes a token with
    # probability R = K/N independently, so experts per token ~ Binomial(N, R).
    cfg = config_from_dict({
        "run": {"steps": 2, "replicas": 2, "seed": 5},
        "batch": {"num_sequences": 4, "seq_length": 2048},
        "router": {"num_experts": 8, "topk": 2, "router_type": "expert_choice"}})
    ds = simulate(cfg, progress=False)
    hist = ds["experts_per_token"].sum(("step", "point", "replica")).values
    expected = hist.sum() * scipy.stats.binom.pmf(np.arange(9), 8, 0.25)
    pooled_obs = np.append(hist[:6], hist[6:].sum())
    pooled_exp = np.append(expected[:6], expected[6:].sum())
    assert scipy.stats.chisquare(pooled_obs, pooled_exp).pvalue > 1e-3
    assert float(ds["unrouted_share"].mean()) == pytest.approx(0.75**8, abs=0.005)


def test_token_choice_reports_unrouted_share():
    base = {"run": {"steps": 2}, "batch": {"num_sequences": 2, "seq_length": 32},
            "router": {"num_experts": 8, "topk": 2}}
    ds = simulate(config_from_dict(base), progress=False)
    assert np.all(ds["unrouted_share"].values == 0.0) and "experts_per_token" not in ds
    base["router"]["capacity_factor"] = 1.0
    ds = simulate(config_from_dict(base), progress=False)
    assert np.all(np.isnan(ds["unrouted_share"].values))


def test_numpy_and_array_api_strict_engines_agree():
    pytest.importorskip("array_api_strict")
    a = simulate(_config(16, steps=2), progress=False)
    b = simulate(_config(16, steps=2, backend="array_api_strict"), progress=False)
    for name in ("expert_load", "experts_per_token", "unrouted_share"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
