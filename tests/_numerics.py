"""Finite-difference helpers shared by the gradient tests."""

import numpy as np


def fd_grad(f, x, h=1e-6):
    """Central finite differences of a scalar function of an array."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        x_plus, x_minus = x.copy(), x.copy()
        x_plus[i] += h
        x_minus[i] -= h
        g[i] = (f(x_plus) - f(x_minus)) / (2 * h)
    return g


def rel_err(a, b):
    """Largest absolute difference relative to the largest reference entry."""
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
