"""Layers: each layer its own popularity order, noise stream and controller state.

References: the Spearman correlation of a Gaussian copula,
``(6 / pi) arcsin(c / 2)``; the expected load of each layer's popularity
(:func:`routesim.theory.load_map`); independence of the layers' noise
(fluctuations uncorrelated when the popularity is the same); numpy's
percentiles over the layer dimension; the same numbers for a point run
alone or in a sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from routesim import ConfigError, config_from_dict, simulate
from routesim.theory import load_map
from routesim.traffic import layer_popularity, popularity


@pytest.mark.parametrize("c", [0.0, 0.5, 0.9])
def test_layer_order_has_the_copula_rank_correlation(c):
    n, layers = 3000, 6
    mu = np.tile(popularity("linear", n), (layers, 1))
    out = layer_popularity(mu, layers, c, seed=7)
    assert all(sorted(r) == sorted(mu[0]) for r in out.tolist())
    rho = [stats.spearmanr(out[i], out[j])[0] for i in range(layers) for j in range(i)]
    expect = 6 / np.pi * np.arcsin(c / 2)
    assert abs(np.mean(rho) - expect) < 4 * 1.0 / np.sqrt(n * len(rho)) + 0.03 * (c > 0)


def _cfg(**extra):
    base = {"run": {"steps": 60, "kernel": "generic"}, "router": {"num_experts": 8, "topk": 2},
            "traffic": {"skew": "zipf", "zipf_exponent": 1.0}, "controller": {"type": "none"},
            "batch": {"num_sequences": 4, "seq_length": 64},
            "model": {"num_layers": 4, "layer_correlation": 0.3}}
    for k, v in extra.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base)


def test_each_layer_loads_follow_its_own_popularity():
    cfg = _cfg()
    ds = simulate(cfg, progress=False)
    assert ds["expert_load"].dims == ("step", "point", "layer", "replica", "expert")
    mu = layer_popularity(np.tile(popularity("zipf", 8, zipf_exponent=1.0), (4, 1)), 4, 0.3, 0)
    assert len({tuple(r) for r in mu.tolist()}) == 4          # four different orders
    share = ds["expert_load"].mean("step").values[0, :, 0] / (4 * 64)
    expect = load_map(mu, topk=2)
    se = np.sqrt(expect * (1 - expect) / (60 * 4 * 64))
    assert np.all(np.abs(share - expect) < 5 * se + 1e-3)


def test_layers_draw_independent_noise():
    ds = simulate(_cfg(model={"layer_correlation": 1.0}), progress=False)
    load = ds["expert_load"].values[:, 0, :, 0, :].astype(float)  # (S, L, E)
    dev = load - load.mean(axis=0)
    r = np.corrcoef(dev[:, 0].ravel(), dev[:, 1].ravel())[0, 1]
    assert abs(r) < 4 / np.sqrt(dev[:, 0].size)
    assert not np.array_equal(load[:, 0], load[:, 1])


def test_each_layer_has_its_own_controller_state():
    ds = simulate(_cfg(controller={"type": "sign", "bias_update_rate": 1e-2}), progress=False)
    bias = ds["bias"].values[-1, 0, :, 0]        # (L, E)
    # the bias pushes each layer's own hot expert down
    hot = ds["expert_load"].values[0, 0, :, 0].argmax(-1)
    assert np.all(bias[np.arange(4), hot] == bias.min(-1))
    assert len({tuple(b) for b in bias.round(6).tolist()}) == 4


def test_percentiles_across_layers():
    ds = simulate(_cfg(run={"steps": 5}), progress=False)
    mv = ds["maxvio_batch"].values                   # (S, P, L, R)
    got = ds["maxvio_batch_across_layers"].values     # (S, P, R, 3)
    np.testing.assert_allclose(got[..., 0], np.percentile(mv, 50, axis=2))
    np.testing.assert_allclose(got[..., 1], np.percentile(mv, 90, axis=2))
    np.testing.assert_allclose(got[..., 2], mv.max(axis=2))


def test_a_point_alone_has_its_numbers_in_the_sweep():
    cfg = _cfg(run={"steps": 4}, sweep={"traffic.noise_scale": [0.5, 1.0, 2.0]})
    whole = simulate(cfg, progress=False)
    alone = simulate(cfg, point_indices=[2], progress=False)
    np.testing.assert_array_equal(whole["expert_load"].values[:, 2:], alone["expert_load"].values)


def test_bad_layers_are_refused():
    with pytest.raises(ConfigError, match=r"model\.num_layers"):
        _cfg(run={"engine": "meanfield"})
    with pytest.raises(ConfigError, match=r"model\.layer_correlation"):
        config_from_dict({"model": {"layer_correlation": 0.5}})
