"""Command line: ``routesim run CONFIG.toml`` (also ``python -m routesim``).

Progress goes to stderr (off when stderr is not a terminal), the summary to
stdout, results and figures to ``--out``. Bad input is reported as one line
and exit status 2, before any work starts. A NaN or Inf met during the run
(:class:`~routesim.exceptions.NumericalFault`) is reported as one line and
exit status 3.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .exceptions import BackendError, ConfigError, NumericalFault

__all__ = ["main", "format_summary"]

#: Columns of the summary table: (variable, header, reduction over steps).
#: Learning runs add the end-of-run global MaxVio, the cancelled share of the task
#: gradient, the signed projection of the total gradient on the task gradient and the
#: share of steps where it is negative and, with the noisy gate, the evaluation-window (noise off) balance.
SUMMARY_COLUMNS = [
    ("maxvio_batch", "MaxVio_batch", "tail"),
    ("maxvio_global_run", "MaxVio_global", "scalar"),
    ("maxvio_global_final", "MaxVio_gl_end", "scalar"),
    ("dead_experts", "dead", "tail"),
    ("drop_rate", "drop", "tail"),
    ("task_proxy", "task proxy", "tail"),
    ("interference", "interference", "mean"),
    ("cancelled_share", "cancelled", "mean"),
    ("task_projection", "projection", "mean"),
    ("reversal_share", "reversed", "scalar"),
    ("load_ratio", "max/min load", "scalar"),
    ("maxvio_global_eval_run", "MaxVio_eval", "scalar"),
    ("load_ratio_eval", "max/min eval", "scalar"),
]


def format_summary(ds) -> str:
    """One-screen table: per point, final MaxVio_batch and MaxVio_global.

    "Final" is the mean over the last 10 % of steps and over replicas.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`routesim.simulate` (columns it lacks are left out).

    Returns
    -------
    str

    Examples
    --------
    Ten steps: the last 10 % is the last step, where ``maxvio_batch`` is 18 and 19:

    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({
    ...     "maxvio_batch": (("step", "point", "replica"), np.arange(20.0).reshape(10, 2, 1)),
    ...     "maxvio_global_run": (("point", "replica"), [[0.5], [0.25]]),
    ...     "label": ("point", ["a", "b"])})
    >>> print(format_summary(ds))
    point   MaxVio_batch  MaxVio_global
    -----------------------------------
    a                 18            0.5
    b                 19           0.25
    """
    steps = ds.sizes["step"]
    tail = slice(steps - max(1, steps // 10), steps)
    cols = [(v, h, how) for v, h, how in SUMMARY_COLUMNS if v in ds]
    labels = [str(x) for x in ds["label"].values]
    width = max([len("point")] + [len(x) for x in labels])
    head = f"{'point':<{width}}  " + "  ".join(f"{h:>13}" for _, h, _ in cols)
    lines = [head, "-" * len(head)]
    for j, label in enumerate(labels):
        cells = []
        for var, _, how in cols:
            da = ds[var].isel(point=j)
            if how == "tail":
                val = float(da.isel(step=tail).mean())
            elif how == "mean":
                val = float(da.mean())
            else:
                val = float(da.mean())
            cells.append(f"{val:>13.4g}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


#: Figures written beside results.nc; removed whenever results.nc is replaced.
_FIGURES = ("maxvio_batch.png", "maxvio_batch.pdf")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C so that the same clean-up runs."""


def _sigterm_as_interrupt(command):
    """Run ``command`` with SIGTERM raising :class:`_Terminated` (main thread only)."""
    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        if threading.current_thread() is not threading.main_thread():
            return command(args)

        def handler(signum, frame):
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            return command(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return wrapper


def _interrupt_status(err: BaseException) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C."""
    terminated = isinstance(err, _Terminated) or isinstance(err.__cause__, _Terminated)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routesim", description=(
        "Simulate MoE load balancing: traffic, biased top-K routing, controllers."))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TOML config and summarise it")
    run.add_argument("config", type=Path, help="TOML configuration file")
    run.add_argument("--out", type=Path, default=None,
                     help="directory for results.nc and the figure (default: none written)")
    run.add_argument("--seed", type=int, default=None, help="override run.seed")
    run.add_argument("--backend", choices=("numpy", "cupy", "array_api_strict"), default=None,
                     help="override run.backend")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--no-plot", action="store_true", help="do not write the figure")
    sweep = sub.add_parser("sweep", help="run a config's points in chunks (parallel, resumable)")
    sweep.add_argument("config", type=Path, help="TOML configuration file")
    sweep.add_argument("--out", type=Path, required=True,
                       help="directory for chunks/ and results.nc; re-run to resume")
    sweep.add_argument("--chunk", type=int, default=1, help="points per chunk (default 1)")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace a sweep of another config found in --out")
    return parser


@_sigterm_as_interrupt
def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .run import simulate

    cfg = load_config(args.config)
    changes = {}
    if args.seed is not None:
        if args.seed < 0:
            raise ConfigError(f"--seed = {args.seed}: must be an integer >= 0")
        changes["run.seed"] = args.seed
    if args.backend is not None:
        changes["run.backend"] = args.backend
    if changes:
        cfg = cfg.replace(**changes)
    if cfg.run.backend != "numpy":
        from ._backend import get_namespace

        get_namespace(cfg.run.backend)  # refuse an unusable backend before work
    if args.out is not None:
        from .store import check_output_dir

        check_output_dir(args.out, "--out")
    ds = simulate(cfg, progress=False if args.no_progress else None)
    print(format_summary(ds))
    if args.out is not None:
        from .store import save

        path = save(ds, args.out / "results.nc", derived=[args.out / f for f in _FIGURES])
        print(f"\nresults: {path}")
        if not args.no_plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from .plot import maxvio_plot, save_figure

            ax = maxvio_plot(ds)
            try:
                paths = save_figure(ax.figure, args.out / "maxvio_batch")
            except KeyboardInterrupt as err:
                print(f"routesim: interrupted: results kept in {path}; no figure written",
                      file=sys.stderr)
                return _interrupt_status(err)
            for p in paths:
                print(f"figure: {p}")
            plt.close(ax.figure)
    return 0


@_sigterm_as_interrupt
def _sweep(args: argparse.Namespace) -> int:
    from .config import load_config
    from .store import check_output_dir
    from .sweep import SweepInterrupted, run_sweep

    cfg = load_config(args.config)
    if args.chunk < 1:
        raise ConfigError(f"--chunk = {args.chunk}: must be an integer >= 1")
    if args.workers < 1:
        raise ConfigError(f"--workers = {args.workers}: must be an integer >= 1")
    check_output_dir(args.out, "--out")
    try:
        ds = run_sweep(cfg, args.out, points_per_chunk=args.chunk, workers=args.workers,
                       progress=False if args.no_progress else None,
                       overwrite=args.overwrite, derived=[args.out / f for f in _FIGURES])
    except SweepInterrupted as err:
        print(f"routesim: {err}", file=sys.stderr)
        return _interrupt_status(err)
    print(format_summary(ds))
    print(f"\nresults: {args.out / 'results.nc'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a refused config or backend (one line on
        stderr), 3 for a numerical fault, 130 or 143 when interrupted.

    Examples
    --------
    Two points of a tiny config: 4 experts receive 16 tokens x 2 = 32
    selections a step, 8 each when balanced, so MaxVio_batch comes in eighths
    (and MaxVio_global, over 4 steps, in 32nds):

    >>> import pathlib, tempfile
    >>> tiny = '''
    ... run = { steps = 4 }
    ... router = { num_experts = 4, topk = 2 }
    ... batch = { num_sequences = 2, seq_length = 8 }
    ... sweep = { parameters = { "controller.bias_update_rate" = [0.0, 0.1] } }
    ... '''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "tiny.toml"
    ...     _ = path.write_text(tiny)
    ...     main(["run", str(path), "--no-progress"])
    point                  MaxVio_batch  MaxVio_global           dead           drop
    --------------------------------------------------------------------------------
    bias_update_rate=0.0          0.625         0.2188              0              0
    bias_update_rate=0.1           0.25        0.03125              0              0
    0
    >>> main(["run", "no-such-file.toml"])  # refused with one line on stderr
    2
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "sweep":
            return _sweep(args)
    except (ConfigError, BackendError) as err:
        print(f"routesim: error: {err}", file=sys.stderr)
        return 2
    except NumericalFault as err:
        kept = (f"; finished chunks are kept in {args.out / 'chunks'}"
                if args.command == "sweep" else "; nothing was written")
        print(f"routesim: numerical fault: {err}{kept}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as err:
        print("routesim: interrupted; nothing was written", file=sys.stderr)
        return _interrupt_status(err)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
