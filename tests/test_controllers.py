"""Controllers: each law against a plain-Python loop, and their invariants."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from routesim import controllers as C
from routesim.config import config_from_dict

LOADS = np.array([[[40.0, 30.0, 20.0, 10.0], [25.0, 25.0, 25.0, 25.0]]])  # (P=1, R=2, E=4)


def _sign(x):
    return int(x > 0) - int(x < 0)


def _py_sign(bias, load, u):
    m = sum(load) / len(load)
    return [b + u * _sign(m - c) for b, c in zip(bias, load)]


def _py_sign_centred(bias, load, u):
    m = sum(load) / len(load)
    d = [u * _sign(m - c) for c in load]
    md = sum(d) / len(d)
    return [b + x - md for b, x in zip(bias, d)]


def _py_prop(bias, load, u):
    m = sum(load) / len(load)
    return [b + u * (m - c) / m for b, c in zip(bias, load)]


def _py_ema(bias, load, ema, u, beta, cap):
    n = len(load)
    total = sum(load)
    ema = [beta * e + (1 - beta) * c / total for e, c in zip(ema, load)]
    d = [u * (1 / n - e) for e in ema]
    md = sum(d) / n
    new = [b + x - md for b, x in zip(bias, d)]
    if cap > 0:
        new = [min(max(v, -cap), cap) for v in new]
    return new, ema


def _py_rms(bias, load, u):
    n = len(load)
    total = sum(load)
    dev = [c / total - 1 / n for c in load]
    rms = math.sqrt(sum(x * x for x in dev) / n)
    if rms == 0:
        return list(bias)
    return [b - u * x / rms for b, x in zip(bias, dev)]


def _py_tanh(bias, load, vel, u, beta, kappa):
    m = sum(load) / len(load)
    vel = [beta * v + (1 - beta) * math.tanh(((m - c) / m) / kappa) for v, c in zip(vel, load)]
    d = [u * v for v in vel]
    md = sum(d) / len(d)
    return [b + x - md for b, x in zip(bias, d)], vel


def _rows(a):
    return [list(map(float, a[0, r])) for r in range(a.shape[1])]


def test_sign_against_python_and_megatron_formula():
    bias = np.array([[[0.1, 0.0, -0.2, 0.3], [0.0, 0.0, 0.0, 0.0]]])
    got = C.sign_update(np, bias, LOADS, 1e-3)
    for r in range(2):
        np.testing.assert_allclose(got[0, r], _py_sign(bias[0, r], LOADS[0, r], 1e-3))
    # Megatron get_updated_expert_bias: offset = average - tokens; bias + sign(offset) * rate
    tokens = LOADS[0, 0]
    average = tokens.sum() / tokens.size
    megatron = bias[0, 0] + np.sign(average - tokens) * 1e-3
    np.testing.assert_array_equal(got[0, 0], megatron)
    # sign(0) = 0: a balanced window leaves the bias as it was
    np.testing.assert_array_equal(got[0, 1], bias[0, 1])


def test_sign_centred_and_proportional_and_rms():
    bias = np.array([[[0.1, 0.0, -0.2, 0.3], [0.5, 0.0, 0.0, 0.0]]])
    for fn, ref in ((C.sign_centred_update, _py_sign_centred),
                    (C.proportional_update, _py_prop), (C.rms_update, _py_rms)):
        got = fn(np, bias, LOADS, 0.01)
        for r in range(2):
            np.testing.assert_allclose(got[0, r], ref(list(bias[0, r]), list(LOADS[0, r]), 0.01),
                                       atol=1e-15)


@pytest.mark.parametrize("cap", [0.0, 0.004])
def test_ema_against_python(cap):
    bias = np.zeros((1, 2, 4))
    ema = np.zeros((1, 2, 4))
    ref_b = [[0.0] * 4, [0.0] * 4]
    ref_e = [[0.0] * 4, [0.0] * 4]
    for _ in range(5):
        bias, ema = C.ema_update(np, bias, LOADS, ema, 0.05, 0.9, np.float64(cap))
        for r in range(2):
            ref_b[r], ref_e[r] = _py_ema(ref_b[r], list(LOADS[0, r]), ref_e[r], 0.05, 0.9, cap)
    np.testing.assert_allclose(_rows(bias), ref_b, atol=1e-15)
    np.testing.assert_allclose(_rows(ema), ref_e, atol=1e-15)


def test_momentum_tanh_against_python():
    bias = np.zeros((1, 2, 4))
    vel = np.zeros((1, 2, 4))
    ref = [([0.0] * 4, [0.0] * 4) for _ in range(2)]
    for _ in range(4):
        bias, vel = C.momentum_tanh_update(np, bias, LOADS, vel, 0.01, 0.8, 0.1)
        ref = [_py_tanh(ref[r][0], list(LOADS[0, r]), ref[r][1], 0.01, 0.8, 0.1)
               for r in range(2)]
    np.testing.assert_allclose(_rows(bias), [x[0] for x in ref], atol=1e-15)


def test_quantile_update_recentres():
    bias = np.array([[[1.0, 2.0, 3.0]]])
    est = np.array([[[0.0, 1.0, 5.0]]])
    got = C.quantile_update(np, bias, est, 0.25)
    blend = 0.25 * bias + 0.75 * est
    np.testing.assert_allclose(got, blend - blend.mean())


def _params(types, rates, **kw):
    cfg = config_from_dict({"sweep": {"mode": "zip", "controller.type": list(types),
                                      "controller.bias_update_rate": list(rates)},
                            "controller": kw})
    return C.make_controller_params(cfg.points())


def test_update_bias_dispatches_each_point_to_its_law(xp):
    types = ["none", "sign", "proportional", "sign_centred"]
    params = _params(types, [0.1, 0.01, 0.02, 0.03])
    load = np.broadcast_to(LOADS[:, :1], (4, 1, 4)).copy()
    bias = np.zeros((4, 1, 4))
    got, _ = C.update_bias(xp, params, xp.asarray(bias), xp.asarray(bias), xp.asarray(load),
                           None, 0)
    got = np.asarray(got)
    np.testing.assert_array_equal(got[0, 0], 0.0)
    np.testing.assert_allclose(got[1, 0], _py_sign([0] * 4, LOADS[0, 0], 0.01))
    np.testing.assert_allclose(got[2, 0], _py_prop([0] * 4, LOADS[0, 0], 0.02))
    np.testing.assert_allclose(got[3, 0], _py_sign_centred([0] * 4, LOADS[0, 0], 0.03))


def test_warmup_holds_ema():
    params = _params(["ema"], [0.5], warmup_steps=2)
    bias = np.zeros((1, 1, 4))
    load = LOADS[:, :1]
    held, _ = C.update_bias(np, params, bias, bias, load, None, windows_done=1)
    moved, _ = C.update_bias(np, params, bias, bias, load, None, windows_done=2)
    assert np.all(held == 0) and np.any(moved != 0)


loads_strategy = arrays(np.int64, (3, 8), elements=st.integers(0, 1000))


@given(loads_strategy, st.floats(1e-4, 0.1))
def test_centred_sign_keeps_mean_bias(load, u):
    bias = np.zeros((1, 3, 8))
    for _ in range(5):
        bias = C.sign_centred_update(np, bias, load[None], u)
    np.testing.assert_allclose(bias.mean(axis=-1), 0.0, atol=1e-12)


@given(st.lists(loads_strategy, min_size=1, max_size=20), st.floats(1e-4, 0.1))
def test_sign_bias_moves_at_most_u_per_window(loads, u):
    bias = np.zeros((1, 3, 8))
    for t, load in enumerate(loads, start=1):
        bias = C.sign_update(np, bias, load[None], u)
        assert np.max(np.abs(bias)) <= u * t * (1 + 1e-12)
