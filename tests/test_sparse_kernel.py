"""The sparse kernel (``run.kernel = "sparse"``): same law as the dense model, other numbers.

References: the exact load map and selection covariance of ``routesim.theory``
(quadrature), the dense model sampled with NumPy's own generator (per-token
selected sets), and the dense Numba / array kernels of the engine (MaxVio
distributions). Every statistical test states its sample size; the thresholds are
p > 1e-3.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, rng, simulate
from routesim.engines.kernels import numba_available

pytestmark = pytest.mark.skipif(not numba_available()[0], reason=numba_available()[1])
stats = pytest.importorskip("scipy.stats")

if numba_available()[0]:
    from routesim.engines.kernels import sparse as sk


def _bases(seed: int, q: int, step: int = 0):
    keys = rng.point_keys(seed, list(range(q)), 1)
    return (rng.stream_base(np, keys, step, sk.HIT_STREAM).reshape(-1),
            rng.stream_base(np, keys, step, sk.FILL_STREAM).reshape(-1))


def _route(mu, bias, k, law="normal", gate="sigmoid", mode="additive", seqs=8, L=2048,
           scale=1.0, seed=0, **kw):
    hb, fb = _bases(seed, 1)
    return sk.route_counts_sparse(hb, fb, 0, seqs, L, mu[None], np.full(1, scale), bias[None],
                                  k, law, gate, mode, **kw)[0]


def _mahalanobis_p(counts_E, p_E, cov_EE, tokens):
    """Chi-square p-value of the summed selections against (p, cov) of one token.

    Experts expected fewer than 10 times (or missed fewer than 10 times) are pooled
    into one bin each, where the normal approximation holds.
    """
    alone = (tokens * p_E >= 10) & (tokens * (1 - p_E) >= 10)
    rows = [np.eye(len(p_E))[i] for i in np.flatnonzero(alone)]
    for pool in ((~alone) & (p_E < 0.5), (~alone) & (p_E >= 0.5)):
        if pool.any():
            rows.append(pool.astype(float))
    G = np.array(rows)
    dev = G @ (counts_E - tokens * p_E) / math.sqrt(tokens)
    stat = float(dev @ np.linalg.pinv(G @ cov_EE @ G.T, rcond=1e-10) @ dev)
    return float(stats.chi2.sf(stat, np.linalg.matrix_rank(G @ cov_EE @ G.T, tol=1e-10)))


# (N, K, gate, noise, bias mode, mu, bias, levels): skews from none to extreme
CASES = {
    "uniform": (32, 4, "sigmoid", "normal", "additive", np.zeros(32), np.zeros(32), None),
    "linear-logistic": (64, 8, "sigmoid", "logistic", "additive", np.linspace(1, -1, 64),
                        0.1 * np.cos(np.arange(64)), None),
    "zipf-gumbel-sqrtsoftplus": (96, 6, "sqrtsoftplus", "gumbel", "additive",
                                 -np.log1p(np.arange(96.0)), np.zeros(96), None),
    "extreme-bias": (48, 4, "sigmoid", "normal", "additive", np.linspace(3, -3, 48),
                     np.where(np.arange(48) < 2, 2.0, 0.0) - 0.4 * (np.arange(48) > 40), None),
    "multiplicative": (40, 5, "sigmoid", "normal", "multiplicative", np.linspace(1, -1, 40),
                       np.where(np.arange(40) % 7 == 0, 0.05, 1.0 + 0.3 * np.sin(np.arange(40))),
                       None),
    "logit-bias": (32, 3, "sigmoid", "normal", "logit", np.linspace(2, -2, 32),
                   0.5 * np.sin(np.arange(32)), None),
    "frequent-completion": (32, 6, "sigmoid", "logistic", "additive", np.linspace(1, -1, 32),
                            np.zeros(32), (1.0, 5.0)),
    "dense-completion-only": (16, 3, "sqrtsoftplus", "normal", "additive",
                              np.linspace(1, -1, 16), np.zeros(16), (0.0, 0.0)),
    # about 40 candidates per token overflow the work arrays (room for 2K + 16 per
    # token): the first block grows them and is drawn again
    "overflowing-workspace": (64, 2, "sigmoid", "normal", "additive", np.linspace(1, -1, 64),
                              np.zeros(64), (1.0, 40.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_inclusion_and_covariance_match_the_exact_load_map(case):
    """16384 tokens: the selections' sum against ``T p`` with the selection covariance."""
    from routesim.theory import expected_load

    n, k, gname, law, mode, mu, bias, levels = CASES[case]
    counts = _route(mu, bias, k, law, gname, mode, levels=levels).sum(axis=0)
    assert counts.sum() == 8 * 2048 * k
    kw = dict(topk=k, score_function=gname, noise=law,
              bias_mode="additive" if mode == "logit" else mode,
              bias_on="logits" if mode == "logit" else "scores")
    p = expected_load.load_map(mu, bias, **kw)
    cov = expected_load.selection_covariance(mu, bias, **kw)
    assert _mahalanobis_p(counts.astype(float), p, cov, 8 * 2048) > 1e-3


@pytest.mark.parametrize("scan_above", [0.0, 2.0])
@pytest.mark.parametrize("case", ["linear-logistic", "extreme-bias"])
def test_both_ways_of_drawing_candidates_match_the_exact_load_map(case, scan_above):
    """16384 tokens, every expert's candidates drawn token by token (``scan_above = 0``)
    or all by a Binomial count and positions (``2``): against ``T p`` and the covariance."""
    from routesim.theory import expected_load

    n, k, gname, law, mode, mu, bias, levels = CASES[case]
    counts = _route(mu, bias, k, law, gname, mode, seed=5, scan_above=scan_above).sum(axis=0)
    assert counts.sum() == 8 * 2048 * k
    kw = dict(topk=k, score_function=gname, noise=law, bias_mode=mode, bias_on="scores")
    p = expected_load.load_map(mu, bias, **kw)
    cov = expected_load.selection_covariance(mu, bias, **kw)
    assert _mahalanobis_p(counts.astype(float), p, cov, 8 * 2048) > 1e-3


@pytest.mark.parametrize("law, seq_length", [("normal", 256), ("gumbel", 2048)])
def test_a_shared_component_shifts_the_law_of_its_sequence(law, seq_length):
    """16384 tokens of sequences sharing one shared component ``a`` (``rho = 0.4``):
    against the load map and covariance of ``mu + scale sqrt(rho) a`` with noise scale
    ``scale sqrt(1 - rho)`` (the sequences' rows are their own, the levels their
    stream's; 256-token sequences have fewer levels)."""
    from routesim.theory import expected_load

    n, k, rho, scale = 48, 4, 0.4, 1.3
    mu = np.linspace(1.5, -1.5, n)
    bias = 0.2 * np.sin(np.arange(n))
    a = np.random.default_rng(3).standard_normal(n)
    seqs = 16384 // seq_length
    hb, fb = _bases(11, 1)
    counts = sk.route_counts_sparse(hb, fb, 0, seqs, seq_length, mu[None], np.full(1, scale),
                                    bias[None], k, law, "sigmoid", "additive",
                                    rho_Q=np.full(1, rho),
                                    a_QBE=np.broadcast_to(a, (1, seqs, n)))[0].sum(axis=0)
    assert counts.sum() == 16384 * k
    kw = dict(topk=k, score_function="sigmoid", noise=law,
              noise_scale=scale * math.sqrt(1 - rho))
    mu_seq = mu + scale * math.sqrt(rho) * a
    p = expected_load.load_map(mu_seq, bias, **kw)
    cov = expected_load.selection_covariance(mu_seq, bias, **kw)
    assert _mahalanobis_p(counts.astype(float), p, cov, 16384) > 1e-3


def _dense_sets(mu, bias, k, law, gname, mode, tokens, seed):
    """Per-token selected sets of the dense model, drawn with NumPy's own generator."""
    g = np.random.default_rng(seed)
    n = mu.shape[0]
    eps = {"normal": lambda: g.standard_normal((tokens, n)),
           "logistic": lambda: g.logistic(size=(tokens, n)),
           "gumbel": lambda: g.gumbel(size=(tokens, n)) - np.euler_gamma}[law]()
    z = mu + eps
    if mode == "logit":
        v = z + bias
    else:
        s = 1 / (1 + np.exp(-z)) if gname == "sigmoid" else np.sqrt(np.logaddexp(0, z))
        v = s + bias if mode == "additive" else s * bias
    idx = np.argsort(-v, axis=1, kind="stable")[:, :k]
    sel = np.zeros((tokens, n), bool)
    np.put_along_axis(sel, idx, True, axis=1)
    return sel


@pytest.mark.parametrize("case", [
    (7, 2, "sigmoid", "normal", "additive", (1.0, 3.0)),
    (8, 3, "sqrtsoftplus", "gumbel", "additive", (0.5, 4.0)),
    (9, 3, "sigmoid", "logistic", "multiplicative", (2.0, 4.5)),
    (8, 2, "sigmoid", "normal", "logit", (1.0, 2.5)),
])
def test_selected_sets_and_pairs_follow_the_dense_law(case):
    """20000 one-token sequences each: the law of the whole selected set (chi-square of
    homogeneity against the dense model) and every pair's co-selection frequency
    against the exact selection covariance (Bonferroni over pairs)."""
    from routesim.theory import expected_load

    n, k, gname, law, mode, levels = case
    mu = np.linspace(1.5, -1.5, n)
    bias = (1.0 + 0.3 * np.cos(np.arange(n))) if mode == "multiplicative" \
        else 0.2 * np.sin(np.arange(n))
    tokens = 20000
    sparse_sel = _route(mu, bias, k, law, gname, mode, seqs=tokens, L=1,
                        levels=levels).astype(bool)
    assert (sparse_sel.sum(axis=1) == k).all()
    dense_sel = _dense_sets(mu, bias, k, law, gname, mode, tokens, seed=11)
    weights = 1 << np.arange(n)
    sets = np.unique(np.concatenate([sparse_sel @ weights, dense_sel @ weights]))
    table = np.array([[np.sum((x @ weights) == s) for s in sets] for x in (sparse_sel,
                                                                          dense_sel)])
    table = table[:, table.sum(axis=0) >= 10]
    assert stats.chi2_contingency(table)[1] > 1e-3
    kw = dict(topk=k, score_function=gname, noise=law,
              bias_mode="additive" if mode == "logit" else mode,
              bias_on="logits" if mode == "logit" else "scores")
    p = expected_load.load_map(mu, bias, **kw)
    both = expected_load.selection_covariance(mu, bias, **kw) + np.outer(p, p)
    pairs = list(combinations(range(n), 2))
    pv = [stats.binomtest(int(np.sum(sparse_sel[:, i] & sparse_sel[:, j])), tokens,
                          min(max(both[i, j], 1e-12), 1.0)).pvalue for i, j in pairs]
    assert min(pv) * len(pairs) > 1e-3


def test_zero_noise_selects_the_top_k_of_popularity_plus_bias():
    n, k = 20, 3
    mu = np.linspace(0, 1, n)
    bias = np.zeros(n)
    bias[[2, 5]] = 5.0
    counts = _route(mu, bias, k, scale=0.0, seqs=2, L=16)
    want = np.zeros(n, int)
    want[[2, 5, n - 1]] = 16
    np.testing.assert_array_equal(counts, np.stack([want, want]))


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_same_numbers_however_chunked_or_threaded(rho):
    n, k, L = 96, 4, 300
    mu = np.stack([np.linspace(1, -1, n), np.zeros(n)])
    bias = np.zeros((2, n))
    hb, fb = _bases(3, 2, step=5)
    a = np.random.default_rng(8).standard_normal((2, 6, n))
    args = (mu, np.ones(2), bias, k, "logistic", "sigmoid", "additive")

    def shared(q, first, count):
        return dict(rho_Q=np.full(len(q), rho), a_QBE=a[q, first:first + count])

    both = [0, 1]
    whole = sk.route_counts_sparse(hb, fb, 0, 6, L, *args, threads=2, **shared(both, 0, 6))
    parts = np.concatenate([
        sk.route_counts_sparse(hb, fb, 0, 2, L, *args, threads=1, **shared(both, 0, 2)),
        sk.route_counts_sparse(hb, fb, 2, 4, L, *args, threads=2, **shared(both, 2, 4))],
        axis=1)
    np.testing.assert_array_equal(whole, parts)
    one = sk.route_counts_sparse(hb[1:], fb[1:], 0, 6, L, mu[1:], np.ones(1), bias[1:], k,
                                 "logistic", "sigmoid", "additive", **shared([1], 0, 6))
    np.testing.assert_array_equal(whole[1:], one)


def _cfg(kernel, **over):
    d = {"run": {"steps": 150, "replicas": 2, "seed": 4, "kernel": kernel,
                 "record_displacement": False},
         "batch": {"num_sequences": 4, "seq_length": 256},
         "router": {"num_experts": 64, "topk": 4},
         "traffic": {"skew": "zipf", "zipf_exponent": 1.0, "seq_correlation": 0.0},
         "controller": {"type": "sign", "bias_update_rate": 1e-3}}
    for key, val in over.items():
        sec, field = key.split(".")
        d[sec][field] = val
    return config_from_dict(d)


@pytest.mark.parametrize("over", [
    {},
    {"traffic.seq_correlation": 0.5, "traffic.noise": "logistic"},
])
def test_maxvio_distribution_matches_the_dense_engine(over):
    """300 steps x replicas of MaxVio_batch: two-sample Kolmogorov-Smirnov against the
    dense engine (Numba kernel for normal noise, array code otherwise)."""
    dense_kernel = "auto" if over.get("traffic.noise", "normal") == "normal" else "generic"
    a = simulate(_cfg("sparse", **over), progress=False)["maxvio_batch"].values[20:].ravel()
    b = simulate(_cfg(dense_kernel, **over), progress=False)["maxvio_batch"].values[20:].ravel()
    assert stats.ks_2samp(a, b).pvalue > 1e-3
    assert abs(a.mean() - b.mean()) < 0.1 * b.mean()


def test_sparse_kernel_refusals():
    with pytest.raises(ConfigError, match="run.kernel = 'sparse'.*score_function"):
        _cfg("sparse", **{"router.score_function": "softmax"})
    with pytest.raises(ConfigError, match="run.kernel = 'sparse'.*record_displacement"):
        _cfg("sparse", **{"run.record_displacement": True})
    with pytest.raises(ConfigError, match="run.kernel = 'sparse': needs run.backend = 'numpy'"):
        _cfg("sparse", **{"run.backend": "array_api_strict"})


def test_level_targets_grow_slowly_with_the_experts():
    lam = [sk.level_targets(n, 8)[1] for n in (64, 256, 1024, 4096)]
    assert lam == sorted(lam) and 8 < lam[0] and lam[-1] < 30
