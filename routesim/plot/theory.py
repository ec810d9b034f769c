"""Predictions beside measurements: limit cycles, leakage, computation-batch scaling.

:func:`limit_cycle_plot` draws a predicted amplitude against the rate as
lines and the simulated one as points; :func:`leakage_plot` draws leakage
against the sparsity ``K/N`` (bound, exact capacity, measured points);
:func:`compute_batch_plot` draws ``maxvio_compute`` against the tokens of a
computation batch with the ``1/sqrt(tokens)`` line of counting noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .data import line_table, replica_interval, steady_window
from .style import PlotResult, new_axes, paper_style, tidy_log_axes

__all__ = ["limit_cycle_plot", "leakage_plot", "compute_batch_plot"]


def limit_cycle_plot(predicted: xr.DataArray, simulated: xr.DataArray, *, x: str,
                     ax: Any = None, level: float = 0.95, logx: bool = True,
                     logy: bool = True, xlabel: str | None = None,
                     ylabel: str = "limit-cycle amplitude", columns: int = 1) -> PlotResult:
    """A predicted amplitude (lines) and the simulated one (points) against the rate.

    Parameters
    ----------
    predicted : xarray.DataArray
        Over ``x`` and optionally one more dimension (one line per value).
    simulated : xarray.DataArray
        The same dimensions, plus optionally ``replica`` (mean and
        Student-t interval drawn).
    x : str
        The rate's dimension.
    ax : matplotlib Axes, optional
    level : float
        Confidence level of the error bars.
    logx, logy : bool
        Logarithmic axes.
    xlabel : str, optional
        Defaults to ``x``.
    ylabel : str
        Label of the y axis.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines[label]`` is ``[prediction line, simulated error bars]``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> pred = xr.DataArray([0.1, 0.2], dims="u", coords={"u": [1e-3, 2e-3]})
    >>> sim = xr.DataArray([[0.11, 0.09], [0.21, 0.19]], dims=("u", "replica"),
    ...                    coords={"u": [1e-3, 2e-3]})
    >>> res = limit_cycle_plot(pred, sim, x="u")
    >>> (label, (line, bars)), = res.lines.items()
    >>> line.get_label(), line.get_ydata().tolist()
    ('theory', [0.1, 0.2])
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    if x not in predicted.dims or x not in simulated.dims:
        raise ValueError(f"x = {x!r}: must be a dimension of both predicted and simulated")
    if "replica" not in simulated.dims:
        simulated = simulated.expand_dims(replica=1)
    n_rep = simulated.sizes["replica"]
    mean, lo, hi = replica_interval(simulated, level)
    labels, p = line_table(predicted, (x,))
    _, m = line_table(mean.transpose(*predicted.dims), (x,))
    _, l_ = line_table(lo.transpose(*predicted.dims), (x,))
    _, h = line_table(hi.transpose(*predicted.dims), (x,))
    xs = np.asarray(predicted[x].values, float)
    with paper_style():
        fig, ax = new_axes(ax, columns)
        lines = {}
        for j, label in enumerate(labels):
            line, = ax.plot(xs, p.values[:, j], label=f"{label} (theory)" if label else "theory")
            err = np.vstack([m.values[:, j] - l_.values[:, j], h.values[:, j] - m.values[:, j]])
            bars = ax.errorbar(xs, m.values[:, j], yerr=err if n_rep > 1 else None, ls="none",
                               marker="o", color=line.get_color(), capsize=2,
                               label=f"{label} (simulated)" if label else "simulated")
            lines[label] = [line, bars]
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        tidy_log_axes(ax)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel)
        leg = ax.legend()
    what = (f"error bars: {level:.0%} t-interval of the mean over {n_rep} replicas"
            if n_rep > 1 else "")
    return PlotResult(fig, ax, lines, leg, what)


def leakage_plot(ratio: Any, bound: Any, exact: Any, *, measured: tuple | None = None,
                 causal: tuple | None = None, ax: Any = None, logy: bool = True,
                 exact_label: str = "exact capacity", columns: int = 1) -> PlotResult:
    """Leakage in bits per token against the sparsity ``K/N``.

    Parameters
    ----------
    ratio : array_like
        ``K/N`` of the bound and exact curves.
    bound : array_like
        ``K log2((1 - R)/R)`` at each ratio.
    exact : array_like
        The exact capacity at each ratio.
    measured : tuple, optional
        ``(ratio, bits, low, high)`` of measured points (Expert Choice), with
        their interval.
    causal : tuple, optional
        ``(ratio, bits)`` of a causal router's measurements (0 expected).
    ax : matplotlib Axes, optional
    logy : bool
        Logarithmic y axis (a causal router's zeros are drawn at the bottom).
    exact_label : str
        Legend entry of the exact curve.
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines`` keyed ``bound``, ``exact``, ``measured``, ``causal``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> r = np.array([0.125, 0.25])
    >>> res = leakage_plot(r, 2 * np.log2((1 - r) / r), [3.0, 1.5])
    >>> sorted(res.lines)
    ['bound', 'exact']
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    ratio = np.asarray(ratio, float)
    with paper_style():
        fig, ax = new_axes(ax, columns)
        lines = {"bound": ax.plot(ratio, np.asarray(bound, float),
                                  label=r"bound $K\log_2((1-R)/R)$"),
                 "exact": ax.plot(ratio, np.asarray(exact, float), ls="--", label=exact_label)}
        what = ""
        if measured is not None:
            r, bits, lo, hi = (np.asarray(v, float) for v in measured)
            err = np.vstack([bits - lo, hi - bits])
            lines["measured"] = [ax.errorbar(r, bits, yerr=err, ls="none", marker="o",
                                             capsize=2, label="measured, Expert Choice")]
            what = "error bars: bootstrap 95% interval of the measured entropy"
        if causal is not None:
            r, bits = (np.asarray(v, float) for v in causal)
            shown = bits
            if logy:
                floor = 0.5 * min(np.min(np.asarray(bound, float)[np.asarray(bound) > 0]),
                                  np.min(np.asarray(exact, float)))
                floor = min(floor, 1e-2)
                shown = np.maximum(bits, floor)
            lines["causal"] = ax.plot(r, shown, ls="none", marker="v",
                                      label="measured, causal token choice\n(0; drawn at the floor)" if logy
                                      else "measured, causal token choice")
        if logy:
            ax.set_yscale("log")
        ax.set_xscale("log")
        tidy_log_axes(ax)
        ax.set_xlabel("sparsity K/N")
        ax.set_ylabel("leakage (bits per token)")
        leg = ax.legend()
    return PlotResult(fig, ax, lines, leg, what)


def compute_batch_plot(ds: xr.Dataset, *, tokens_per_sequence: int | None = None,
                       window: int | None = None, level: float = 0.95,
                       reference: bool = True, ax: Any = None,
                       columns: int = 1) -> PlotResult:
    """Steady ``maxvio_compute`` against the tokens of a computation batch, per point.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``maxvio_compute`` (step, [point], [replica], compute_batch).
    tokens_per_sequence : int, optional
        Converts sequences to tokens; default ``seq_length`` from the stored config.
    window : int, optional
        Trailing steps averaged (:func:`~routesim.plot.data.steady_window`).
    level : float
        Confidence level of the error bars.
    reference : bool
        Draw ``c / sqrt(tokens)`` through the first line's smallest batch.
    ax : matplotlib Axes, optional
    columns : int
        Width of a new figure in columns (1 or 2).

    Returns
    -------
    PlotResult
        ``lines[label]`` per point, ``lines["1/sqrt(tokens)"]`` for the reference.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> mv = np.array([[[[0.4, 0.2]]]])                     # (step, point, replica, batch)
    >>> ds = xr.Dataset({"maxvio_compute": (("step", "point", "replica", "compute_batch"), mv)},
    ...                 coords={"compute_batch": [1, 4], "label": ("point", ["sign"])})
    >>> res = compute_batch_plot(ds, tokens_per_sequence=100)
    >>> res.lines["1/sqrt(tokens)"][0].get_ydata().tolist()
    [0.4, 0.2]
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    import json

    if "maxvio_compute" not in ds:
        raise ValueError("the results have no maxvio_compute: set "
                         "batch.computation_batch_sizes in the config")
    if tokens_per_sequence is None:
        cfg = json.loads(ds.attrs.get("config", "{}"))
        tokens_per_sequence = int(cfg.get("batch", {}).get("seq_length", 0)) or None
        if tokens_per_sequence is None:
            raise ValueError("tokens_per_sequence: not given and no stored config to read it")
    da = ds["maxvio_compute"]
    da = da.isel(step=steady_window(da.sizes["step"], window)).mean("step")
    if "replica" not in da.dims:
        da = da.expand_dims(replica=1)
    n_rep = da.sizes["replica"]
    mean, lo, hi = replica_interval(da, level)
    labels, m = line_table(mean, ("compute_batch",))
    _, l_ = line_table(lo.transpose(*mean.dims), ("compute_batch",))
    _, h = line_table(hi.transpose(*mean.dims), ("compute_batch",))
    tokens = np.asarray(ds["compute_batch"].values, float) * tokens_per_sequence
    with paper_style():
        fig, ax = new_axes(ax, columns)
        lines = {}
        for j, label in enumerate(labels):
            err = np.vstack([m.values[:, j] - l_.values[:, j], h.values[:, j] - m.values[:, j]])
            lines[label] = [ax.errorbar(tokens, m.values[:, j],
                                        yerr=err if n_rep > 1 else None, marker="o",
                                        capsize=2, label=label)]
        if reference:
            ref = m.values[0, 0] * np.sqrt(tokens[0] / tokens)
            lines["1/sqrt(tokens)"] = ax.plot(tokens, ref, ls=":", color="0.3",
                                              label=r"$\propto 1/\sqrt{\mathrm{tokens}}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        tidy_log_axes(ax)
        ax.set_xlabel("tokens per computation batch")
        ax.set_ylabel(r"MaxVio$_\mathrm{compute}$")
        leg = ax.legend()
    what = (f"error bars: {level:.0%} t-interval of the mean over {n_rep} replicas"
            if n_rep > 1 else "")
    return PlotResult(fig, ax, lines, leg, what)
