"""Balance statistics of the exact and mean-field engines side by side.

Used by ``analysis/meanfield_vs_exact.py`` and the agreement tests of the
surrogate: steady-state MaxVio (mean and spread) and the settling step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compare_engines", "settling_step"]


def settling_step(curve_S: np.ndarray, level: float, smooth: int = 5) -> int:
    """First step at which the trailing mean of ``curve`` is at or below ``level``.

    Parameters
    ----------
    curve_S : array (S,)
        A metric per step, e.g. the replica mean of ``maxvio_batch``.
    level : float
        The settling level.
    smooth : int > 0
        Width of the trailing mean (fewer steps at the start).

    Returns
    -------
    int
        The step, or ``S`` if the curve never settles.

    Examples
    --------
    >>> settling_step(np.array([1.0, 0.8, 0.5, 0.2, 0.1, 0.1]), 0.3, smooth=1)
    3
    """
    c = np.cumsum(np.asarray(curve_S, dtype=np.float64))
    width = np.minimum(np.arange(1, c.size + 1), smooth)
    prev = np.concatenate([np.zeros(smooth), c])[: c.size]
    mean = (c - prev) / width
    below = np.nonzero(mean <= level)[0]
    return int(below[0]) if below.size else int(c.size)


def compare_engines(exact, meanfield, *, burn_in: int, settle_fraction: float = 0.1,
                    smooth: int = 5) -> dict[str, tuple[float, float]]:
    """Balance statistics of two result Datasets of the same config and point.

    Parameters
    ----------
    exact, meanfield : xarray.Dataset
        Results of :func:`routesim.simulate` with ``run.engine`` ``exact`` and
        ``meanfield`` (one point; replicas pooled).
    burn_in : int >= 0
        Steps left out of the steady-state statistics.
    settle_fraction : float in (0, 1)
        Settling level: ``steady + fraction * (initial - steady)`` of the exact
        engine's replica-mean MaxVio_batch, applied to both engines.
    smooth : int > 0
        Trailing-mean width for the settling step.

    Returns
    -------
    dict
        ``{"maxvio_mean": (exact, meanfield), "maxvio_std": (...),
        "settling_step": (...)}``.

    Examples
    --------
    >>> import xarray as xr
    >>> def ds(curve):  # maxvio_batch (step, point, replica)
    ...     return xr.Dataset({"maxvio_batch": (("step", "point", "replica"),
    ...                                         np.array(curve, float)[:, None, None])})
    >>> stats = compare_engines(ds([1.0, 0.5, 0.1, 0.1, 0.1]), ds([1.0, 0.9, 0.5, 0.1, 0.1]),
    ...                         burn_in=2, smooth=1)
    >>> stats["settling_step"]  # level 0.1 + 0.1 * (1.0 - 0.1) = 0.19
    (2.0, 3.0)
    >>> [round(v, 6) for v in stats["maxvio_mean"]]  # steps 2, 3, 4
    [0.1, 0.233333]
    """
    curves, stats = {}, {}
    for name, ds in (("exact", exact), ("meanfield", meanfield)):
        mv = np.asarray(ds["maxvio_batch"].values, dtype=np.float64)[:, 0, :]  # (S, R)
        curves[name] = mv.mean(axis=1)
        tail = mv[burn_in:]
        stats[name] = (float(tail.mean()), float(tail.std(ddof=1)))
    steady = stats["exact"][0]
    level = steady + settle_fraction * (curves["exact"][0] - steady)
    settle = {n: settling_step(c, level, smooth) for n, c in curves.items()}
    return {"maxvio_mean": (stats["exact"][0], stats["meanfield"][0]),
            "maxvio_std": (stats["exact"][1], stats["meanfield"][1]),
            "settling_step": (float(settle["exact"]), float(settle["meanfield"]))}
