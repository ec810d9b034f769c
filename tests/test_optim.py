"""Optimizers and schedules against straightforward reference implementations."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routesim.learning import optim


def adam_reference(w0, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written element by element in plain Python floats."""
    w, m, v = list(w0), [0.0] * len(w0), [0.0] * len(w0)
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mh = m[i] / (1 - b1 ** t)
            vh = v[i] / (1 - b2 ** t)
            w[i] -= lr * mh / (math.sqrt(vh) + eps)
    return np.array(w)


def test_adam_matches_reference_loop():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=4)
    grads = rng.normal(size=(7, 4))
    w, m, v = w0.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(grads, start=1):
        w, m, v = optim.adam_step(np, w, g, m, v, t, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)
    assert np.allclose(w, adam_reference(w0, grads, 0.01, 0.8, 0.99, 1e-6), rtol=1e-12)


def test_first_adam_step_is_lr_times_sign():
    g = np.array([3.0, -1e-3, 0.2])
    w, _, _ = optim.adam_step(np, np.zeros(3), g, np.zeros(3), np.zeros(3), 1, lr=0.1)
    assert np.allclose(w, -0.1 * np.sign(g), rtol=1e-4)


def test_adam_does_not_mutate_inputs():
    w, g, m, v = np.ones(2), np.ones(2), np.zeros(2), np.zeros(2)
    optim.adam_step(np, w, g, m, v, 1, lr=0.1)
    assert np.all(w == 1) and np.all(m == 0) and np.all(v == 0)


def test_sgd_on_a_quadratic_follows_the_geometric_sequence():
    # L = c/2 w^2: w_t = (1 - lr c)^t w_0
    c, lr, w = 2.0, 0.1, np.array([1.5])
    for _ in range(20):
        w = optim.sgd_step(np, w, c * w, lr)
    assert np.isclose(w[0], 1.5 * (1 - lr * c) ** 20)


def test_schedules_at_known_points():
    assert optim.weight_at("constant", 123, 0.5) == 0.5
    assert optim.weight_at("warmup", 0, 1.0, steps=4) == 0.25
    assert optim.weight_at("warmup", 10, 1.0, steps=4) == 1.0
    # cosine: start, middle (mean of the two ends), end and beyond
    assert optim.weight_at("cosine", 0, 2.0, steps=10, final_fraction=0.1) == 2.0
    assert np.isclose(optim.weight_at("cosine", 5, 2.0, steps=10, final_fraction=0.1), 1.1)
    assert np.isclose(optim.weight_at("cosine", 99, 2.0, steps=10, final_fraction=0.1), 0.2)
    assert optim.weight_at("sigmoid", 30, 4.0, delay=30, width=3) == 2.0
    assert np.isclose(optim.weight_at("sigmoid", 33, 1.0, delay=30, width=3),
                      1 / (1 + math.exp(-1)))
    # Loss-Free 1B: cosine from 1e-3 to 1e-4
    assert np.isclose(optim.lr_at("cosine", 40_000, 1e-3, total=40_000), 1e-4)
    assert optim.lr_at("constant", 7, 1e-3, total=10) == 1e-3


@given(kind=st.sampled_from(["warmup", "sigmoid"]), t=st.integers(0, 10_000),
       width=st.floats(0.1, 1e3))
def test_ramps_are_monotone_and_bounded(kind, t, width):
    a = optim.weight_at(kind, t, 1.0, steps=100, delay=50, width=width)
    b = optim.weight_at(kind, t + 1, 1.0, steps=100, delay=50, width=width)
    assert 0.0 <= a <= b <= 1.0


@given(t=st.integers(0, 500), f=st.floats(0.0, 1.0))
def test_cosine_decreases_from_value_to_floor(t, f):
    a = optim.weight_at("cosine", t, 1.0, steps=200, final_fraction=f)
    b = optim.weight_at("cosine", t + 1, 1.0, steps=200, final_fraction=f)
    assert f - 1e-12 <= b <= a <= 1.0 + 1e-12


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        optim.weight_at("linear", 0, 1.0)
    with pytest.raises(ValueError, match="schedule"):
        optim.lr_at("step", 0, 1.0, total=1)
