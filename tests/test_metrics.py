"""Metrics against hand computations."""

import numpy as np
import pytest

from routesim import metrics


def test_maxvio_reference_value():
    assert float(metrics.maxvio(np.array([40, 30, 20, 10]))) == pytest.approx(0.6)
    assert float(metrics.maxvio(np.array([5, 5, 5, 5]))) == 0.0


def test_cv_entropy_dead():
    load = np.array([[4, 0, 2, 2]])
    # by hand: mean 2, deviations (2, -2, 0, 0), population variance 2: cv = sqrt(2) / 2
    assert metrics.cv(load)[0] == pytest.approx(0.7071067811865476, rel=1e-15)
    assert metrics.dead_experts(load)[0] == 1
    # shares (1/2, 0, 1/4, 1/4): 1/2 * 1 + 2 * 1/4 * 2 = 1.5 bits
    assert metrics.load_entropy(load)[0] == pytest.approx(1.5, rel=1e-15)
    assert metrics.load_entropy(np.ones((1, 8)))[0] == pytest.approx(3.0)


def test_flip_fraction_detects_oscillation():
    b = np.array([0.0, 1.0, 0.0, 1.0, 0.0])[:, None, None, None] * np.array([1, 1])  # 2 experts
    out = metrics.flip_fraction(b)
    np.testing.assert_array_equal(out[1:-1, 0, 0], 1.0)
    mono = np.arange(5.0)[:, None, None, None] * np.ones(2)
    assert np.all(metrics.flip_fraction(mono) == 0)


def test_trailing_sum():
    x = np.arange(1, 6)[:, None]
    np.testing.assert_array_equal(metrics.trailing_sum(x, 2)[:, 0], [1, 3, 5, 7, 9])


def test_bias_spread():
    assert metrics.bias_spread(np.array([[0.1, -0.2, 0.05]]))[0] == pytest.approx(0.3)


# ----------------------------------------------------------------------------
# the metrics as the engines record them, against brute-force loops
# ----------------------------------------------------------------------------
def _brute_maxvio(load_E):
    load_E = [float(c) for c in load_E]
    mean = sum(load_E) / len(load_E)
    return (max(load_E) - mean) / mean


def _spy_counts(monkeypatch):
    """Record every per-sequence count array the router returns, (P, R, B, E) each."""
    from routesim import routing

    seen = []
    original = routing.counts_per_sequence

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(np.asarray(out).copy())
        return out

    monkeypatch.setattr(routing, "counts_per_sequence", spy)
    monkeypatch.setattr(routing.block, "counts_per_sequence", spy)  # route_block calls it
    return seen


def _brute_compute_maxvio(per_seq_SBE, size):
    """Mean over consecutive groups of ``size`` sequences of the group's MaxVio, per step."""
    out = []
    for step in per_seq_SBE:
        groups = [step[g:g + size].sum(axis=0) for g in range(0, len(step), size)]
        out.append(sum(_brute_maxvio(c) for c in groups) / len(groups))
    return np.array(out)


def _check_maxvio_compute(ds, seen, steps, seqs, sizes):
    rec = np.concatenate(seen, axis=2)[0, 0]  # point 0, replica 0: (steps * seqs, E)
    per_seq = rec.reshape(steps, seqs, -1)
    np.testing.assert_array_equal(per_seq.sum(axis=1), ds["expert_load"].values[:, 0, 0])
    for j, size in enumerate(sizes):
        np.testing.assert_allclose(ds["maxvio_compute"].values[:, 0, 0, j],
                                   _brute_compute_maxvio(per_seq, size), rtol=1e-12)


def test_exact_engine_maxvio_compute_against_per_sequence_loads(monkeypatch):
    from routesim import config_from_dict
    from routesim import simulate

    sizes = [1, 2, 8]
    cfg = config_from_dict({
        "run": {"steps": 3, "seed": 4, "record_displacement": False, "kernel": "generic"},
        "batch": {"num_sequences": 8, "seq_length": 16, "computation_batch_sizes": sizes},
        "traffic": {"skew": "zipf", "seq_correlation": 0.5},
        "router": {"num_experts": 8, "topk": 2}, "controller": {"type": "sign"}})
    seen = _spy_counts(monkeypatch)
    ds = simulate(cfg, progress=False)
    _check_maxvio_compute(ds, seen, 3, 8, sizes)
    # the whole step as one computation batch is maxvio_batch
    np.testing.assert_allclose(ds["maxvio_compute"].values[..., -1], ds["maxvio_batch"].values)


def test_learning_engine_maxvio_compute_against_per_sequence_loads(monkeypatch):
    from routesim import config_from_dict
    from routesim import simulate

    sizes = [1, 2, 4, 8]
    cfg = config_from_dict({
        "run": {"steps": 3, "seed": 5, "record_displacement": False},
        "batch": {"num_sequences": 8, "seq_length": 8, "computation_batch_sizes": sizes},
        "traffic": {"kind": "features", "feature_dim": 3, "num_topics": 3},
        "router": {"num_experts": 6, "topk": 2, "score_function": "softmax"},
        "controller": {"type": "none"},
        "penalty": {"learn": True, "optimizer": "sgd", "learning_rate": 1.0,
                    "affinity_scale": 1.0, "quality_strength": 0.5}})
    seen = _spy_counts(monkeypatch)
    ds = simulate(cfg, progress=False)
    _check_maxvio_compute(ds, seen, 3, 8, sizes)


def _brute_trailing_maxvio(load_SE, window):
    out = []
    for t in range(len(load_SE)):
        total = [0] * load_SE.shape[1]
        for s in range(max(0, t - window + 1), t + 1):
            total = [a + int(b) for a, b in zip(total, load_SE[s])]
        out.append(_brute_maxvio(total))
    return np.array(out)


@pytest.mark.parametrize("window", [1, 3, 7, 50])
def test_trailing_sum_against_a_loop(window):
    rng = np.random.default_rng(window)
    load = rng.integers(0, 50, size=(9, 2, 1, 5))
    got = metrics.maxvio(metrics.trailing_sum(load, window))
    for p in range(2):
        np.testing.assert_allclose(got[:, p, 0], _brute_trailing_maxvio(load[:, p, 0], window),
                                   rtol=1e-12)


def test_maxvio_global_uses_the_run_global_window():
    from routesim import config_from_dict
    from routesim import simulate

    cfg = config_from_dict({
        "run": {"steps": 8, "seed": 2, "global_window": 3, "record_displacement": False},
        "batch": {"num_sequences": 2, "seq_length": 32},
        "router": {"num_experts": 8, "topk": 2}, "controller": {"type": "sign"}})
    ds = simulate(cfg, progress=False)
    load = ds["expert_load"].values
    np.testing.assert_allclose(ds["maxvio_global"].values[:, 0, 0],
                               _brute_trailing_maxvio(load[:, 0, 0], 3), rtol=1e-12)
    assert ds["maxvio_global_run"].values[0, 0] == pytest.approx(
        _brute_maxvio(load[:, 0, 0].sum(axis=0)), rel=1e-12)


def _brute_flip_fraction(bias_SE):
    steps, experts = bias_SE.shape
    out = np.zeros(steps)
    for t in range(1, steps - 1):
        flips = 0
        for e in range(experts):
            before = bias_SE[t, e] - bias_SE[t - 1, e]
            after = bias_SE[t + 1, e] - bias_SE[t, e]
            flips += (before > 0 and after < 0) or (before < 0 and after > 0)
        out[t] = flips / experts
    return out


def test_flip_fraction_against_a_loop_with_still_experts():
    rng = np.random.default_rng(3)
    # steps of -1, 0 or +1: zero updates (an expert that does not move) are no flips
    bias = np.cumsum(rng.integers(-1, 2, size=(12, 1, 1, 6)), axis=0).astype(float)
    np.testing.assert_allclose(metrics.flip_fraction(bias)[:, 0, 0],
                               _brute_flip_fraction(bias[:, 0, 0]))


def test_flip_fraction_is_zero_without_a_controller():
    from routesim import config_from_dict
    from routesim import simulate

    cfg = config_from_dict({
        "run": {"steps": 6, "seed": 1, "record_displacement": False},
        "batch": {"num_sequences": 2, "seq_length": 32},
        "router": {"num_experts": 8, "topk": 2}, "controller": {"type": "none"}})
    ds = simulate(cfg, progress=False)
    assert np.all(ds["flip_fraction"].values == 0.0)
    assert np.all(ds["bias_spread"].values == 0.0)
