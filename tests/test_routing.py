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


def _rule_topk(row, k, allowed=None):
    """The tie rule written out: sort by (-score, index), keep the first k."""
    ids = range(len(row)) if allowed is None else allowed
    return set(sorted(ids, key=lambda i: (-row[i], i))[:k])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_ties_go_to_the_lower_index(xp, k):
    # quantised scores: most rows have ties straddling the K-th place
    rng = np.random.default_rng(k)
    s = rng.integers(0, 4, size=(2, 3, 200, 12)).astype(np.float32) / 4
    idx = np.asarray(routing.select_topk(xp, xp.asarray(s), k))
    for pos in itertools.product(range(2), range(3), range(200)):
        assert set(idx[pos].tolist()) == _rule_topk(s[pos].tolist(), k), pos


def _rule_group_topk(row, k, groups, group_topk):
    per = len(row) // groups
    m = k // group_topk
    gscore = [sum(sorted(row[g * per:(g + 1) * per], reverse=True)[:m]) for g in range(groups)]
    keep = sorted(range(groups), key=lambda g: (-gscore[g], g))[:group_topk]
    return _rule_topk(row, k, [i for i in range(len(row)) if i // per in keep])


@pytest.mark.parametrize("n,k,groups,gk", [(16, 4, 4, 2), (24, 6, 8, 3), (12, 2, 3, 1)])
def test_group_limited_ties_go_to_the_lower_index(xp, n, k, groups, gk):
    # integer scores: group sums are exact, so equal groups tie exactly
    rng = np.random.default_rng(n + k)
    s = rng.integers(0, 3, size=(1, 2, 150, n)).astype(np.float32)
    idx = np.asarray(routing.select_topk(xp, xp.asarray(s), k, groups, gk))
    for pos in itertools.product(range(1), range(2), range(150)):
        assert set(idx[pos].tolist()) == _rule_group_topk(s[pos].tolist(), k, groups, gk), pos


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


def test_weights_renormalised_for_sigmoid():
    s = np.array([[0.9, 0.6, 0.1, 0.3]])
    idx = np.array([[0, 1]])
    w = routing.gate_weights(np, s, idx, "sigmoid", 2, scaling_factor=2.5)
    np.testing.assert_allclose(w, [[2.5 * 0.9 / 1.5, 2.5 * 0.6 / 1.5]])
    w1 = routing.gate_weights(np, s, idx[:, :1], "sigmoid", 1)
    np.testing.assert_allclose(w1, [[0.9]])


def test_softmax_weights_over_the_chosen_logits_by_default():
    # Megatron moe_router_pre_softmax = False: softmax over the K chosen logits,
    # computed here from the logits alone; True: full-softmax probabilities.
    z = np.array([[2.0, -1.0, 0.5, 1.5, -3.0], [0.0, 0.3, -0.2, 0.1, 0.9]])
    idx = np.array([[0, 3], [4, 1]])
    s = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    chosen = np.take_along_axis(z, idx, axis=-1)
    top_k = np.exp(chosen) / np.exp(chosen).sum(axis=-1, keepdims=True)
    w = routing.gate_weights(np, s, idx, "softmax", 2)
    np.testing.assert_allclose(w, top_k, rtol=1e-12)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w[0], [np.exp(2.0) / (np.exp(2.0) + np.exp(1.5)),
                                      np.exp(1.5) / (np.exp(2.0) + np.exp(1.5))], rtol=1e-12)
    pre = routing.gate_weights(np, s, idx, "softmax", 2, 2.0, pre_softmax=True)
    np.testing.assert_allclose(pre, 2.0 * np.exp(chosen) / np.exp(z).sum(axis=-1,
                                                                          keepdims=True))
    one = routing.gate_weights(np, s, idx[:, :1], "softmax", 1)
    np.testing.assert_array_equal(one, [[1.0], [1.0]])


def test_probs_dropping_follows_the_softmax_mode():
    # Two tokens want expert 0, which has room for one (T=2, K=2, N=6, C=1:
    # ceil((4 / 6) * 1) = 1). Token A: z = [2, 0.5, -10, ...]; token B:
    # z = [2, 0, 0, 0, 0, 0] (chooses 0 and 1, the lower index of the tie).
    # Over the chosen logits: A e^2/(e^2+e^0.5) = 0.818 < B e^2/(e^2+1) = 0.881,
    # so B keeps expert 0; full softmax: A 0.818 > B e^2/(e^2+5) = 0.596, so A.
    z = np.array([[2.0, 0.5, -10, -10, -10, -10], [2.0, 0, 0, 0, 0, 0]])
    s = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    idx = np.asarray(routing.select_topk(np, s, 2))
    assert [sorted(r) for r in idx.tolist()] == [[0, 1], [0, 1]]
    cap = routing.capacity(2, 2, 6, 1.0)
    assert cap == 1
    mask = np.asarray(one_hot(np, idx, 6))[None, None]
    kept = {}
    for pre in (False, True):
        w = routing.gate_weights(np, s, idx, "softmax", 2, pre_softmax=pre)
        w_full = np.zeros((2, 6))
        np.put_along_axis(w_full, idx, w, axis=-1)
        kept[pre] = routing.drop_to_capacity(np, mask, w_full[None, None], cap, "probs", 1,
                                             2)[0, 0]
    assert kept[False][:, 0].tolist() == [False, True]
    assert kept[True][:, 0].tolist() == [True, False]


def test_pre_softmax_refused_without_softmax():
    from routesim import ConfigError, config_from_dict

    assert config_from_dict({"router": {"score_function": "softmax",
                                        "pre_softmax": True}}).router.pre_softmax
    with pytest.raises(ConfigError, match=r"router.pre_softmax = True.*'sigmoid'"):
        config_from_dict({"router": {"score_function": "sigmoid", "pre_softmax": True}})


# T, K, N, C -> capacity, by hand in Megatron's order ceil((T*K / N) * C). In
# float64 90 * 1.1 = 99.00000000000001 and 180 * 1.1 = 198.00000000000003 round
# up, 540 * 1.1 = 594.0 exactly; the order C*T*K/N gives 99, 198 and 595.
CAPACITY_TABLE = [
    (120, 6, 8, 1.1, 100),
    (240, 6, 8, 1.1, 199),
    (720, 6, 8, 1.1, 594),
    (4096, 8, 64, 1.25, 640),
    (4096, 8, 64, 1.0, 512),
    (100, 2, 8, 1.1, 28),    # 25 * 1.1 = 27.500000000000004
    (300, 1, 8, 1.3, 49),    # 37.5 * 1.3 = 48.75
    (16, 2, 4, 3.0, 16),     # 24 > T: capped at T
]


@pytest.mark.parametrize("t,k,n,c,want", CAPACITY_TABLE)
def test_capacity_table(t, k, n, c, want):
    assert routing.capacity(t, k, n, c) == want


def test_capacity_dropless():
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


# ----------------------------------------------------------------------------
# route_block: the whole pipeline against a token-by-token Python loop
# ----------------------------------------------------------------------------
def _brute_route(z, bias, topk, cap, policy, num_sequences, seq_length, on_logits=False):
    """Routed and kept counts (B, E) of one block (T, E), one token at a time."""
    t, e = z.shape
    chosen, weight = [], []
    for tok in range(t):
        s = [1.0 / (1.0 + math.exp(-v)) for v in z[tok]]
        sel = [(z[tok][i] if on_logits else s[i]) + bias[i] for i in range(e)]
        order = sorted(range(e), key=lambda i: (-sel[i], i))[:topk]
        total = sum(s[i] for i in order)
        chosen.append(order)
        weight.append({i: s[i] / total if topk > 1 else s[i] for i in order})
    routed = np.zeros((num_sequences, e), dtype=int)
    for tok, experts in enumerate(chosen):
        for i in experts:
            routed[tok // seq_length, i] += 1
    kept = np.zeros_like(routed)
    for i in range(e):
        takers = [tok for tok in range(t) if i in chosen[tok]]
        if policy == "probs":  # largest weight first, earlier token among equals
            takers.sort(key=lambda tok: (-weight[tok][i], tok))
        else:  # [position, sequence] order
            takers.sort(key=lambda tok: (tok % seq_length, tok // seq_length))
        for tok in takers[:cap]:
            kept[tok // seq_length, i] += 1
    return routed, kept


@pytest.mark.parametrize("policy", ["probs", "position"])
@pytest.mark.parametrize("cap", [2, 3, None])
def test_route_block_matches_a_token_loop(xp, policy, cap):
    from routesim.config import RouterConfig
    rng = np.random.default_rng(11)
    b, seq, e, k = 3, 4, 5, 2
    z = rng.normal(size=(2, 3, b * seq, e))
    bias = rng.normal(scale=0.3, size=(2, 3, e))
    r = RouterConfig(num_experts=e, topk=k, token_drop_policy=policy)
    out = routing.route_block(xp, xp.asarray(z), xp.asarray(bias), r, num_sequences=b,
                              seq_length=seq, capacity=cap)
    routed, kept = np.asarray(out.routed_PRBE), np.asarray(out.kept_PRBE)
    mask = np.asarray(out.assignments(xp, e))
    for p, q in itertools.product(range(2), range(3)):
        want_r, want_k = _brute_route(z[p, q], bias[p, q], k, cap or b * seq, policy, b, seq)
        assert routed[p, q].tolist() == want_r.tolist()
        assert kept[p, q].tolist() == want_k.tolist()
        assert mask[p, q].reshape(b, seq, e).sum(axis=1).tolist() == want_k.tolist()
    assert (out.kept_PRTE is None) == (cap is None)


def test_route_block_puts_the_bias_on_the_logits_for_chosen_points():
    from routesim.config import RouterConfig
    rng = np.random.default_rng(5)
    z = rng.normal(size=(2, 1, 6, 4))
    bias = np.zeros((2, 1, 4))
    bias[:, :, 3] = 1.5  # moves selections on the logits more than on sigmoid scores
    r = RouterConfig(num_experts=4, topk=1)
    out = routing.route_block(np, z, bias, r, num_sequences=1, seq_length=6,
                              logit_bias_P=np.array([False, True]), displaced=True,
                              quantile_estimate=True)
    for p, on_logits in ((0, False), (1, True)):
        want, _ = _brute_route(z[p, 0], bias[p, 0], 1, 6, "probs", 1, 6, on_logits)
        assert out.routed_PRBE[p, 0].tolist() == want.tolist()
    # displaced: selections outside the unbiased top-1, counted token by token
    plain = np.argmax(z, axis=-1)
    moved = (out.idx_PRTK[..., 0] != plain).sum(axis=-1)
    assert out.displaced_PR.tolist() == moved.tolist()
    assert out.estimate_PRE.shape == (2, 1, 4)
