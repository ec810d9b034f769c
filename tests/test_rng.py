"""Counter-based random numbers: laws, independence of chunking, backends."""

import numpy as np
import pytest
from scipy import stats

from routesim import rng


KEYS = rng.point_keys(11, [0, 1], 2)


def test_keys_depend_on_global_point_index_only():
    a = rng.point_keys(3, [0, 1, 2, 3], 2)
    b = rng.point_keys(3, [2, 3], 2)
    np.testing.assert_array_equal(a[2:], b)
    assert len(np.unique(a)) == a.size


def test_uniform_is_uniform():
    u = rng.uniform(np, KEYS, 0, rng.Stream.NOISE, np.arange(20000, dtype=np.uint64),
                    dtype=np.float64)
    assert u.shape == (2, 2, 20000)
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("law,dist", [("normal", stats.norm), ("logistic", stats.logistic),
                                      ("gumbel", stats.gumbel_r(loc=-np.euler_gamma))])
def test_noise_laws(law, dist):
    z = rng.noise(np, law, KEYS[:1, :1], 3, rng.Stream.NOISE, np.arange(4000), 7,
                  dtype=np.float64)
    assert z.shape == (1, 1, 4000, 7)
    assert stats.kstest(z.ravel(), dist.cdf).pvalue > 1e-3


def test_normal_columns_and_rows_uncorrelated():
    z = rng.standard_normal(np, KEYS[:1, :1], 0, 1, np.arange(5000), 6, np.float64)[0, 0]
    c = np.corrcoef(z.T)
    assert np.max(np.abs(c - np.eye(6))) < 0.06


def test_chunking_does_not_change_draws():
    whole = rng.standard_normal(np, KEYS, 5, 1, np.arange(100), 9)
    parts = np.concatenate([rng.standard_normal(np, KEYS, 5, 1, np.arange(a, a + 25), 9)
                            for a in range(0, 100, 25)], axis=2)
    np.testing.assert_array_equal(whole, parts)


def test_streams_and_steps_differ():
    a = rng.uniform(np, KEYS, 0, 1, np.arange(10, dtype=np.uint64))
    b = rng.uniform(np, KEYS, 0, 2, np.arange(10, dtype=np.uint64))
    c = rng.uniform(np, KEYS, 1, 1, np.arange(10, dtype=np.uint64))
    assert not np.any(a == b) or not np.all(a == b)
    assert not np.all(a == c)


def test_backends_draw_the_same(xp):
    keys = xp.asarray(KEYS)
    u = np.asarray(rng.uniform(xp, keys, 2, 1, xp.arange(50, dtype=xp.uint64)))
    np.testing.assert_array_equal(u, rng.uniform(np, KEYS, 2, 1, np.arange(50, dtype=np.uint64)))
    z = np.asarray(rng.standard_normal(xp, keys, 2, 1, xp.arange(30), 5))
    np.testing.assert_allclose(z, rng.standard_normal(np, KEYS, 2, 1, np.arange(30), 5),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("law", ["logistic", "gumbel", "normal"])
def test_extreme_uniforms_give_finite_noise(law, monkeypatch):
    # Force the largest and smallest 24-bit uniforms through each transform.
    def extreme(xp, base, index):
        return xp.where(index % 2 == 0, xp.asarray(0xFFFFFFFFFFFFFFFF, dtype=xp.uint64),
                        xp.asarray(0, dtype=xp.uint64))

    monkeypatch.setattr(rng, "hash_counter", extreme)
    z = rng.noise(np, law, KEYS[:1, :1], 0, 1, np.arange(4), 4)
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
