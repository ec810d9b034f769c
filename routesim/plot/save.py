"""Saving figures: PNG and PDF side by side, atomically, with embedded fonts.

:func:`save_figure` writes each file to a temporary sibling and moves it into
place with ``os.replace``, so an interrupt never leaves a truncated figure.
The PDF embeds its fonts as TrueType (``pdf.fonttype = 42``), never Type 3,
as publishers require.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

__all__ = ["save_figure", "defaults"]

#: Display settings (plot only; simulation parameters live in the config).
defaults: dict[str, Any] = {
    "plot.smooth_steps": 10,
    "plot.figsize": (6.4, 4.0),
    "plot.dpi": 150,
}


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
            with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
                fig.savefig(tmp_dir / p.name, dpi=defaults["plot.dpi"], bbox_inches="tight")
            os.replace(tmp_dir / p.name, p)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return paths
