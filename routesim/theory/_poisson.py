"""Poisson-binomial counts of the experts above a level (private).

At a level ``y`` expert ``j`` beats it with probability ``q_j``; the count of
experts above ``y`` has generating function ``prod_j (1 - q_j + q_j w)``.
Only its first ``K`` coefficients matter (``P(count <= K - 1)``), so every
factor is a polynomial truncated to degree ``K - 1`` and the product is
formed by a balanced tree of truncated multiplications (``log2 E`` rounds,
all levels and experts at once; every term is a product of non-negative
numbers, so nothing cancels). A downward pass through the same tree gives,
for every expert ``k``, the product of all the *other* factors: the count
law with ``k`` left out.

Arrays are laid out (K, W, L): coefficient, tree node, level, so that each
coefficient of a whole tree level is one contiguous block.

Shape legend: L levels, E experts, W tree nodes, K coefficients.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []


def _mul(x: np.ndarray, dx: int, y: np.ndarray, dy: int, k: int) -> tuple[np.ndarray, int]:
    """Truncated product of polynomials of degrees ``dx``, ``dy`` (axis 0 = coefficient)."""
    d = min(dx + dy, k - 1)
    out = np.zeros((k,) + np.broadcast_shapes(x.shape[1:], y.shape[1:]))
    for a in range(dx + 1):
        for c in range(min(dy, d - a) + 1):
            out[a + c] += x[a] * y[c]
    return out, d


def _leaves(q_LE: np.ndarray, k: int) -> np.ndarray:
    """Factors ``(1 - q) + q w`` as (k, W, L), padded with ones to a power of 2."""
    n_lev, n = q_LE.shape
    width = 1 << max(0, (n - 1).bit_length())
    leaves = np.zeros((k, width, n_lev))
    leaves[0] = 1.0
    leaves[0, :n] = 1.0 - q_LE.T
    if k > 1:
        leaves[1, :n] = q_LE.T
    return leaves


def _up(q_LE: np.ndarray, k: int) -> list[tuple[np.ndarray, int]]:
    tree = [(_leaves(q_LE, k), min(1, k - 1))]
    while tree[-1][0].shape[1] > 1:
        node, d = tree[-1]
        tree.append(_mul(node[:, 0::2], d, node[:, 1::2], d, k))
    return tree


def count_law(q_LE: np.ndarray, k: int) -> np.ndarray:
    """``P(count = m)`` for ``m < k``: (L, k)."""
    return _up(q_LE, k)[-1][0][:, 0, :].T


def count_law_without_each(q_LE: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The count law, and the law with each expert left out: (L, k), (L, E, k)."""
    n = q_LE.shape[1]
    tree = _up(q_LE, k)
    comp = np.zeros_like(tree[-1][0])
    comp[0] = 1.0
    dc = 0
    for node, d in reversed(tree[:-1]):
        below = np.empty((k,) + node.shape[1:])
        even, d_even = _mul(comp, dc, node[:, 1::2], d, k)
        odd, _ = _mul(comp, dc, node[:, 0::2], d, k)
        below[:, 0::2], below[:, 1::2] = even, odd
        comp, dc = below, d_even
    return tree[-1][0][:, 0, :].T, np.transpose(comp[:, :n, :], (2, 1, 0))
