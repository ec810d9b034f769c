"""Metrics against hand computations."""

import numpy as np
import pytest

from routesim import metrics


def test_maxvio_reference_value():
    assert float(metrics.maxvio(np.array([40, 30, 20, 10]))) == pytest.approx(0.6)
    assert float(metrics.maxvio(np.array([5, 5, 5, 5]))) == 0.0


def test_cv_entropy_dead():
    load = np.array([[4, 0, 2, 2]])
    assert metrics.cv(load)[0] == pytest.approx(np.std([4, 0, 2, 2]) / 2)
    assert metrics.dead_experts(load)[0] == 1
    f = np.array([0.5, 0.25, 0.25])
    assert metrics.load_entropy(load)[0] == pytest.approx(-(f * np.log2(f)).sum())
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
