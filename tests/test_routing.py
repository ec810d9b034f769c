"""Routing: top-K, group limits, weights, capacity, counting (against brute force)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from routesim import routing
from routesim._backend import one_hot


def _brute_topk(row, k):
    return set(np.argsort(-row, kind="stable")[:k].tolist())


def _scores(rng, shape):
    return rng.standard_normal(shape).astype(np.float64)


def test_topk_distinct_and_correct(xp):
    rng = np.random.default_rng(0)
    s = _scores(rng, (2, 3, 50, 12))
    idx = np.asarray(routing.select_topk(xp, xp.asarray(s), 4))
    assert idx.shape == (2, 3, 50, 4)
    for pos in itertools.product(range(2), range(3), range(50)):
        assert len(set(idx[pos].tolist())) == 4
        assert set(idx[pos].tolist()) == _brute_topk(s[pos], 4)


def _brute_group_topk(row, k, groups, group_topk):
    n = len(row)
    per = n // groups
    m = k // group_topk
    gscore = [sum(sorted(row[g * per:(g + 1) * per], reverse=True)[:m]) for g in range(groups)]
    keep = sorted(range(groups), key=lambda g: -gscore[g])[:group_topk]
    allowed = [i for i in range(n) if i // per in keep]
    return set(sorted(allowed, key=lambda i: -row[i])[:k])


@pytest.mark.parametrize("n,k,groups,gk", [(16, 4, 4, 2), (64, 8, 8, 4), (12, 2, 3, 1)])
def test_group_limited_topk_against_brute_force(xp, n, k, groups, gk):
    rng = np.random.default_rng(n)
    s = _scores(rng, (1, 1, 40, n))
    idx = np.asarray(routing.select_topk(xp, xp.asarray(s), k, groups, gk))
    for t in range(40):
        assert set(idx[0, 0, t].tolist()) == _brute_group_topk(s[0, 0, t], k, groups, gk)


@given(arrays(np.float64, (6, 10), elements=st.floats(-5, 5), unique=True),
       st.floats(-3, 3), st.integers(1, 9))
def test_constant_bias_shift_leaves_selection_unchanged(s, shift, k):
    bias = np.linspace(-0.1, 0.1, 10)
    a = routing.select_topk(np, s + bias, k)
    b = routing.select_topk(np, s + (bias + shift), k)
    assert [set(r) for r in a.tolist()] == [set(r) for r in b.tolist()]


def test_raising_one_bias_never_lowers_its_load():
    rng = np.random.default_rng(3)
    s = rng.random((1, 1, 2000, 8))
    bias = np.zeros((1, 1, 8))
    before = routing.counts_per_sequence(np, routing.select_topk(np, s + bias[:, :, None], 2),
                                         1, 2000, 8)
    bias[0, 0, 3] = 0.05
    after = routing.counts_per_sequence(np, routing.select_topk(np, s + bias[:, :, None], 2),
                                        1, 2000, 8)
    assert after[0, 0, 0, 3] >= before[0, 0, 0, 3]
    assert after.sum() == before.sum() == 2000 * 2


def test_counts_sum_to_k_times_tokens(xp):
    rng = np.random.default_rng(1)
    idx = routing.select_topk(xp, xp.asarray(_scores(rng, (2, 2, 6 * 7, 9))), 3)
    counts = np.asarray(routing.counts_per_sequence(xp, idx, 6, 7, 9))
    assert counts.shape == (2, 2, 6, 9)
    assert np.all(counts.sum(axis=-1) == 3 * 7)
    # brute force
    ref = np.zeros((2, 2, 6, 9), int)
    idx = np.asarray(idx)
    for p, r, t, j in itertools.product(range(2), range(2), range(42), range(3)):
        ref[p, r, t // 7, idx[p, r, t, j]] += 1
    np.testing.assert_array_equal(counts, ref)


def test_weights_renormalised_for_sigmoid_not_softmax():
    s = np.array([[0.9, 0.6, 0.1, 0.3]])
    idx = np.array([[0, 1]])
    w = routing.gate_weights(np, s, idx, "sigmoid", 2, scaling_factor=2.5)
    np.testing.assert_allclose(w, [[2.5 * 0.9 / 1.5, 2.5 * 0.6 / 1.5]])
    w = routing.gate_weights(np, s, idx, "softmax", 2)
    np.testing.assert_allclose(w, [[0.9, 0.6]])
    w1 = routing.gate_weights(np, s, idx[:, :1], "sigmoid", 1)
    np.testing.assert_allclose(w1, [[0.9]])


def test_capacity_formula():
    assert routing.capacity(4096, 8, 64, 1.0) == 512
    assert routing.capacity(100, 2, 8, 1.1) == math.ceil(1.1 * 100 * 2 / 8)
    assert routing.capacity(100, 2, 8, None) == 100
    assert routing.capacity(100, 2, 8, math.inf) == 100


def _brute_drop(mask, weight, cap, policy, b, L):
    p, r, t, e = mask.shape
    keep = np.zeros_like(mask)
    for pi, ri, ei in itertools.product(range(p), range(r), range(e)):
        tokens = [tok for tok in range(t) if mask[pi, ri, tok, ei]]
        if policy == "position":
            order = sorted(tokens, key=lambda tok: (tok % L, tok // L))
        else:
            order = sorted(tokens, key=lambda tok: -weight[pi, ri, tok, ei])
        for tok in order[:cap]:
            keep[pi, ri, tok, ei] = True
    return keep


@pytest.mark.parametrize("policy", ["probs", "position"])
def test_drop_to_capacity_against_brute_force(xp, policy):
    rng = np.random.default_rng(5)
    b, L, e, k = 3, 8, 6, 2
    s = rng.random((2, 1, b * L, e))
    idx = routing.select_topk(np, s, k)
    mask = np.asarray(one_hot(np, idx, e))
    w = np.where(mask, s, 0.0)
    cap = routing.capacity(b * L, k, e, 1.0)
    got = np.asarray(routing.drop_to_capacity(xp, xp.asarray(mask), xp.asarray(w), cap, policy,
                                              b, L))
    np.testing.assert_array_equal(got, _brute_drop(mask, w, cap, policy, b, L))
    assert got.sum(axis=2).max() <= cap
    assert np.all(got <= mask)


def test_infinite_capacity_equals_dropless():
    rng = np.random.default_rng(6)
    s = rng.random((1, 1, 40, 8))
    mask = one_hot(np, routing.select_topk(np, s, 3), 8)
    cap = routing.capacity(40, 3, 8, math.inf)
    kept = routing.drop_to_capacity(np, mask, s, cap, "probs", 5, 8)
    np.testing.assert_array_equal(kept, mask)


def test_displaced_share():
    a = np.array([[[[0, 1], [2, 3]]]])
    b = np.array([[[[1, 0], [2, 4]]]])
    assert float(routing.displaced_share(np, a, b)[0, 0]) == pytest.approx(0.25)


def test_quantile_dual_estimate_against_python(xp):
    # Megatron qb_dual_update, written as a plain loop: alpha_t is the token's
    # (K+1)-th largest of z - beta; beta_i the (T*K/N + 1)-th largest of
    # z[:, i] - alpha. Exactly T*K/N tokens then have z[t, i] - alpha_t > beta_i.
    rng = np.random.default_rng(7)
    t, n, k = 64, 8, 2
    z = rng.standard_normal((1, 1, t, n)) + np.linspace(1, -1, n)
    beta = rng.normal(0, 0.3, n)
    est = np.asarray(routing.quantile_dual_estimate(xp, xp.asarray(z), xp.asarray(-beta[None, None]),
                                                    k))[0, 0]
    alpha = [sorted(z[0, 0, tok] - beta, reverse=True)[k] for tok in range(t)]
    q = t * k // n
    ref_beta = [sorted((z[0, 0, tok, i] - alpha[tok] for tok in range(t)), reverse=True)[q]
                for i in range(n)]
    np.testing.assert_allclose(-est, ref_beta, rtol=1e-12)
    above = (z[0, 0] - np.asarray(alpha)[:, None]) > np.asarray(ref_beta)[None, :]
    assert np.all(above.sum(axis=0) == q)
