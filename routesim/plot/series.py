"""Quantities against step: a metric with replica bands, loads as a heat map, biases.

Every function takes a results Dataset (flat ``point`` axis or unstacked
grid), draws on a given or new axes, refuses unknown keywords (TypeError
naming the keyword) and bad values (ValueError naming the argument), and
returns a :class:`~routesim.plot.style.PlotResult`, except
:func:`maxvio_plot`, the command line's figure, which returns its Axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..analysis import stack_points
from .data import line_table, replica_interval
from .save import defaults
from .style import PlotResult, check_choice, new_axes, paper_style, tidy_log_axes

__all__ = ["maxvio_plot", "timeseries_plot", "load_heatmap", "bias_plot"]

_BANDS = ("minmax", "ci", "none")


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along axis 0 (shorter at the start)."""
    if window <= 1:
        return y
    cum = np.cumsum(np.insert(y, 0, 0.0, axis=0), axis=0)
    n = np.minimum(np.arange(1, y.shape[0] + 1), window)
    idx = np.arange(1, y.shape[0] + 1)
    return (cum[idx] - cum[idx - n]) / n.reshape((-1,) + (1,) * (y.ndim - 1))


def _pretty(variable: str) -> str:
    return variable.replace("maxvio", "MaxVio")


def maxvio_plot(ds: xr.Dataset, variable: str = "maxvio_batch", ax: Any = None,
                smooth: int | None = None, log: bool = True) -> Any:
    """Plot a per-step MaxVio variable against step, one line per point.

    Lines are the mean over replicas, smoothed over ``smooth`` trailing
    steps; the band spans the replicas' min and max. With several layers
    (``model.num_layers``) each step shows the median over layers. (The
    command line's figure; :func:`timeseries_plot` is the general form.)

    Parameters
    ----------
    ds : xarray.Dataset
        As returned by :func:`routesim.simulate`, or with the sweep's
        settings as dimensions (:func:`routesim.analysis.unstack_points`):
        one line per combination of settings.
    variable : str
        ``maxvio_batch`` or ``maxvio_global``.
    ax : matplotlib Axes, optional
    smooth : int, optional
        Trailing smoothing window in steps (default ``plot.smooth_steps``).
    log : bool
        Logarithmic y axis.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    One point, two replicas: the line is the replicas' mean at each step.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> mv = np.array([[[0.2, 0.4]], [[0.1, 0.3]], [[0.05, 0.15]]])  # (step, point, replica)
    >>> ds = xr.Dataset({"maxvio_batch": (("step", "point", "replica"), mv)},
    ...                 coords={"step": [0, 1, 2], "label": ("point", ["sign"])})
    >>> ax = maxvio_plot(ds, smooth=1)
    >>> ax.lines[0].get_label(), np.round(ax.lines[0].get_ydata(), 12).tolist()
    ('sign', [0.3, 0.2, 0.1])
    >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=defaults["plot.figsize"])
    smooth = defaults["plot.smooth_steps"] if smooth is None else smooth
    ds = stack_points(ds)
    data = ds[variable]
    if "layer" in data.dims:  # several layers: their median at each step
        data = data.median("layer")
    values = data.transpose("step", "point", "replica").values
    steps = ds["step"].values
    labels = ds["label"].values if "label" in ds.coords else ds["point"].values
    for j, label in enumerate(labels):
        y = _smooth(values[:, j, :], smooth)
        line, = ax.plot(steps, y.mean(axis=1), label=str(label), lw=1.4)
        if y.shape[1] > 1:
            ax.fill_between(steps, y.min(axis=1), y.max(axis=1), color=line.get_color(),
                            alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(_pretty(variable))
    n, k = ds.attrs.get("num_experts", "?"), ds.attrs.get("topk", "?")
    ax.set_title(f"{_pretty(variable)}: N={n}, K={k}, "
                 f"T={ds.attrs.get('tokens_per_step', '?')} tokens/step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def timeseries_plot(ds: xr.Dataset, variable: str = "maxvio_batch", *, ax: Any = None,
                    band: str = "minmax", level: float = 0.95, smooth: int = 1,
                    log: bool = False, ylabel: str | None = None, legend: bool = True,
                    columns: int = 1) -> PlotResult:
    """A per-step metric against step: the replicas' mean, one line per point, with a band.

    Parameters
    ----------
    ds : xarray.Dataset
        Results, flat or unstacked; every dimension besides ``step`` and
        ``replica`` becomes a line.
    variable : str
        A per-step variable.
    ax : matplotlib Axes, optional
    band : str
        ``minmax`` (the replicas' range), ``ci`` (Student-t interval of the
        replicas' mean at ``level``) or ``none``; nothing is shaded for one replica.
    level : float
        Confidence level of ``band = "ci"``.
    smooth : int
        Trailing moving average over this many steps, applied per replica first.
    log : bool
        Logarithmic y axis.
    ylabel : str, optional
        Defaults to the variable's name.
    legend : bool
        Draw a legend.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines[label]`` is ``[line]`` or ``[line, band]``; ``band`` says what
        is shaded.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> mv = np.array([[[0.2, 0.4]], [[0.1, 0.3]]])     # (step, point, replica)
    >>> ds = xr.Dataset({"maxvio_batch": (("step", "point", "replica"), mv)},
    ...                 coords={"step": [0, 1], "label": ("point", ["sign"])})
    >>> res = timeseries_plot(ds)
    >>> res.lines["sign"][0].get_ydata().round(12).tolist(), res.band
    ([0.3, 0.2], 'band: min to max over 2 replicas')
    >>> timeseries_plot(ds, colour="red")
    Traceback (most recent call last):
    ...
    TypeError: timeseries_plot() got an unexpected keyword argument 'colour'
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    check_choice("band", band, _BANDS)
    if variable not in ds or "step" not in ds[variable].dims:
        raise ValueError(f"variable = {variable!r}: not a per-step variable of these results")
    if int(smooth) < 1:
        raise ValueError(f"smooth = {smooth!r}: must be a whole number of steps >= 1")
    da = ds[variable]
    if "replica" not in da.dims:
        da = da.expand_dims(replica=1)
    labels, flat = line_table(da, ("step", "replica"))
    y_SRL = _smooth(flat.values.astype(float), int(smooth))
    steps = ds["step"].values if "step" in ds.coords else np.arange(da.sizes["step"])
    n_rep = y_SRL.shape[1]
    what = ""
    with paper_style():
        fig, ax = new_axes(ax, columns)
        lines: dict = {}
        for j, label in enumerate(labels):
            y_SR = y_SRL[:, :, j]
            line, = ax.plot(steps, y_SR.mean(axis=1), label=label)
            lines[label] = [line]
            if n_rep > 1 and band != "none":
                if band == "minmax":
                    lo, hi = y_SR.min(axis=1), y_SR.max(axis=1)
                    what = f"band: min to max over {n_rep} replicas"
                else:
                    m, lo, hi = (np.asarray(x) for x in replica_interval(
                        xr.DataArray(y_SR, dims=("step", "replica")), level))
                    what = f"band: {level:.0%} t-interval of the mean over {n_rep} replicas"
                lines[label].append(ax.fill_between(steps, lo, hi, color=line.get_color(),
                                                    alpha=0.25, lw=0))
        if log:
            ax.set_yscale("log")
        tidy_log_axes(ax)
        ax.set_xlabel("step (global batches)")
        ax.set_ylabel(ylabel or _pretty(variable))
        leg = ax.legend() if legend and len(labels) > 1 else None
    return PlotResult(fig, ax, lines, leg, what)


def _one_run(ds: xr.Dataset, variable: str, point: int | str, replica: int) -> xr.DataArray:
    if variable not in ds:
        raise ValueError(f"the results have no {variable!r} (record it with the exact engine)")
    da = ds[variable]
    if "point" in da.dims:
        if isinstance(point, str):
            labels = [str(x) for x in ds["label"].values]
            if point not in labels:
                raise ValueError(f"point = {point!r}: not a label of these results "
                                 f"({', '.join(labels)})")
            point = labels.index(point)
        if not 0 <= point < da.sizes["point"]:
            raise ValueError(f"point = {point!r}: must be in 0 .. {da.sizes['point'] - 1}")
        da = da.isel(point=point)
    if "replica" in da.dims:
        if not 0 <= replica < da.sizes["replica"]:
            raise ValueError(f"replica = {replica!r}: must be in 0 .. {da.sizes['replica'] - 1}")
        da = da.isel(replica=replica)
    extra = [d for d in da.dims if d not in ("step", "expert")]
    if extra:
        raise ValueError(f"select one run first: dimensions {extra} remain "
                         "(use ds.sel/isel on the grid's axes)")
    return da.transpose("step", "expert")


def load_heatmap(ds: xr.Dataset, *, point: int | str = 0, replica: int = 0, ax: Any = None,
                 limit: float | None = None, colorbar: bool = True,
                 columns: int = 1) -> PlotResult:
    """The relative load error ``c_i / mean(c) - 1`` of one run over steps x experts.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``expert_load`` (step, [point], [replica], expert).
    point : int or str
        Point index or label (flat results).
    replica : int
    ax : matplotlib Axes, optional
    limit : float, optional
        Colour scale ``[-limit, limit]``; None: the largest absolute error.
    colorbar : bool
        Draw a colour bar.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines["loads"]`` is ``[image]`` (and the colour bar).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> load = np.array([[3, 1], [2, 2]])[:, None, None, :]   # (step, point, replica, expert)
    >>> ds = xr.Dataset({"expert_load": (("step", "point", "replica", "expert"), load)})
    >>> res = load_heatmap(ds)
    >>> res.lines["loads"][0].get_array().tolist()   # expert on y, step on x
    [[0.5, 0.0], [-0.5, 0.0]]
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    da = _one_run(ds, "expert_load", point, replica).astype(float)
    err_SE = (da / da.mean("expert") - 1.0).values
    lim = float(np.abs(err_SE).max()) if limit is None else float(limit)
    if not lim > 0:
        lim = 1.0
    steps = ds["step"].values if "step" in ds.coords else np.arange(err_SE.shape[0])
    with paper_style():
        fig, ax = new_axes(ax, columns, 0.55)
        img = ax.imshow(err_SE.T, aspect="auto", origin="lower", cmap="RdBu_r",
                        vmin=-lim, vmax=lim, interpolation="nearest",
                        extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, err_SE.shape[1] - 0.5))
        ax.set_xlabel("step (global batches)")
        ax.set_ylabel("expert")
        ax.grid(False)
        artists = [img]
        if colorbar:
            cb = fig.colorbar(img, ax=ax)
            cb.set_label("load / mean load - 1")
            artists.append(cb)
    return PlotResult(fig, ax, {"loads": artists}, None, "")


def bias_plot(ds: xr.Dataset, *, point: int | str = 0, replica: int = 0, ax: Any = None,
              centred: bool = True, colorbar: bool = True, columns: int = 1) -> PlotResult:
    """Each expert's bias against step for one run, coloured by expert index.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``bias`` (step, [point], [replica], expert).
    point : int or str
        Point index or label (flat results).
    replica : int
    ax : matplotlib Axes, optional
    centred : bool
        Subtract the mean over experts at each step (what selection sees).
    colorbar : bool
        Draw a colour bar of expert indices.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines["expert i"]`` is ``[line]``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> bias = np.array([[0.0, 0.0], [0.1, -0.1]])[:, None, None, :]
    >>> ds = xr.Dataset({"bias": (("step", "point", "replica", "expert"), bias)})
    >>> res = bias_plot(ds)
    >>> sorted(res.lines), res.lines["expert 0"][0].get_ydata().tolist()
    (['expert 0', 'expert 1'], [0.0, 0.1])
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    import matplotlib as mpl

    da = _one_run(ds, "bias", point, replica).astype(float)
    if centred:
        da = da - da.mean("expert")
    b_SE = da.values
    n = b_SE.shape[1]
    steps = ds["step"].values if "step" in ds.coords else np.arange(b_SE.shape[0])
    cmap = mpl.colormaps["viridis"]
    with paper_style():
        fig, ax = new_axes(ax, columns, 0.55)
        lines = {}
        for i in range(n):
            line, = ax.plot(steps, b_SE[:, i], color=cmap(i / max(n - 1, 1)), lw=0.7)
            lines[f"expert {i}"] = [line]
        ax.set_xlabel("step (global batches)")
        ax.set_ylabel("bias - mean bias" if centred else "bias")
        if colorbar:
            sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, n - 1), cmap=cmap)
            fig.colorbar(sm, ax=ax).set_label("expert")
    return PlotResult(fig, ax, lines, None, "")
