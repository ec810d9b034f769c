"""Reading results: a sweep's flat ``point`` axis as the grid's own dimensions.

A results Dataset keeps every configuration on one ``point`` axis, with each
swept setting as a coordinate along it (``controller.bias_update_rate``,
``traffic.zipf_exponent``, ...). :func:`unstack_points` turns a ``grid``
sweep into one dimension per swept setting, the form xarray's ``sel`` and
``plot`` expect; :func:`swept_keys` names those settings.
"""

from __future__ import annotations

import json
from typing import Any

import xarray as xr

__all__ = ["swept_keys", "unstack_points"]


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
