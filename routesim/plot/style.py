"""What every plot function returns, and the sizes and fonts of a paper's figures.

Each plot function of :mod:`routesim.plot` returns a :class:`PlotResult`
(the figure, its axes, the artists by label, the legend, and a sentence
saying what a shaded band is), as python-control's plot functions return a
``ControlPlot``. Sizes follow a two-column paper: :data:`COLUMN_WIDTH` for
one column, :data:`TEXT_WIDTH` for both; :data:`PAPER_RC` sets 8-point type
and TrueType fonts in PDF (no Type 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np

__all__ = ["PlotResult", "COLUMN_WIDTH", "TEXT_WIDTH", "PAPER_RC", "figure_size", "new_axes",
           "check_choice", "paper_style", "use_paper_style", "tidy_log_axes"]

#: Width in inches of one column of a two-column paper (3.4 in fits ACM, IEEE, NeurIPS 2-col).
COLUMN_WIDTH = 3.4
#: Width in inches of the full text block.
TEXT_WIDTH = 7.0

#: Matplotlib settings for paper figures: small type, embedded TrueType fonts.
PAPER_RC: dict[str, Any] = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class PlotResult:
    """A drawn plot: the figure, its axes and its artists.

    Attributes
    ----------
    figure : matplotlib Figure
    axes : matplotlib Axes
        The axes drawn on.
    lines : dict
        Label -> list of the artists drawn for it (lines, bands, error bars, images).
    legend : matplotlib Legend or None
    band : str
        What a shaded band or error bar shows ("" when there is none).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig, ax = new_axes(None)
    >>> res = PlotResult(fig, ax, {"a": ax.plot([0, 1])}, None, "")
    >>> type(res.lines["a"][0]).__name__
    'Line2D'
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """

    figure: Any
    axes: Any
    lines: dict = field(default_factory=dict)
    legend: Any = None
    band: str = ""


def figure_size(columns: int = 1, aspect: float = 0.68) -> tuple[float, float]:
    """Width and height in inches of a figure one or two columns wide.

    Parameters
    ----------
    columns : int
        1 (one column) or 2 (the text width).
    aspect : float
        Height over width.

    Returns
    -------
    tuple of float

    Raises
    ------
    ValueError
        For ``columns`` other than 1 or 2, or a non-positive ``aspect``.

    Examples
    --------
    >>> figure_size(1, 0.5)
    (3.4, 1.7)
    >>> figure_size(3)
    Traceback (most recent call last):
    ...
    ValueError: columns = 3: must be 1 (one column) or 2 (the text width)
    """
    if columns not in (1, 2):
        raise ValueError(f"columns = {columns!r}: must be 1 (one column) or 2 (the text width)")
    if not aspect > 0:
        raise ValueError(f"aspect = {aspect!r}: must be positive")
    width = COLUMN_WIDTH if columns == 1 else TEXT_WIDTH
    return width, round(width * aspect, 6)


def new_axes(ax: Any, columns: int = 1, aspect: float = 0.68) -> tuple[Any, Any]:
    """The figure and axes to draw on: ``ax``'s, or a new paper-sized pair.

    Parameters
    ----------
    ax : matplotlib Axes or None
        Axes to draw on; None makes a new figure of :func:`figure_size`.
    columns : int
        Width of a new figure in columns (1 or 2).
    aspect : float
        Height over width of a new figure.

    Returns
    -------
    tuple
        ``(figure, axes)``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig, ax = new_axes(None, columns=2, aspect=0.3)
    >>> [round(float(x), 2) for x in fig.get_size_inches()]
    [7.0, 2.1]
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=figure_size(columns, aspect), layout="constrained")
    return fig, ax


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    """Refuse ``value`` of argument ``name`` unless it is one of ``allowed``.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
    allowed : tuple

    Returns
    -------
    None

    Raises
    ------
    ValueError
        One line naming the argument, the value and the choices.

    Examples
    --------
    >>> check_choice("band", "ci", ("ci", "minmax", "none"))
    >>> check_choice("band", "sd", ("ci", "minmax", "none"))
    Traceback (most recent call last):
    ...
    ValueError: band = 'sd': must be one of 'ci', 'minmax', 'none'
    """
    if value not in allowed:
        raise ValueError(f"{name} = {value!r}: must be one of "
                         + ", ".join(repr(a) for a in allowed))


def paper_style() -> Any:
    """A context in which figures are drawn with :data:`PAPER_RC`.

    Returns
    -------
    context manager
        ``matplotlib.rc_context(PAPER_RC)``.

    Examples
    --------
    >>> import matplotlib
    >>> with paper_style():
    ...     matplotlib.rcParams["pdf.fonttype"], matplotlib.rcParams["font.size"]
    (42, 8.0)
    """
    return matplotlib.rc_context(PAPER_RC)


def use_paper_style() -> None:
    """Set :data:`PAPER_RC` for the rest of the process (figure scripts call it first).

    Ticks are made when a figure is drawn, so a script that saves paper
    figures sets the style for the whole process rather than per call.

    Returns
    -------
    None

    Examples
    --------
    >>> import matplotlib
    >>> with matplotlib.rc_context():
    ...     use_paper_style()
    ...     matplotlib.rcParams["ps.fonttype"]
    42
    """
    matplotlib.rcParams.update(PAPER_RC)


def tidy_log_axes(ax: Any) -> None:
    """Plain number labels (``0.2``, ``300``) on the logarithmic axes of ``ax``.

    An axis spanning less than two decades also labels its minor ticks at
    2 and 5 times a power of ten.

    Parameters
    ----------
    ax : matplotlib Axes

    Returns
    -------
    None

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig, ax = new_axes(None)
    >>> _ = ax.plot([30, 300], [0.2, 0.9]); ax.set_xscale("log"); ax.set_yscale("log")
    >>> tidy_log_axes(ax)
    >>> ax.yaxis.get_major_formatter()(0.5, 0)
    '0.5'
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    from matplotlib import ticker

    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")

    def two_and_five(v: float, _: Any) -> str:
        mant = v / 10 ** np.floor(np.log10(v)) if v > 0 else 0.0
        return f"{v:g}" if np.isclose(mant, 2) or np.isclose(mant, 5) else ""

    for axis, scale, (lo, hi) in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                  (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
        if scale != "log":
            continue
        axis.set_major_formatter(plain)
        few = lo > 0 and hi / lo < 100
        axis.set_minor_formatter(ticker.FuncFormatter(two_and_five) if few
                                 else ticker.NullFormatter())
