"""Reading results: a sweep's flat ``point`` axis as the grid's own dimensions.

A results Dataset keeps every configuration on one ``point`` axis, with each
swept setting as a coordinate along it (``controller.bias_update_rate``,
``traffic.zipf_exponent``, ...). :func:`unstack_points` turns a ``grid``
sweep into one dimension per swept setting, the form xarray's ``sel`` and
``plot`` expect; :func:`swept_keys` names those settings;
:func:`stack_points` goes back to one ``point`` axis.

:func:`steady` finds, per point, the step after which a metric has settled
and returns its mean over the settled window with a confidence interval
across replicas. It accepts a flat or an unstacked Dataset.
:func:`shift_response` measures how a run answers a change of its traffic at
a given step (a regime switch): the time to rebalance and the task proxy
lost.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from .exceptions import ConfigError

__all__ = ["swept_keys", "unstack_points", "stack_points", "steady", "CRITERION",
           "shift_response"]

#: Dimensions of a results Dataset that are not sweep points.
_NOT_POINTS = ("step", "replica", "expert", "compute_batch", "num_assigned", "position")

#: The settling criterion of :func:`steady`, as it is stated in its results.
CRITERION = ("blocks of `window` steps counted back from the last step; a replica has settled "
             "from the first step of the earliest block after which every block mean lies within "
             "rtol * |F| + atol + z * sd * sqrt(2 / w) of F, the mean of the final block (sd: "
             "the standard deviation of the metric within the final block, w: samples per "
             "block); a point settles at the latest step of its replicas and counts as settled "
             "when at least two blocks (the final one and one more) lie after it")


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


def stack_points(ds: xr.Dataset) -> xr.Dataset:
    """Put the swept dimensions of an unstacked Dataset back on one ``point`` axis.

    The inverse of :func:`unstack_points` (up to the order of the points):
    each point gets a ``label`` built from its settings, and the settings
    stay as coordinates along ``point``.

    Parameters
    ----------
    ds : xarray.Dataset
        Flat (returned unchanged) or unstacked results.

    Returns
    -------
    xarray.Dataset
        With a ``point`` dimension.

    Examples
    --------
    >>> from routesim import config_from_dict, simulate
    >>> cfg = config_from_dict({"run": {"steps": 2}, "batch": {"num_sequences": 1, "seq_length": 16},
    ...                         "router": {"num_experts": 4, "topk": 1},
    ...                         "sweep": {"controller.bias_update_rate": [1e-3, 1e-2],
    ...                                   "traffic.noise_scale": [0.5, 1.0]}})
    >>> ds = simulate(cfg, progress=False)
    >>> back = stack_points(unstack_points(ds))
    >>> back["label"].values.tolist() == ds["label"].values.tolist()
    True
    >>> bool((back["expert_load"] == ds["expert_load"].values).all())
    True
    """
    if "point" in ds.dims:
        return ds
    dims = [d for d in ds.dims if d not in _NOT_POINTS]
    if not dims:
        return ds.expand_dims(point=[0]).assign_coords(label=("point", ["0"]))
    flat = ds.stack(point=dims).reset_index("point")
    labels = [", ".join(f"{str(d).rsplit('.', 1)[-1]}={flat[d].values[i].item()}"
                        for d in dims) for i in range(flat.sizes["point"])]
    flat = flat.assign_coords(point=np.arange(flat.sizes["point"]), label=("point", labels))
    return flat.transpose(*[d for d in ("step", "point", "replica") if d in flat.dims], ...)


def _stride(steps: np.ndarray) -> int:
    """Steps between recorded samples (``run.record_every``); refused when uneven."""
    if steps.size < 2:
        return 1
    gaps = np.diff(steps)
    if not np.all(gaps == gaps[0]) or gaps[0] < 1:
        raise ConfigError("steady: the step coordinate must be evenly spaced "
                         f"(got gaps {sorted(set(gaps.tolist()))[:3]})")
    return int(gaps[0])


def steady(ds: xr.Dataset, variable: str = "maxvio_batch", *, window: int | None = None,
           rtol: float = 0.05, atol: float = 0.0, z: float = 3.0,
           confidence: float = 0.95) -> xr.Dataset:
    """Per point: the step a metric settles at, and its mean over the settled window.

    The criterion (:data:`CRITERION`): the recorded steps are cut into
    blocks of ``window`` steps counted back from the last step (a shorter
    remainder at the start is never part of the settled window). With ``F``
    the mean of the final block and ``sd`` the metric's standard deviation
    within it, a block is *in the band* when its mean lies within
    ``rtol * |F| + atol + z * sd * sqrt(2 / w)`` of ``F`` (``w`` samples per
    block; the last term is ``z`` standard errors of a difference of two
    block means of independent noise). A replica settles at the first step
    of the earliest block from which every block is in the band; a point at
    the latest step of its replicas. A point *settled* when at least two
    blocks (the final one and one more) lie from there to the end;
    otherwise its mean and interval are NaN and ``settled`` is False.

    The steady value is each replica's mean over the point's settled window
    (``settled_step`` to the last step), averaged over replicas, with a
    Student-t interval across replicas (NaN with one replica).

    Parameters
    ----------
    ds : xarray.Dataset
        Results, flat (``point``) or unstacked (:func:`unstack_points`),
        every step or thinned by ``run.record_every``.
    variable : str
        A per-step variable (dimension ``step``).
    window : int, optional
        Block length in steps, a multiple of the recorded step spacing
        (default: a tenth of the recorded steps, at least one sample).
    rtol, atol : float >= 0
        Relative and absolute width of the band.
    z : float >= 0
        Standard errors of noise added to the band.
    confidence : float in (0, 1)
        Of the interval.

    Returns
    -------
    xarray.Dataset
        Over the point dimensions of ``ds`` (and any other non-step,
        non-replica dimension of the variable): ``mean``, ``ci_low``,
        ``ci_high``, ``settled_step`` (-1 where the final block holds NaN)
        and ``settled`` (bool). The attributes name the variable, the
        window, the last step, the tolerances and the criterion.

    Raises
    ------
    ConfigError
        (a ``ValueError``) For a variable without a ``step`` dimension, or a
        bad window, tolerance or confidence (one line naming it).

    Examples
    --------
    A metric at 3.0 for 30 steps, then at 1.0; two replicas, blocks of
    10 steps: it settles at step 30, and its steady mean is 1.0:

    >>> import numpy as np
    >>> x = np.where(np.arange(100) < 30, 3.0, 1.0)[:, None, None] * np.ones((1, 1, 2))
    >>> ds = xr.Dataset({"cv": (("step", "point", "replica"), x)}, coords={"step": np.arange(100)})
    >>> st = steady(ds, "cv", window=10)
    >>> st["settled_step"].values.tolist(), st["mean"].values.tolist(), st["settled"].values.tolist()
    ([30], [1.0], [True])
    """
    if variable not in ds or "step" not in ds[variable].dims:
        raise ConfigError(f"steady: variable = {variable!r}: must be a variable with a 'step' "
                         "dimension")
    for name, value, ok in (("rtol", rtol, rtol >= 0), ("atol", atol, atol >= 0),
                            ("z", z, z >= 0), ("confidence", confidence, 0 < confidence < 1)):
        if not ok:
            raise ConfigError(f"steady: {name} = {value!r}: must be "
                             + ("in (0, 1)" if name == "confidence" else ">= 0"))
    da = ds[variable]
    if "replica" not in da.dims:
        da = da.expand_dims(replica=1)
    steps = np.asarray(ds["step"].values)
    stride = _stride(steps)
    n = steps.size
    if window is None:
        window = stride * max(1, n // 10)
    if window < stride or window % stride or window // stride > n:
        raise ConfigError(f"steady: window = {window!r}: must be a multiple of the recorded "
                         f"step spacing ({stride}) of at most {n * stride} steps")
    w = window // stride
    others = [d for d in da.dims if d not in ("step", "replica")]
    x = da.transpose(*others, "replica", "step").values.astype(np.float64)  # (..., R, n)
    nb = n // w
    lead = n - nb * w
    blocks = x[..., lead:].reshape(x.shape[:-1] + (nb, w))
    means = blocks.mean(axis=-1)                                          # (..., R, nb)
    final = means[..., -1:]
    sd = blocks[..., -1, :].std(axis=-1, ddof=1 if w > 1 else 0)[..., None]
    band = rtol * np.abs(final) + atol + z * sd * np.sqrt(2.0 / w)
    with np.errstate(invalid="ignore"):
        inside = np.abs(means - final) <= band
    # first block of the trailing run of blocks in the band (nb: none, the final block is NaN)
    trailing = np.flip(np.cumprod(np.flip(inside, axis=-1), axis=-1), axis=-1).astype(bool)
    first_block = nb - trailing.sum(axis=-1)                              # (..., R)
    point_block = first_block.max(axis=-1)                                # (...)
    start = lead + point_block * w                                        # sample index
    settled = (nb - point_block) >= 2
    defined = point_block < nb
    settled_step = np.where(defined, steps[np.minimum(start, n - 1)], -1)
    in_window = np.arange(n) >= start[..., None, None]                    # (..., 1, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_replica = np.where(in_window, x, 0.0).sum(-1) / np.maximum(in_window.sum(-1), 1)
    replicas = x.shape[-2]
    mean = per_replica.mean(axis=-1)
    if replicas > 1:
        from scipy import stats

        scale = per_replica.std(axis=-1, ddof=1) / np.sqrt(replicas)
        half = stats.t.ppf(0.5 + confidence / 2, replicas - 1) * scale
        low, high = mean - half, mean + half
    else:
        low = high = np.full_like(mean, np.nan)
    mean, low, high = (np.where(settled, v, np.nan) for v in (mean, low, high))
    coords = {k: c for k, c in da.coords.items() if set(c.dims) <= set(others)}
    units = da.attrs.get("units", "1")
    name = da.attrs.get("long_name", variable)
    out = xr.Dataset({
        "mean": (others, mean, {"long_name": f"steady mean of {name}", "units": units}),
        "ci_low": (others, low, {"long_name": f"lower {confidence:.0%} confidence limit of the "
                                              "steady mean", "units": units}),
        "ci_high": (others, high, {"long_name": f"upper {confidence:.0%} confidence limit of the "
                                                "steady mean", "units": units}),
        "settled_step": (others, settled_step.astype(np.int64),
                         {"long_name": "first step of the settled window", "units": "steps"}),
        "settled": (others, settled, {"long_name": "the metric settled", "units": "1"}),
    }, coords=coords, attrs={
        "variable": variable, "window": int(window), "last_step": int(steps[-1]),
        "rtol": float(rtol), "atol": float(atol), "z": float(z),
        "confidence": float(confidence), "replicas": int(replicas), "criterion": CRITERION})
    return out


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
