"""Steady metrics against a swept setting, and stability maps over two settings.

:func:`sweep_plot` draws a metric's steady value (mean over a trailing
window, then over replicas, with a Student-t interval) against one swept
axis, one line per value of the others. :func:`stability_map` colours a
two-setting grid of simulated outcomes and draws the theory's boundary over
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .data import grid_view, line_table, replica_interval, steady_values
from .style import PlotResult, new_axes, paper_style, tidy_log_axes

__all__ = ["sweep_plot", "stability_map"]


def _flat_groups(vals: xr.DataArray, x: str, hue: str | None) -> list[tuple[str, np.ndarray]]:
    """(label, point indices) of each line of a flat (``point``) sweep."""
    if hue is None:
        return [("", np.arange(vals.sizes["point"]))]
    keys = [str(v) for v in vals[hue].values]
    seen = list(dict.fromkeys(keys))
    short = hue.split(".")[-1]
    return [(f"{short}={k}", np.flatnonzero(np.array(keys) == k)) for k in seen]


def sweep_plot(ds: xr.Dataset, variable: str, x: str, *, hue: str | None = None,
               window: int | None = None, level: float = 0.95, ax: Any = None,
               logx: bool = False, logy: bool = False, xlabel: str | None = None,
               ylabel: str | None = None, legend: bool = True, columns: int = 1) -> PlotResult:
    """A metric's steady value against a swept setting, one line per other setting.

    Parameters
    ----------
    ds : xarray.Dataset
        Results of a sweep, flat or unstacked. For a grid, every swept axis
        besides ``x`` becomes a line; for a ``zip`` sweep, ``hue`` (a
        coordinate along ``point``) splits the points into lines.
    variable : str
        A per-step variable.
    x : str
        The swept setting on the x axis (``controller.bias_update_rate``).
    hue : str, optional
        For a ``zip`` sweep, the setting that tells the lines apart.
    window : int, optional
        Trailing steps averaged (:func:`~routesim.plot.data.steady_window`).
    level : float
        Confidence level of the error bars (Student t over replicas).
    ax : matplotlib Axes, optional
    logx, logy : bool
        Logarithmic axes.
    xlabel, ylabel : str, optional
        Axis labels (default: the setting's and the variable's names).
    legend : bool
        Draw a legend when there is more than one line.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines[label]`` is ``[errorbar container]``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from routesim import config_from_dict, simulate
    >>> cfg = config_from_dict({"run": {"steps": 4, "replicas": 2},
    ...     "batch": {"num_sequences": 1, "seq_length": 32}, "router": {"num_experts": 4, "topk": 1},
    ...     "sweep": {"controller.bias_update_rate": [1e-3, 1e-2], "traffic.noise_scale": [0.5, 1.0]}})
    >>> res = sweep_plot(simulate(cfg, progress=False), "maxvio_batch", "controller.bias_update_rate")
    >>> sorted(res.lines), res.band
    (['noise_scale=0.5', 'noise_scale=1'], 'error bars: 95% t-interval of the mean over 2 replicas')
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    grid = grid_view(ds)
    if x not in grid.coords:
        raise ValueError(f"x = {x!r}: not a swept setting of these results "
                         f"(have {', '.join(sorted(map(str, grid.coords)))})")
    if hue is not None and hue not in grid.coords:
        raise ValueError(f"hue = {hue!r}: not a coordinate of these results")
    vals = steady_values(grid, variable, window)
    if "replica" not in vals.dims:
        vals = vals.expand_dims(replica=1)
    n_rep = vals.sizes["replica"]
    mean, lo, hi = replica_interval(vals, level)
    series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    if x in vals.dims:
        labels, m = line_table(mean, (x,))
        _, l_ = line_table(lo, (x,))
        _, h = line_table(hi, (x,))
        xs = grid[x].values
        for j, label in enumerate(labels):
            series.append((label, xs, m.values[:, j], l_.values[:, j], h.values[:, j]))
    else:
        for label, idx in _flat_groups(vals, x, hue):
            xs = vals[x].values[idx].astype(float)
            order = np.argsort(xs)
            pick = idx[order]
            series.append((label, xs[order], mean.values[pick], lo.values[pick], hi.values[pick]))
    with paper_style():
        fig, ax = new_axes(ax, columns)
        lines = {}
        for label, xs, m, l_, h in series:
            err = np.vstack([m - l_, h - m])
            cont = ax.errorbar(xs, m, yerr=err if n_rep > 1 else None, marker="o", capsize=2,
                               label=label or None)
            lines[label] = [cont]
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        tidy_log_axes(ax)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel or f"steady {variable.replace('maxvio', 'MaxVio')}")
        leg = ax.legend() if legend and len(series) > 1 else None
    what = (f"error bars: {level:.0%} t-interval of the mean over {n_rep} replicas"
            if n_rep > 1 else "")
    return PlotResult(fig, ax, lines, leg, what)


def stability_map(outcome: xr.DataArray, *, boundary: tuple[Any, Any] | None = None,
                  ax: Any = None, logx: bool = True, log_color: bool = True,
                  colorbar_label: str | None = None, boundary_label: str = "theory boundary",
                  columns: int = 1) -> PlotResult:
    """Simulated outcomes over two settings as colours, with the theory's boundary on top.

    Parameters
    ----------
    outcome : xarray.DataArray
        Two-dimensional ``(y, x)``, one value per grid cell (such as the
        steady MaxVio), with coordinates on both dimensions.
    boundary : tuple of array_like, optional
        ``(x_values, y_values)`` of the predicted boundary, drawn as a line.
    ax : matplotlib Axes, optional
    logx : bool
        Logarithmic x axis (cells centred on the log of the coordinates).
    log_color : bool
        Logarithmic colour scale.
    colorbar_label : str, optional
        Defaults to the outcome's name.
    boundary_label : str
        Legend entry of the boundary.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines["outcome"]`` is ``[mesh, colour bar]``; ``lines[boundary_label]``
        is ``[line]``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> out = xr.DataArray([[0.1, 1.0], [0.2, 2.0]], dims=("momentum", "rate"),
    ...                    coords={"momentum": [0.0, 0.5], "rate": [0.1, 1.0]}, name="MaxVio")
    >>> res = stability_map(out, boundary=([0.5, 0.9], [0.0, 0.5]))
    >>> res.lines["theory boundary"][0].get_xdata().tolist(), res.axes.get_xlabel()
    ([0.5, 0.9], 'rate')
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    import matplotlib as mpl

    if outcome.ndim != 2:
        raise ValueError(f"outcome: must be two-dimensional (y, x), has dims {outcome.dims}")
    ydim, xdim = outcome.dims
    xs = np.asarray(outcome[xdim].values, float)
    ys = np.asarray(outcome[ydim].values, float)

    def edges(v: np.ndarray, log: bool) -> np.ndarray:
        w = np.log(v) if log else v
        if w.size == 1:
            mid = np.array([w[0] - 0.5, w[0] + 0.5])
        else:
            inner = (w[1:] + w[:-1]) / 2
            mid = np.concatenate([[2 * w[0] - inner[0]], inner, [2 * w[-1] - inner[-1]]])
        return np.exp(mid) if log else mid

    z = np.asarray(outcome.values, float)
    finite = z[np.isfinite(z) & (z > 0)] if log_color else z[np.isfinite(z)]
    norm = None
    if log_color and finite.size:
        norm = mpl.colors.LogNorm(vmin=finite.min(), vmax=finite.max())
    with paper_style():
        fig, ax = new_axes(ax, columns)
        mesh = ax.pcolormesh(edges(xs, logx), edges(ys, False), z, cmap="magma", norm=norm,
                             shading="flat")
        cb = fig.colorbar(mesh, ax=ax)
        cb.set_label(colorbar_label or str(outcome.name or "outcome"))
        if norm is not None:
            tidy_log_axes(cb.ax)
        lines = {"outcome": [mesh, cb]}
        leg = None
        if boundary is not None:
            line, = ax.plot(np.asarray(boundary[0], float), np.asarray(boundary[1], float),
                            color="cyan", lw=1.6, label=boundary_label)
            lines[boundary_label] = [line]
            leg = ax.legend(loc="upper left", frameon=True)
        if logx:
            ax.set_xscale("log")
        ax.set_xlim(edges(xs, logx)[[0, -1]])
        ax.set_ylim(edges(ys, False)[[0, -1]])
        ax.set_xlabel(xdim)
        ax.set_ylabel(ydim)
        ax.grid(False)
    return PlotResult(fig, ax, lines, leg, "")
