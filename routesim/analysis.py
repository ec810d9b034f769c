"""Reading results: a sweep's flat ``point`` axis as the grid's own dimensions.

A results Dataset keeps every configuration on one ``point`` axis, with each
swept setting as a coordinate along it (``controller.bias_update_rate``,
``traffic.zipf_exponent``, ...). :func:`unstack_points` turns a ``grid``
sweep into one dimension per swept setting, the form xarray's ``sel`` and
``plot`` expect; :func:`swept_keys` names those settings.
:func:`shift_response` measures how a run answers a change of its traffic at
a given step (a regime switch): the time to rebalance and the task proxy
lost.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["swept_keys", "unstack_points", "shift_response"]


def swept_keys(ds: xr.Dataset) -> list[str]:
    """The swept settings of a results Dataset, in the sweep's order.

    Parameters
    ----------
    ds : xarray.Dataset
        Results from :func:`routesim.simulate` (or a stored sweep).

    Returns
    -------
    list of str
        Dotted setting names, each a coordinate along ``point``; empty for a
        run without a sweep.

    Examples
    --------
    >>> from routesim import config_from_dict, simulate
    >>> cfg = config_from_dict({"run": {"steps": 2}, "batch": {"num_sequences": 1, "seq_length": 16},
    ...                         "router": {"num_experts": 4, "topk": 1},
    ...                         "sweep": {"controller.bias_update_rate": [1e-3, 1e-2]}})
    >>> swept_keys(simulate(cfg, progress=False))
    ['controller.bias_update_rate']
    """
    config: dict[str, Any] = json.loads(ds.attrs.get("config", "{}"))
    params = config.get("sweep", {}).get("parameters", {})
    return [key for key in params if key in ds.coords]


def unstack_points(ds: xr.Dataset) -> xr.Dataset:
    """Turn the flat ``point`` axis of a grid sweep into one dimension per swept setting.

    Parameters
    ----------
    ds : xarray.Dataset
        Results of a ``grid`` sweep (``sweep.mode = "grid"``) over every point,
        or a Dataset already unstacked (returned unchanged).

    Returns
    -------
    xarray.Dataset
        The same variables with ``point`` replaced by the swept settings'
        dimensions, in the sweep's order; the ``label`` and ``point``
        coordinates are dropped (each point is now named by its settings).

    Raises
    ------
    ValueError
        For a ``zip`` sweep, a run without a sweep, or a subset of the grid's
        points (the grid would have holes).

    Examples
    --------
    >>> from routesim import config_from_dict, simulate
    >>> cfg = config_from_dict({"run": {"steps": 2}, "batch": {"num_sequences": 1, "seq_length": 16},
    ...                         "router": {"num_experts": 4, "topk": 1},
    ...                         "sweep": {"controller.bias_update_rate": [1e-3, 1e-2],
    ...                                   "traffic.noise_scale": [0.5, 1.0, 2.0]}})
    >>> grid = unstack_points(simulate(cfg, progress=False))
    >>> dict(grid["maxvio_batch"].sizes)
    {'step': 2, 'replica': 1, 'controller.bias_update_rate': 2, 'traffic.noise_scale': 3}
    >>> float(grid["traffic.noise_scale"][1])
    1.0
    """
    if "point" not in ds.dims:
        return ds
    config: dict[str, Any] = json.loads(ds.attrs.get("config", "{}"))
    sweep = config.get("sweep", {})
    keys = swept_keys(ds)
    if not keys:
        raise ValueError("unstack_points: the results have no swept settings; "
                         "select a point with ds.isel(point=i) instead")
    if sweep.get("mode", "grid") != "grid":
        raise ValueError(f"unstack_points: sweep.mode = {sweep.get('mode')!r}: only a 'grid' "
                         "sweep has a grid; index a 'zip' sweep by its point axis")
    expected = 1
    for key in keys:
        expected *= len(sweep["parameters"][key])
    if ds.sizes["point"] != expected:
        raise ValueError(f"unstack_points: {ds.sizes['point']} points of a {expected}-point grid; "
                         "unstack the whole sweep")
    flat = ds.drop_vars([name for name in ("label",) if name in ds.coords])
    flat = flat.drop_vars("point")
    if len(keys) == 1:  # one axis: no multi-index to unstack, the setting becomes the dimension
        return flat.swap_dims(point=keys[0])
    return flat.set_index(point=keys).unstack("point")


def shift_response(ds: xr.Dataset, step: int, *, window: int = 50, smooth: int = 10,
                   tolerance: float = 0.25, proxy: str = "task_proxy") -> xr.Dataset:
    """How each point and replica answers a traffic shift at ``step``.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``maxvio_batch`` (and ``task_proxy`` for a learning run).
    step : int
        First step of the new regime (a ``traffic.regime_steps`` entry).
    window : int >= 1
        Steps before the shift that define the old level, and after it over
        which the proxy is averaged.
    smooth : int >= 1
        MaxVio_batch is averaged over ``smooth`` steps before it is compared
        (one batch is noisy).
    tolerance : float >= 0
        Rebalanced when the smoothed MaxVio_batch is within
        ``(1 + tolerance)`` times the old level.
    proxy : str
        The variable whose loss is measured: ``task_proxy``, or
        ``task_affinity`` (the reward without the rich-get-richer quality).

    Returns
    -------
    xarray.Dataset over (point, replica)
        ``maxvio_before`` (mean MaxVio_batch over the ``window`` steps
        before), ``maxvio_peak`` (largest smoothed MaxVio_batch in the
        ``window`` steps after), ``rebalance_steps`` (steps from the shift
        until the smoothed MaxVio_batch, the mean over ``[t, t + smooth)``,
        is back within tolerance: 0 if it never left; NaN if it does not
        return before the run ends), and when ``ds`` has the ``proxy``
        variable: ``proxy_before``, ``proxy_after`` (means over the two
        windows) and ``proxy_lost`` (their difference).

    Examples
    --------
    A synthetic run whose MaxVio jumps from 0.1 to 1 at step 20 and
    decays back by step 30:

    >>> import numpy as np, xarray as xr
    >>> m = np.full(60, 0.1); m[20:30] = np.linspace(1.0, 0.1, 10)
    >>> ds = xr.Dataset({"maxvio_batch": (("step", "point", "replica"), m[:, None, None])})
    >>> out = shift_response(ds, 20, window=20, smooth=1, tolerance=0.5)
    >>> round(float(out["maxvio_before"][0, 0]), 6), float(out["rebalance_steps"][0, 0])
    (0.1, 9.0)
    """
    steps = ds.sizes["step"]
    if not 1 <= step < steps:
        raise ValueError(f"step = {step}: must be in [1, {steps}) (a step of the run)")
    if window < 1 or smooth < 1 or tolerance < 0:
        raise ValueError(f"window = {window}, smooth = {smooth}, tolerance = {tolerance}: "
                         "window and smooth must be >= 1, tolerance >= 0")
    m = ds["maxvio_batch"].transpose("step", "point", "replica").values.astype(np.float64)
    before = m[max(0, step - window):step].mean(axis=0)
    # mean over [t, t + smooth) for every t from the shift on (shorter at the end)
    tail = m[step:]
    csum = np.concatenate([np.zeros((1,) + tail.shape[1:]), np.cumsum(tail, axis=0)])
    idx = np.arange(tail.shape[0])
    hi = np.minimum(idx + smooth, tail.shape[0])
    smoothed = (csum[hi] - csum[idx]) / (hi - idx)[:, None, None]
    ok = smoothed <= before * (1.0 + tolerance)
    first = np.argmax(ok, axis=0).astype(np.float64)
    first[~ok.any(axis=0)] = np.nan
    pr = ("point", "replica")
    out = {"maxvio_before": (pr, before),
           "maxvio_peak": (pr, smoothed[:window].max(axis=0)),
           "rebalance_steps": (pr, first)}
    if proxy in ds:
        values = ds[proxy].transpose("step", "point", "replica").values
        pb = values[max(0, step - window):step].mean(axis=0)
        pa = values[step:step + window].mean(axis=0)
        out.update(proxy_before=(pr, pb), proxy_after=(pr, pa), proxy_lost=(pr, pb - pa))
    coords = {name: ds.coords[name] for name in ("point", "replica", "label")
              if name in ds.coords}
    return xr.Dataset(out, coords=coords)
