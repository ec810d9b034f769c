"""Cycle detection on a bias trajectory: period, band width and entry step.

On frozen traffic a controller is a deterministic map of its bias, so the
trajectory either converges (a fixed point, period 1) or, as the sign law
does, falls into a cycle. The trajectory is centred over experts first (a
common shift does not change routing, and the uncentred sign law drifts).

Shape legend: S steps, E experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ConfigError

__all__ = ["Cycle", "detect_cycle"]


@dataclass(frozen=True)
class Cycle:
    """The cycle a trajectory settled into.

    Attributes
    ----------
    period : int
        Smallest period (1: a fixed point); 0 when no cycle was found.
    entered : int
        First step from which the trajectory repeats with that period
        (-1 when none).
    band : float
        Largest range over experts of the centred bias within the cycle
        (0 for a fixed point, NaN when none).
    tolerance : float
        The absolute tolerance used to call two states equal.

    Examples
    --------
    >>> Cycle(2, 5, 0.002, 1e-9).found
    True
    """

    period: int
    entered: int
    band: float
    tolerance: float

    @property
    def found(self) -> bool:
        """True when a cycle (or a fixed point) was found."""
        return self.period > 0


def detect_cycle(trajectory_SE: Any, tol: float | None = None, min_repeats: int = 2
                 ) -> Cycle:
    """The smallest period with which the end of a trajectory repeats.

    A period ``p`` holds from step ``t0`` when ``|b[t + p] - b[t]| <= tol``
    for every expert and every ``t >= t0``; the smallest ``p`` whose
    repeating tail covers at least ``min_repeats`` periods (and 4 steps) is
    returned, with the earliest such ``t0``.

    Parameters
    ----------
    trajectory_SE : array (S, E)
        Bias per step (centred over experts here).
    tol : float, optional
        Absolute tolerance; default ``1e-3`` times the median non-zero step
        ``|b[t + 1] - b[t]|`` (0 when the trajectory never moves).
    min_repeats : int >= 1

    Returns
    -------
    Cycle

    Examples
    --------
    A bias that settles after three steps into a 2-cycle of width 0.2:

    >>> import numpy as np
    >>> b = np.array([[0, 0], [1, -1], [0.5, -0.5]] + [[0.1, -0.1], [-0.1, 0.1]] * 5)
    >>> c = detect_cycle(b)
    >>> c.period, c.entered, round(c.band, 12)
    (2, 3, 0.2)
    >>> detect_cycle(np.arange(10.0)[:, None] * [1.0, -1.0]).found  # drifts apart: no cycle
    False
    """
    b = np.asarray(trajectory_SE, dtype=np.float64)
    if b.ndim != 2:
        raise ConfigError(f"trajectory: shape {b.shape} must be (steps, experts)")
    if not np.all(np.isfinite(b)):
        raise ConfigError("trajectory: must be finite (it holds NaN or Inf)")
    if isinstance(min_repeats, bool) or not isinstance(min_repeats, int) or min_repeats < 1:
        raise ConfigError(f"min_repeats = {min_repeats!r}: must be an integer >= 1")
    c = b - b.mean(axis=-1, keepdims=True)
    steps = c.shape[0]
    if tol is None:
        moves = np.abs(np.diff(c, axis=0)).max(axis=-1) if steps > 1 else np.zeros(0)
        moves = moves[moves > 0]
        tol = 1e-3 * float(np.median(moves)) if moves.size else 0.0
    elif not (np.isfinite(tol) and tol >= 0):
        raise ConfigError(f"tol = {tol!r}: must be a finite number >= 0")
    for p in range(1, steps):
        need = max(min_repeats * p, 4)
        if steps - p < need:
            break
        ok = np.abs(c[p:] - c[:-p]).max(axis=-1) <= tol  # (S - p,): b[t + p] == b[t]
        bad = np.flatnonzero(~ok)
        t0 = int(bad[-1]) + 1 if bad.size else 0
        if steps - p - t0 >= need:
            window = c[t0:t0 + p]
            band = float((window.max(axis=0) - window.min(axis=0)).max())
            return Cycle(period=p, entered=t0, band=band, tolerance=float(tol))
    return Cycle(period=0, entered=-1, band=float("nan"), tolerance=float(tol))
