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


def _trace_cfg(path, num_experts=4, seq_length=3):
    return config_from_dict({"batch": {"num_sequences": 2, "seq_length": seq_length},
                             "router": {"num_experts": num_experts, "topk": 2},
                             "traffic": {"kind": "trace", "trace": str(path)}})


def _write_npz(path, **arrays):
    with open(path, "wb") as fh:  # keep the exact name (savez would add .npz)
        np.savez(fh, **arrays)


GOOD_SXE = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4) / 10


def _bad_trace(tmp_path, case):
    """Write the trace file of one bad case into tmp_path; return its path."""
    path = tmp_path / f"{case}.npz"
    if case == "text":
        path.write_text("logits = [[1, 2], [3, 4]]\n")
    elif case == "npy":
        path = tmp_path / "trace.npy"
        np.save(path, GOOD_SXE)
    elif case == "npy_named_npz":
        with open(path, "wb") as fh:
            np.save(fh, GOOD_SXE)
    elif case == "corrupt_zip":
        _write_npz(path, logits=GOOD_SXE)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "empty_file":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "missing":
        pass
    elif case == "no_logits":
        _write_npz(path, scores=GOOD_SXE)
    elif case == "object":
        _write_npz(path, logits=np.array([[[1.0, "a"]]], dtype=object))
    elif case == "strings":
        _write_npz(path, logits=GOOD_SXE.astype(str))
    elif case == "complex":
        _write_npz(path, logits=GOOD_SXE.astype(np.complex64))
    elif case == "bool":
        _write_npz(path, logits=GOOD_SXE > 1)
    elif case == "two_dims":
        _write_npz(path, logits=GOOD_SXE[0])
    elif case == "zero_steps":
        _write_npz(path, logits=GOOD_SXE[:0])
    elif case == "nan":
        bad = GOOD_SXE.copy()
        bad[1, 2, 3] = np.nan
        _write_npz(path, logits=bad)
    elif case == "beyond_float32":
        _write_npz(path, logits=GOOD_SXE.astype(np.float64) * 1e39)
    elif case == "wrong_experts":
        _write_npz(path, logits=np.zeros((2, 6, 5), np.float32))
    elif case == "wrong_tokens":
        _write_npz(path, logits=np.zeros((2, 7, 4), np.float32))
    else:  # pragma: no cover
        raise AssertionError(case)
    return path


TRACE_CASES = {
    "text": "not an .npz archive",
    "npy": "is a .npy array",
    "npy_named_npz": "is a .npy array",
    "corrupt_zip": "a corrupt or truncated zip archive",
    "empty_file": "not an .npz archive",
    "directory": "not a regular file",
    "missing": "cannot be read",
    "no_logits": "no array 'logits' (found: scores)",
    "object": "cannot be read without pickle",
    "strings": "has dtype <U",
    "complex": "has dtype complex64",
    "bool": "has dtype bool",
    "two_dims": "(2 dimensions, need 3)",
    "zero_steps": "no steps, tokens or experts",
    "nan": "has 1 of 48 values NaN",
    "beyond_float32": "beyond float32",
    "wrong_experts": "holds 5 experts per token, but router.num_experts = 4",
    "wrong_tokens": "holds 7 tokens per step, but the batch has 6",
}


@pytest.mark.parametrize("case", list(TRACE_CASES))
def test_bad_trace_is_refused_when_the_config_is_built(tmp_path, case):
    path = _bad_trace(tmp_path, case)
    with pytest.raises(ConfigError) as err:
        _trace_cfg(path)
    msg = str(err.value)
    assert msg.startswith(f"traffic.trace = {str(path)!r}: ")
    assert TRACE_CASES[case] in msg
    assert "allowed:" in msg and "\n" not in msg


def test_corrupt_member_of_a_valid_zip_is_refused(tmp_path):
    path = tmp_path / "t.npz"
    _write_npz(path, logits=GOOD_SXE)
    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY")  # the stored member's bytes: break its header
    data[start + 10:start + 40] = b"#" * 30
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="traffic.trace = .*(malformed|corrupt)"):
        _trace_cfg(path)


def test_good_trace_is_replayed_cycled_over_steps(tmp_path):
    path = tmp_path / "good.npz"
    _write_npz(path, logits=GOOD_SXE)
    cfg = _trace_cfg(path)
    params = traffic.make_traffic_params(cfg.points())
    keys = point_keys(0, [0], 1)
    state = traffic.init_traffic(np, params, keys)
    for step in range(5):
        z = traffic.logits(np, params, state, keys, step, 2, 3)[0, 0]
        np.testing.assert_array_equal(z, GOOD_SXE[step % 2, 2:5])


def test_trace_size_mismatch_is_refused():
    with pytest.raises(ConfigError, match="traffic.trace = 'builtin': holds 512 tokens"):
        config_from_dict({"router": {"num_experts": 16, "topk": 2},
                          "traffic": {"kind": "trace"}})


def test_trace_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="traffic.trace"):
        traffic.load_trace(str(tmp_path / "none.npz"))
