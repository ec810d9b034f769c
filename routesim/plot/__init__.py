"""Figures of simulation results and of the theory (matplotlib; the engines never import this).

Every plot function takes a results Dataset (flat ``point`` axis or a grid
unstacked by :func:`routesim.analysis.unstack_points`) or the analysis's
arrays, draws on a given or new axes, refuses unknown keywords, and returns a
:class:`PlotResult` (figure, axes, artists by label, legend, and what a band
shows). :func:`save_figure` writes PNG and PDF (TrueType fonts) atomically.

Modules
-------
style    PlotResult, paper sizes (one and two columns), the paper rc settings
data     grid axes, the steady window, replica intervals
series   metric against step with replica bands, load heat map, bias trajectories
sweeps   steady metric against a swept setting; stability maps
theory   limit-cycle amplitude, leakage against K/N, computation-batch scaling
save     save_figure, display defaults
"""

from .data import grid_view, line_table, replica_interval, steady_values, steady_window
from .save import defaults, save_figure
from .series import bias_plot, load_heatmap, maxvio_plot, timeseries_plot
from .style import (COLUMN_WIDTH, PAPER_RC, TEXT_WIDTH, PlotResult, figure_size, new_axes,
                    paper_style, tidy_log_axes, use_paper_style)
from .sweeps import stability_map, sweep_plot
from .theory import compute_batch_plot, leakage_plot, limit_cycle_plot

__all__ = [
    "COLUMN_WIDTH", "PAPER_RC", "TEXT_WIDTH", "PlotResult", "bias_plot", "compute_batch_plot",
    "defaults", "figure_size", "grid_view", "leakage_plot", "limit_cycle_plot", "line_table",
    "load_heatmap", "maxvio_plot", "new_axes", "paper_style", "replica_interval",
    "save_figure", "stability_map", "steady_values", "steady_window", "sweep_plot",
    "tidy_log_axes", "timeseries_plot", "use_paper_style",
]
