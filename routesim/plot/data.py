"""From a results Dataset to what a plot draws: grid axes, the steady window, intervals.

:func:`grid_view` gives a grid sweep its own dimensions
(:func:`routesim.analysis.unstack_points`) and leaves anything else as it
is; :func:`steady_window` picks the trailing steps a steady statistic
averages; :func:`steady_values` averages a variable over them per replica;
:func:`replica_interval` gives the replicas' mean with a Student-t
confidence interval.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats

from ..analysis import swept_keys, unstack_points

__all__ = ["grid_view", "steady_window", "steady_values", "replica_interval", "line_table"]


def grid_view(ds: xr.Dataset) -> xr.Dataset:
    """A grid sweep with one dimension per swept setting; other results unchanged.

    Parameters
    ----------
    ds : xarray.Dataset
        Results, flat (``point`` axis) or already unstacked.

    Returns
    -------
    xarray.Dataset
        :func:`routesim.analysis.unstack_points` of a whole grid sweep; a
        ``zip`` sweep, a run without a sweep or an unstacked Dataset as given.

    Examples
    --------
    >>> from routesim import config_from_dict, simulate
    >>> cfg = config_from_dict({"run": {"steps": 2}, "batch": {"num_sequences": 1, "seq_length": 16},
    ...                         "router": {"num_experts": 4, "topk": 1},
    ...                         "sweep": {"controller.bias_update_rate": [1e-3, 1e-2]}})
    >>> ds = simulate(cfg, progress=False)
    >>> grid_view(ds)["maxvio_batch"].dims
    ('step', 'controller.bias_update_rate', 'replica')
    >>> grid_view(ds.isel(point=[0]))["maxvio_batch"].dims   # part of a grid: left flat
    ('step', 'point', 'replica')
    """
    if "point" not in ds.dims or not swept_keys(ds):
        return ds
    try:
        return unstack_points(ds)
    except ValueError:
        return ds


def steady_window(steps: int, window: int | None = None) -> slice:
    """The trailing steps over which a steady statistic is taken.

    Parameters
    ----------
    steps : int
        Steps of the run.
    window : int, optional
        Trailing steps to keep; None keeps the last quarter (at least one step).

    Returns
    -------
    slice
        Positions along ``step``.

    Raises
    ------
    ValueError
        For a window outside ``1 .. steps``.

    Examples
    --------
    >>> steady_window(400)
    slice(300, 400, None)
    >>> steady_window(400, 50)
    slice(350, 400, None)
    >>> steady_window(10, 20)
    Traceback (most recent call last):
    ...
    ValueError: window = 20: must be between 1 and the run's 10 steps
    """
    if window is None:
        window = max(1, steps // 4)
    if not 1 <= int(window) <= steps:
        raise ValueError(f"window = {window!r}: must be between 1 and the run's {steps} steps")
    return slice(steps - int(window), steps)


def steady_values(ds: xr.Dataset, variable: str, window: int | None = None) -> xr.DataArray:
    """Mean of a per-step variable over the trailing window, per point and replica.

    Parameters
    ----------
    ds : xarray.Dataset
        Results (flat or unstacked).
    variable : str
        A variable with a ``step`` dimension (``maxvio_batch``, ``flip_fraction``, ...).
    window : int, optional
        Trailing steps (:func:`steady_window`); None: the last quarter.

    Returns
    -------
    xarray.DataArray
        The variable without its ``step`` dimension.

    Raises
    ------
    ValueError
        For a variable that is missing or has no ``step`` dimension.

    Examples
    --------
    >>> ds = xr.Dataset({"maxvio_batch": (("step", "replica"), [[4.0, 2.0], [1.0, 3.0], [3.0, 5.0]])})
    >>> steady_values(ds, "maxvio_batch", window=2).values.tolist()
    [2.0, 4.0]
    """
    if variable not in ds or "step" not in ds[variable].dims:
        have = sorted(v for v in ds.data_vars if "step" in ds[v].dims)
        raise ValueError(f"variable = {variable!r}: not a per-step variable of these results "
                         f"(have {', '.join(have)})")
    da = ds[variable]
    return da.isel(step=steady_window(da.sizes["step"], window)).mean("step")


def replica_interval(da: xr.DataArray, level: float = 0.95) -> tuple[xr.DataArray, ...]:
    """Mean over replicas and its two-sided Student-t confidence interval.

    Parameters
    ----------
    da : xarray.DataArray
        Values with a ``replica`` dimension (one replica gives a zero-width interval).
    level : float
        Confidence level, in (0, 1).

    Returns
    -------
    tuple of xarray.DataArray
        ``(mean, low, high)``.

    Examples
    --------
    >>> da = xr.DataArray([1.0, 2.0, 3.0], dims="replica")
    >>> m, lo, hi = replica_interval(da)
    >>> float(m), round(float(hi - m), 4)     # t(0.975, 2) * 1 / sqrt(3)
    (2.0, 2.4841)
    """
    if not 0 < level < 1:
        raise ValueError(f"level = {level!r}: must be in (0, 1)")
    mean = da.mean("replica")
    n = da.sizes.get("replica", 1)
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + level / 2, n - 1) * da.std("replica", ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def line_table(da: xr.DataArray, keep: tuple[str, ...]) -> tuple[list[str], xr.DataArray]:
    """Stack every dimension outside ``keep`` into one ``line`` axis, with a label per line.

    Parameters
    ----------
    da : xarray.DataArray
        A variable of flat or unstacked results.
    keep : tuple of str
        Dimensions left as they are (such as ``("step", "replica")``).

    Returns
    -------
    tuple
        ``(labels, stacked)``: one label per line (the ``label`` coordinate
        of a flat Dataset, else ``name=value`` of each stacked dimension)
        and the array with dimensions ``keep + ("line",)``.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros((3, 2)), dims=("step", "u"), coords={"u": [0.1, 0.2]})
    >>> labels, flat = line_table(da, ("step",))
    >>> labels, flat.dims
    (['u=0.1', 'u=0.2'], ('step', 'line'))
    """
    others = [d for d in da.dims if d not in keep]
    if not others:
        return [str(da.name or "")], da.expand_dims(line=1).transpose(*keep, "line")
    if others == ["point"] and "label" in da.coords:
        labels = [str(x) for x in da["label"].values]
    else:
        idx = np.stack(np.meshgrid(*[np.arange(da.sizes[d]) for d in others], indexing="ij"),
                       axis=-1).reshape(-1, len(others))
        labels = []
        for row in idx:
            parts = []
            for d, i in zip(others, row):
                v = da[d].values[i] if d in da.coords else i
                parts.append(f"{d.split('.')[-1]}={v:g}" if isinstance(v, (float, np.floating))
                             else f"{d.split('.')[-1]}={v}")
            labels.append(", ".join(parts))
    flat = da.drop_vars([c for c in da.coords if c not in da.dims and c not in keep])
    flat = flat.stack(line=others).transpose(*keep, "line")
    return labels, flat
