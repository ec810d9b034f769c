"""Leakage capacities against direct counts, big-integer binomials and Stirling."""

import itertools
import math

import numpy as np
import pytest

from routesim import ConfigError
from routesim.routing.expert_choice import expert_choice_mask
from routesim.theory import leakage_bound, leakage_exact, leakage_limit, leakage_split


def _count_assignments(t, n, k):
    """Boolean T x N matrices whose every column has K*T/N ones, by enumeration."""
    cap = k * t // n
    count = 0
    for bits in range(2 ** (t * n)):
        cols = [(bits >> (j * t)) & ((1 << t) - 1) for j in range(n)]
        count += all(bin(c).count("1") == cap for c in cols)
    return count


@pytest.mark.parametrize("t,n,k", [(2, 2, 1), (4, 2, 1), (4, 4, 2), (3, 3, 1), (6, 3, 1),
                                   (4, 4, 1)])
def test_exact_matches_a_direct_count_of_assignments(t, n, k):
    count = _count_assignments(t, n, k)
    assert leakage_exact(t, n, k) == pytest.approx(math.log2(count) / t, rel=1e-12)


def test_expert_choice_reaches_every_counted_assignment():
    t, n, k = 4, 2, 1
    scores = np.random.default_rng(0).random((4000, t, n))
    masks = expert_choice_mask(np, scores, k, t).reshape(4000, -1)
    distinct = {m.tobytes() for m in masks}
    assert len(distinct) == _count_assignments(t, n, k) == 36


def test_exact_matches_big_integer_binomials():
    for t, n, k in [(2048, 16, 2), (512, 64, 8), (1000, 10, 3)]:
        direct = n * math.log2(math.comb(t, k * t // n)) / t
        assert leakage_exact(t, n, k) == pytest.approx(direct, rel=1e-12)


def test_paper_example_bound():
    # Loss-Free paper, Appendix D: R = 2/16, about 5.6 bits per layer, > 50 bits over 9.
    assert leakage_bound(16, 2) == pytest.approx(2 * math.log2(7), rel=1e-12)
    assert round(leakage_bound(16, 2), 1) == 5.6
    assert 9 * leakage_bound(16, 2) > 50


@pytest.mark.parametrize("n,k", [(16, 2), (64, 8), (8, 1), (256, 8), (4, 1)])
def test_bound_below_exact_which_rises_to_its_limit(n, k):
    step = n // math.gcd(n, k)  # smallest T with K*T/N an integer
    t = step * np.arange(1, 400)
    exact = leakage_exact(t, n, k)
    elementary = k * math.log2(n / k)
    assert exact[0] == pytest.approx(elementary, rel=1e-12) or k * step // n > 1
    assert np.all(exact >= elementary - 1e-12)
    assert elementary > leakage_bound(n, k)
    assert np.all(np.diff(exact) > 0)
    assert np.all(exact < leakage_limit(n, k))
    # Stirling: log2 C(T, RT) = T H2(R) - log2(2 pi T R (1 - R)) / 2 + O(1/T).
    big = step * 2**16
    r = k / n
    stirling = leakage_limit(n, k) - n * math.log2(2 * math.pi * big * r * (1 - r)) / (2 * big)
    assert leakage_exact(big, n, k) == pytest.approx(stirling, abs=1e-6)


def test_limit_is_bound_plus_n_log_one_over_one_minus_r():
    n, k = 16, 2
    r = k / n
    assert leakage_limit(n, k) == pytest.approx(leakage_bound(n, k) - n * math.log2(1 - r))


def test_exact_is_finite_for_huge_blocks():
    value = leakage_exact(16 * 10**9, 16, 2)
    assert math.isfinite(value) and value == pytest.approx(leakage_limit(16, 2), abs=1e-7)


def test_split_capacity_small_cases_and_bounds():
    assert leakage_split(4, 4, 4, 2) == pytest.approx(4 * math.log2(5))
    assert leakage_split(6, 2, 4, 2) == pytest.approx(4 * math.log2(3))  # k in [2, 4]
    assert leakage_split(0, 8, 4, 2) == 0.0
    for t, early in itertools.product([16, 64, 512], [1, 5, 8]):
        assert leakage_split(early, t - early, 16, 2) <= t * leakage_exact(t, 16, 2)


@pytest.mark.parametrize("call,match", [
    (lambda: leakage_exact(10, 16, 2), r"block = 10: K\*T/N = 2\*10/16"),
    (lambda: leakage_exact(0, 16, 2), "block = 0"),
    (lambda: leakage_bound(16, 16), "topk = 16"),
    (lambda: leakage_limit(1, 1), "num_experts = 1"),
    (lambda: leakage_split(3, 2, 4, 2), r"block = 5: K\*T/N"),
])
def test_bad_arguments_are_refused_with_their_values(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
