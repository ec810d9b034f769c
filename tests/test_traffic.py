"""Traffic: popularity profiles, correlation, drift, features, trace."""

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, traffic
from routesim.rng import point_keys


def _setup(**traffic_kw):
    cfg = config_from_dict({"batch": {"num_sequences": 8, "seq_length": 64},
                            "router": {"num_experts": 16, "topk": 2},
                            "traffic": traffic_kw})
    params = traffic.make_traffic_params(cfg.points())
    keys = point_keys(0, [0], 1)
    return cfg, params, keys, traffic.init_traffic(np, params, keys, np.float64)


def test_popularity_profiles():
    np.testing.assert_allclose(traffic.popularity("uniform", 4), 0)
    lin = traffic.popularity("linear", 5, linear_spread=2.0)
    np.testing.assert_allclose(lin, [2, 1, 0, -1, -2])
    z = traffic.popularity("zipf", 6, zipf_exponent=1.2)
    p = np.exp(z) / np.exp(z).sum()
    ref = np.arange(1, 7) ** -1.2
    np.testing.assert_allclose(p, ref / ref.sum())


def test_logits_mean_and_scale():
    _, params, keys, state = _setup(skew="linear", linear_spread=1.0, noise_scale=0.5)
    z = np.concatenate([traffic.logits(np, params, state, keys, t, 0, 512) for t in range(4)],
                       axis=2)[0, 0]
    np.testing.assert_allclose(z.mean(axis=0), params.mu0_PE[0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), 0.5, rtol=0.08)


def test_within_sequence_correlation_matches_rho():
    _, params, keys, state = _setup(seq_correlation=0.4)
    z = np.concatenate([traffic.logits(np, params, state, keys, t, 0, 512)[0, 0]
                        for t in range(40)])  # 320 sequences of 64
    seqs = z.reshape(-1, 64, 16)
    a, b = seqs[:, 0, :].ravel(), seqs[:, 1, :].ravel()
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(0.4, abs=0.06)
    across = np.corrcoef(seqs[:-1, 0, :].ravel(), seqs[1:, 0, :].ravel())[0, 1]
    assert abs(across) < 0.06


def test_regime_switch_permutes_popularity():
    _, params, keys, state = _setup(skew="linear", drift="regime", regime_steps=(5,))
    before = traffic.advance_traffic(np, params, state, keys, 4).mu_PRE[0, 0]
    after = traffic.advance_traffic(np, params, state, keys, 5).mu_PRE[0, 0]
    np.testing.assert_allclose(np.sort(before), np.sort(after))
    assert not np.allclose(before, after)


def test_random_walk_variance_grows_linearly():
    cfg = config_from_dict({"run": {"replicas": 400}, "router": {"num_experts": 8, "topk": 2},
                            "traffic": {"drift": "random_walk", "drift_std": 0.1}})
    params = traffic.make_traffic_params(cfg.points())
    keys = point_keys(1, [0], 400)
    state = traffic.init_traffic(np, params, keys, np.float64)
    for t in range(26):
        state = traffic.advance_traffic(np, params, state, keys, t)
    assert state.mu_PRE.var() == pytest.approx(25 * 0.01, rel=0.15)


def test_features_logits_are_x_times_w():
    _, params, keys, state = _setup(kind="features", feature_dim=5, num_topics=3)
    x, topic = traffic.token_features(np, params, state, keys, 0, 0, 100)
    z = traffic.logits(np, params, state, keys, 0, 0, 100)
    np.testing.assert_allclose(z, x @ np.swapaxes(state.weight_PRED, -1, -2), rtol=1e-10)
    assert set(np.unique(topic)) <= {0, 1, 2}


def test_trace_size_mismatch_is_refused():
    cfg = config_from_dict({"router": {"num_experts": 16, "topk": 2},
                            "traffic": {"kind": "trace"}})
    with pytest.raises(ConfigError, match="traffic.trace"):
        traffic.make_traffic_params(cfg.points())


def test_trace_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="traffic.trace"):
        traffic.load_trace(str(tmp_path / "none.npz"))
