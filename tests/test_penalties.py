"""Balance losses, z-loss, CV^2: values against reference formulas, gradients against
central finite differences in float64."""

import numpy as np
import pytest
from scipy.special import expit, logsumexp, softmax

from routesim.learning import penalties

from _numerics import fd_grad, rel_err

RTOL = 1e-4


def random_map(rng, t, e, k):
    idx = np.argsort(rng.random((t, e)), axis=-1)[:, :k]
    m = np.zeros((t, e), dtype=bool)
    np.put_along_axis(m, idx, True, axis=-1)
    return m


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("normalization", ["megatron", "mixtral"])
def test_balance_loss_gradient_matches_finite_differences(gate, groups, normalization):
    rng = np.random.default_rng(0)
    t, e, k = 8, 5, 2
    z = rng.normal(size=(t, e))
    m = random_map(rng, t, e, k)

    def f(zz):
        return float(penalties.balance_loss(np, zz, m, gate, k, groups, normalization)[0])

    _, grad = penalties.balance_loss(np, z, m, gate, k, groups, normalization)
    assert rel_err(grad, fd_grad(f, z)) < RTOL


def test_balance_loss_works_on_leading_axes():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3, 6, 4))
    m = np.stack([np.stack([random_map(rng, 6, 4, 2) for _ in range(3)]) for _ in range(2)])
    value, grad = penalties.balance_loss(np, z, m, "softmax", 2, 3)
    for a in range(2):
        for b in range(3):
            v1, g1 = penalties.balance_loss(np, z[a, b], m[a, b], "softmax", 2, 3)
            assert np.isclose(value[a, b], v1) and np.allclose(grad[a, b], g1)


def test_balance_loss_equals_megatron_formula():
    # Megatron switch_load_balancing_loss_func: coeff * E / (k * T^2) * sum_i (sum_t p_ti) c_i
    rng = np.random.default_rng(2)
    t, e, k = 32, 8, 3
    z = rng.normal(size=(t, e))
    m = random_map(rng, t, e, k)
    probs = softmax(z, axis=-1)
    ref = e / (k * t * t) * np.sum(probs.sum(0) * m.sum(0))
    value, _ = penalties.balance_loss(np, z, m, "softmax", k, 1)
    assert np.isclose(value, ref, rtol=1e-12)


def test_sequence_loss_equals_deepseek_v3_loop():
    # DeepSeek-V3 Eqs 17-20 per sequence: f_i = N/(K T) sum_t 1(i in topK(s_t)),
    # P_i = mean_t s'_i with s' = s / sum_j s_j (sigmoid), loss = sum_i f_i P_i; mean over seqs.
    rng = np.random.default_rng(3)
    seqs, length, e, k = 3, 10, 6, 2
    z = rng.normal(size=(seqs * length, e))
    s = expit(z)
    vals = []
    for q in range(seqs):
        zs = s[q * length:(q + 1) * length]
        f = np.zeros(e)
        for row in zs:
            for i in np.argsort(-row)[:k]:
                f[i] += e / (k * length)
        p = (zs / zs.sum(-1, keepdims=True)).mean(0)
        vals.append(float(np.sum(f * p)))
    m = penalties.topk_map(np, s, k)
    value, _ = penalties.balance_loss(np, z, m, "sigmoid", k, seqs)
    assert np.isclose(value, np.mean(vals), rtol=1e-12)


@pytest.mark.parametrize("normalization,expected", [("megatron", 1.0), ("mixtral", 3.0)])
def test_balance_loss_at_balance(normalization, expected):
    # uniform probabilities and a perfectly balanced map: alpha (megatron) or K (mixtral)
    e, k = 6, 3
    m = np.zeros((e, e), dtype=bool)
    for t in range(e):
        m[t, [(t + j) % e for j in range(k)]] = True
    value, grad = penalties.balance_loss(np, np.zeros((e, e)), m, "softmax", k, 1,
                                         normalization)
    assert np.isclose(value, expected) and np.allclose(grad, 0.0)


def test_balance_gradient_moves_mass_to_underloaded_experts():
    # all tokens on expert 0: descending the loss lowers logit 0 and raises the others
    t, e = 4, 3
    m = np.zeros((t, e), dtype=bool)
    m[:, 0] = True
    _, grad = penalties.balance_loss(np, np.zeros((t, e)), m, "softmax", 1, 1)
    assert np.all(grad[:, 0] > 0) and np.all(grad[:, 1:] < 0)


def test_z_loss_value_and_gradient():
    rng = np.random.default_rng(4)
    z = 3.0 * rng.normal(size=(2, 7, 5))
    value, grad = penalties.z_loss(np, z)
    assert np.allclose(value, np.mean(logsumexp(z, axis=-1) ** 2, axis=-1), rtol=1e-12)
    for a in range(2):
        fd = fd_grad(lambda zz: float(penalties.z_loss(np, zz)[0]), z[a])
        assert rel_err(grad[a], fd) < RTOL


def test_cv_squared_value_and_gradient():
    rng = np.random.default_rng(5)
    v = rng.uniform(0.5, 3.0, size=(3, 6))
    value, grad = penalties.cv_squared(np, v)
    assert np.allclose(value, v.var(-1) / v.mean(-1) ** 2, rtol=1e-12)
    for a in range(3):
        fd = fd_grad(lambda vv: float(penalties.cv_squared(np, vv)[0]), v[a])
        assert rel_err(grad[a], fd) < RTOL


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_weight_gradient_through_logits(gate):
    # L(W) = balance_loss(x @ W.T) with the map held fixed
    rng = np.random.default_rng(6)
    t, e, d, k = 12, 4, 3, 2
    x = rng.normal(size=(t, d))
    w = rng.normal(size=(e, d))
    m = random_map(rng, t, e, k)

    def f(ww):
        return float(penalties.balance_loss(np, penalties.router_logits(np, x, ww), m, gate,
                                            k, 2)[0])

    _, gz = penalties.balance_loss(np, penalties.router_logits(np, x, w), m, gate, k, 2)
    assert rel_err(penalties.weight_grad(np, gz, x), fd_grad(f, w)) < RTOL


def test_interference_cosine_and_cancelled_share():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 4, 5))
    b = rng.normal(size=(3, 4, 5))
    cos, share = penalties.interference(np, a, b)
    for i in range(3):
        x, y = a[i].ravel(), b[i].ravel()
        assert np.isclose(cos[i], x @ y / np.linalg.norm(x) / np.linalg.norm(y))
        assert np.isclose(share[i], np.clip(-(x @ y) / (x @ x), 0, 1))
    # exact opposition cancels everything; a zero penalty has no interference
    cos, share = penalties.interference(np, a, -2 * a)
    assert np.allclose(cos, -1) and np.allclose(share, 1)
    cos, share = penalties.interference(np, a, 0 * a)
    assert np.allclose(cos, 0) and np.allclose(share, 0)


def test_array_api_strict_agrees_with_numpy():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(8)
    z = rng.normal(size=(2, 8, 5))
    m = np.stack([random_map(rng, 8, 5, 2) for _ in range(2)])
    for gate in ("softmax", "sigmoid"):
        v0, g0 = penalties.balance_loss(np, z, m, gate, 2, 2)
        v1, g1 = penalties.balance_loss(xps, xps.asarray(z), xps.asarray(m), gate, 2, 2)
        assert np.allclose(v0, np.asarray(v1)) and np.allclose(g0, np.asarray(g1))
    v0, g0 = penalties.z_loss(np, z)
    v1, g1 = penalties.z_loss(xps, xps.asarray(z))
    assert np.allclose(v0, np.asarray(v1)) and np.allclose(g0, np.asarray(g1))
