"""Figures of simulation results (matplotlib; the engine never imports this).

Each function draws on a given or new Axes and returns it; :func:`save_figure`
writes PNG and PDF side by side, each atomically (temporary sibling, then
``os.replace``), so an interrupt never leaves a truncated figure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .analysis import stack_points

__all__ = ["maxvio_plot", "save_figure", "defaults"]

#: Display settings (plot only; simulation parameters live in the config).
defaults: dict[str, Any] = {
    "plot.smooth_steps": 10,
    "plot.figsize": (6.4, 4.0),
    "plot.dpi": 150,
}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along axis 0 (shorter at the start)."""
    if window <= 1:
        return y
    cum = np.cumsum(np.insert(y, 0, 0.0, axis=0), axis=0)
    n = np.minimum(np.arange(1, y.shape[0] + 1), window)
    idx = np.arange(1, y.shape[0] + 1)
    return (cum[idx] - cum[idx - n]) / n.reshape((-1,) + (1,) * (y.ndim - 1))


def maxvio_plot(ds: xr.Dataset, variable: str = "maxvio_batch", ax: Any = None,
                smooth: int | None = None, log: bool = True) -> Any:
    """Plot a per-step MaxVio variable against step, one line per point.

    Lines are the mean over replicas, smoothed over ``smooth`` trailing
    steps; the band spans the replicas' min and max.

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
    >>> import numpy as np
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
    values = ds[variable].transpose("step", "point", "replica").values
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
    ax.set_ylabel(variable.replace("maxvio", "MaxVio"))
    n, k = ds.attrs.get("num_experts", "?"), ds.attrs.get("topk", "?")
    ax.set_title(f"{variable.replace('maxvio', 'MaxVio')}: N={n}, K={k}, "
                 f"T={ds.attrs.get('tokens_per_step', '?')} tokens/step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def save_figure(fig: Any, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf``; returns the paths.

    Examples
    --------
    >>> import tempfile
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, _ = plt.subplots()
    >>> with tempfile.TemporaryDirectory() as d:
    ...     paths = save_figure(fig, Path(d) / "figs" / "maxvio")
    ...     found = sorted(p.name for p in paths if p.stat().st_size > 0)
    >>> found
    ['maxvio.pdf', 'maxvio.png']
    >>> plt.close(fig)
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        # a private directory, so the file is created with the usual permissions
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", dir=p.parent))
        try:
            fig.savefig(tmp_dir / p.name, dpi=defaults["plot.dpi"], bbox_inches="tight")
            os.replace(tmp_dir / p.name, p)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return paths
