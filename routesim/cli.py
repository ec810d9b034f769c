"""Command line: ``routesim run CONFIG.toml`` (also ``python -m routesim``).

Progress goes to stderr (off when stderr is not a terminal), the summary to
stdout, results (``results.zarr``) and figures to ``--out``; ``routesim run``
without ``--out`` writes to ``results/<config file stem>/`` and says so
(``--no-save``: nothing written). Bad input is reported as one line
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

from ._version import __version__
from .exceptions import BackendError, ConfigError, NumericalFault

__all__ = ["main", "format_summary"]

#: Columns of the summary table after the steady MaxVio_batch: (variable, header, reduction).
#: ``final``: over replicas; ``tail``: over the last tenth of the steps and replicas;
#: ``mean``: over every step. Learning runs add the cancelled share of the task gradient,
#: the signed projection of the total gradient on the task gradient and the share of steps
#: where it is negative and, with the noisy gate, the evaluation-window (noise off) balance.
SUMMARY_COLUMNS = [
    ("maxvio_global_final", "MaxVio_global", "final"),
    ("dead_experts", "dead", "tail"),
    ("drop_rate", "drop", "tail"),
    ("task_proxy", "task proxy", "tail"),
    ("interference", "interference", "mean"),
    ("cancelled_share", "cancelled", "mean"),
    ("task_projection", "projection", "mean"),
    ("reversal_share", "reversed", "final"),
    ("load_ratio", "max/min load", "final"),
    ("maxvio_global_eval_run", "MaxVio_eval", "final"),
    ("load_ratio_eval", "max/min eval", "final"),
]

_CELL = 13
#: Widths of the steady columns: MaxVio_batch (fits "did not settle"), ±95%, from step.
_STEADY = (14, 8, 9)


def _global_window(ds) -> str:
    """``run.global_window`` of the stored config (at most the run), as text ('?' without one)."""
    import json

    try:
        run = json.loads(ds.attrs["config"])["run"]
        return str(min(int(run["global_window"]), int(run["steps"])))
    except (KeyError, ValueError, TypeError):
        return "?"


def format_summary(ds) -> str:
    """One-screen table: per point, the steady MaxVio_batch and the end-of-run MaxVio_global.

    ``MaxVio_batch`` is the steady value of :func:`routesim.analysis.steady`
    (blocks of a tenth of the steps): the mean over replicas of each
    replica's mean from the step it settled at (``from step``) to the last
    step, with the half-width of its 95 % Student-t interval across replicas
    (``±``); a point that did not settle says so. ``MaxVio_global`` is the
    MaxVio of the loads of the last ``run.global_window`` steps (not the
    whole run, which would include the transient). ``dead`` and ``drop`` are
    means over the last tenth of the steps. Notes under the table name these
    windows.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`routesim.simulate` (columns it lacks are left out).

    Returns
    -------
    str

    Examples
    --------
    Twenty steps in blocks of two: point ``a`` drops from 5 to 1 at step 6
    and stays there; point ``b`` jumps in the final block, so no earlier
    block agrees with it:

    >>> import numpy as np, xarray as xr
    >>> a = np.where(np.arange(20) < 6, 5.0, 1.0)
    >>> b = np.where(np.arange(20) < 18, 1.0, 2.0)
    >>> mv = np.stack([a, b], axis=1)[:, :, None] * np.ones(2)  # two equal replicas
    >>> ds = xr.Dataset({
    ...     "maxvio_batch": (("step", "point", "replica"), mv),
    ...     "maxvio_global_final": (("point", "replica"), [[0.5, 0.5], [0.25, 0.25]]),
    ...     "label": ("point", ["a", "b"])}, coords={"step": np.arange(20)})
    >>> print(format_summary(ds))
    point    MaxVio_batch      ±95%  from step  MaxVio_global
    ---------------------------------------------------------
    a                   1         0          6            0.5
    b      did not settle         -          -           0.25
    <BLANKLINE>
    MaxVio_batch: steady mean from 'from step' to step 19 (blocks of 2 steps, see routesim.analysis.steady); ±95%: Student-t over 2 replicas
    MaxVio_global: the loads of the last ? steps (run.global_window)
    """
    from .analysis import steady

    layers = ds.sizes.get("layer", 0)
    if layers:  # several layers: each step's median over them
        ds = ds.drop_dims([d for d in ("layer_stat",) if d in ds.dims]).median(
            "layer", keep_attrs=True)
    steps = ds.sizes["step"]
    tail = slice(steps - max(1, steps // 10), steps)
    cols = [(v, h, how) for v, h, how in SUMMARY_COLUMNS if v in ds]
    labels = [str(x) for x in ds["label"].values]
    st = steady(ds, "maxvio_batch") if "maxvio_batch" in ds else None
    width = max([len("point")] + [len(x) for x in labels])
    w1, w2, w3 = _STEADY
    heads = ([f"{'MaxVio_batch':>{w1}}", f"{'±95%':>{w2}}", f"{'from step':>{w3}}"]
             if st is not None else []) + [f"{h:>{_CELL}}" for _, h, _ in cols]
    head = f"{'point':<{width}}  " + "  ".join(heads)
    lines = [head, "-" * len(head)]
    for j, label in enumerate(labels):
        cells = []
        if st is not None:
            one = st.isel(point=j)
            if bool(one["settled"]):
                half = float(one["ci_high"] - one["mean"])
                cells += [f"{float(one['mean']):>{w1}.4g}",
                          f"{half:>{w2}.2g}" if np.isfinite(half) else f"{'-':>{w2}}",
                          f"{int(one['settled_step']):>{w3}d}"]
            else:
                cells += [f"{'did not settle':>{w1}}", f"{'-':>{w2}}", f"{'-':>{w3}}"]
        for var, _, how in cols:
            da = ds[var].isel(point=j)
            val = float(da.isel(step=tail).mean()) if how == "tail" else float(da.mean())
            cells.append(f"{val:>{_CELL}.4g}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    lines.append("")
    if st is not None:
        replicas = st.attrs["replicas"]
        lines.append(f"MaxVio_batch: steady mean from 'from step' to step {st.attrs['last_step']} "
                     f"(blocks of {st.attrs['window']} steps, see routesim.analysis.steady); "
                     + (f"±95%: Student-t over {replicas} replicas" if replicas > 1
                        else "±95% needs run.replicas >= 2"))
    if "maxvio_global_final" in ds:
        lines.append(f"MaxVio_global: the loads of the last {_global_window(ds)} steps "
                     "(run.global_window)")
    tails = [h for _, h, how in cols if how == "tail"]
    if tails:
        lines.append(f"{', '.join(tails)}: mean over the last {tail.stop - tail.start} "
                     "recorded steps")
    if layers:
        lines.append(f"each value: the median over the {layers} layers (model.num_layers)")
    return "\n".join(lines)


#: The results file in an output directory (as ``routesim.sweep.RESULTS``).
_RESULTS = "results.zarr"

#: Figures written beside the results; removed whenever the results are replaced.
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
    parser.add_argument("--version", action="version", version=f"routesim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TOML config and summarise it")
    run.add_argument("config", type=Path, help="TOML configuration file")
    run.add_argument("--out", type=Path, default=None,
                     help="directory for results.zarr and the figure "
                          "(default: results/<config file stem>/)")
    run.add_argument("--no-save", action="store_true",
                     help="print the summary only; write no results or figure")
    run.add_argument("--seed", type=int, default=None, help="override run.seed")
    run.add_argument("--backend", choices=("numpy", "cupy", "array_api_strict"), default=None,
                     help="override run.backend")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--no-plot", action="store_true", help="do not write the figure")
    sweep = sub.add_parser("sweep", help="run a config's points in chunks (parallel, resumable)")
    sweep.add_argument("config", type=Path, help="TOML configuration file")
    sweep.add_argument("--out", type=Path, required=True,
                       help="directory for chunks/ and results.zarr; re-run to resume")
    sweep.add_argument("--chunk", type=int, default=1, help="points per chunk (default 1)")
    sweep.add_argument("--workers", type=int, default=1,
                       help="worker processes (default 1), each routing on "
                            "cores // workers threads")
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
    if args.no_save and args.out is not None:
        raise ConfigError(f"--no-save: cannot be combined with --out = {str(args.out)!r}")
    if args.no_save and args.no_plot:
        raise ConfigError("--no-plot: has no effect with --no-save (no figure is written)")
    if cfg.run.backend != "numpy":
        from ._backend import get_namespace

        get_namespace(cfg.run.backend)  # refuse an unusable backend before work
    out = None if args.no_save else (
        args.out if args.out is not None else Path("results") / args.config.stem)
    if out is not None:
        from .store import check_output_dir

        check_output_dir(out, "--out")
    ds = simulate(cfg, progress=False if args.no_progress else None)
    print(format_summary(ds))
    if out is not None:
        from .store import save

        path = save(ds, out / _RESULTS, derived=[out / f for f in _FIGURES])
        print(f"\nresults: {path}" + ("" if args.out is not None
                                      else " (no --out given: results/<config file stem>/)"))
        if not args.no_plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from .plot import maxvio_plot, save_figure

            ax = maxvio_plot(ds)
            try:
                paths = save_figure(ax.figure, out / "maxvio_batch")
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
    print(f"\nresults: {args.out / _RESULTS}")
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
    ...     main(["run", str(path), "--no-progress", "--no-save"])
    point                   MaxVio_batch      ±95%  from step  MaxVio_global           dead           drop
    ------------------------------------------------------------------------------------------------------
    bias_update_rate=0.0  did not settle         -          -         0.2188              0              0
    bias_update_rate=0.1            0.25         -          2        0.03125              0              0
    <BLANKLINE>
    MaxVio_batch: steady mean from 'from step' to step 3 (blocks of 1 steps, see routesim.analysis.steady); ±95% needs run.replicas >= 2
    MaxVio_global: the loads of the last 4 steps (run.global_window)
    dead, drop: mean over the last 1 recorded steps
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
