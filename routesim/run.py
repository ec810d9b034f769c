"""``simulate(config)``: run every step for every point and replica, return a Dataset.

The loop over steps is the caller's loop of :func:`routesim.engines.exact.make_simulator`
with a progress bar; per-step metrics are then computed in one vectorised
pass over the recorded loads and biases (:mod:`routesim.metrics`).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from . import faults, metrics, resources
from ._backend import to_numpy
from .config import Config
from .rng import entropy_of

__all__ = ["simulate", "build_dataset", "run_steps"]


def _progress(progress: bool | None, total: int, desc: str) -> tqdm:
    # None: on when stderr is a terminal (off in CI logs and pipes).
    disable = (not sys.stderr.isatty()) if progress is None else (not progress)
    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False)


def simulate(config: Config, *, point_indices: Sequence[int] | None = None,
             progress: bool | None = None) -> xr.Dataset:
    """Run the simulation of ``config`` and return its results.

    Parameters
    ----------
    config : Config
        The run, with its sweep (points) and replicas.
    point_indices : sequence of int, optional
        Run only these points of the sweep (global indices); their numbers
        are the same as in a run of the whole sweep.
    progress : bool or None
        Progress bar on stderr; None shows it only when stderr is a terminal.

    Returns
    -------
    xarray.Dataset
        Dimensions ``step``, ``point``, ``replica``, ``expert`` (and
        ``compute_batch`` when computation-batch sizes are given). Variables:
        ``load``, ``kept_load``, ``bias``, ``maxvio_batch``,
        ``maxvio_global`` (trailing ``run.global_window`` steps),
        ``maxvio_global_run`` (all steps), ``maxvio_compute``, ``cv``,
        ``min_load``, ``max_load``, ``dead_experts``, ``load_entropy``,
        ``drop_rate``, ``displacement``, ``flip_fraction``, ``bias_spread``,
        ``unrouted_share`` (tokens with no expert) and, for Expert Choice,
        ``experts_per_token`` (tokens with 0..E experts, dim ``num_assigned``).
        Attributes hold the config (JSON), the package version, the seed and
        its SeedSequence entropy.

    Examples
    --------
    >>> from routesim import Config, simulate
    >>> from routesim.config import RunConfig, BatchConfig, RouterConfig
    >>> cfg = Config(run=RunConfig(steps=3), batch=BatchConfig(num_sequences=2, seq_length=32),
    ...              router=RouterConfig(num_experts=8, topk=2))
    >>> ds = simulate(cfg, progress=False)
    >>> int(ds["load"].isel(step=0).sum()) == 2 * 32 * 2
    True
    """
    if config.run.engine == "meanfield":
        from .engines.meanfield import simulate_meanfield  # noqa: PLC0415 (optional engine)

        return simulate_meanfield(config, point_indices=point_indices, progress=progress)
    if config.penalty.learn:
        from .engines.learner import simulate_learner  # noqa: PLC0415 (learning engine)

        return simulate_learner(config, point_indices=point_indices, progress=progress)
    from ._backend import get_namespace
    from .engines.exact import make_simulator

    progress = resources.check(config, point_indices, progress)
    init, step = make_simulator(config, point_indices)
    fields = ("bias_PRE", "load_PRE", "kept_PRE", "displaced_PR", "maxvio_compute_PRC",
              "unrouted_PR", "experts_per_token_PRJ")
    check = faults.make_step_check(config, point_indices, get_namespace(config.run.backend))
    _, rec = run_steps(step, init(), config.run.steps, fields, progress, "routesim", check)
    extra = {"unrouted_share": (("step", "point", "replica"), rec["unrouted_PR"])}
    if rec["experts_per_token_PRJ"] is not None:
        extra["experts_per_token"] = (("step", "point", "replica", "num_assigned"),
                                      rec["experts_per_token_PRJ"].astype(np.int32))
    return build_dataset(config, point_indices, bias_SPRE=rec["bias_PRE"],
                         load_SPRE=rec["load_PRE"], kept_SPRE=rec["kept_PRE"],
                         displaced_SPR=rec["displaced_PR"],
                         maxvio_compute_SPRC=rec["maxvio_compute_PRC"], extra=extra)


def run_steps(step: Any, state: Any, steps: int, fields: Sequence[str], progress: bool | None,
              desc: str, check: Callable[[Any, Any], None] | None = None
              ) -> tuple[Any, dict[str, np.ndarray | None]]:
    """Run ``steps`` steps and stack the named fields of each step's output on the host.

    Parameters
    ----------
    step : callable (state) -> (state, output)
        A pure step function (any engine).
    state : object
        The initial state.
    steps : int
        Steps to run.
    fields : sequence of str
        Attributes of the step output to record; one that is None is
        recorded as None.
    progress : bool or None
        Progress bar on stderr (None: only when stderr is a terminal).
    desc : str
        Label of the progress bar.
    check : callable (state, output) -> None, optional
        Called after every step, before its output is recorded (e.g.
        :func:`routesim.faults.make_step_check`, which raises
        :class:`~routesim.exceptions.NumericalFault` on a NaN or Inf). With a
        check, NumPy's overflow and invalid-value warnings are silenced in
        the step: the check reports the fault instead, in one line.

    Returns
    -------
    state : object
        The final state.
    records : dict of str to ndarray or None
        Each field stacked along a new leading step axis.
    """
    rows: dict[str, list] = {f: [] for f in fields}
    with _progress(progress, steps, desc) as bar:
        for _ in range(steps):
            with _quiet(check):
                state, out = step(state)
            if check is not None:
                check(state, out)
            for f in fields:
                value = getattr(out, f)
                rows[f].append(None if value is None else to_numpy(value))
            bar.update(1)
    records = {f: (None if not v or v[0] is None else np.stack(v)) for f, v in rows.items()}
    return state, records


def _quiet(check: Any) -> Any:
    """Silence NumPy's overflow/invalid warnings when a fault check will report them."""
    return np.errstate(over="ignore", invalid="ignore") if check is not None else nullcontext()


def build_dataset(config: Config, point_indices: Sequence[int] | None, *,
                  bias_SPRE: np.ndarray, load_SPRE: np.ndarray, kept_SPRE: np.ndarray,
                  displaced_SPR: np.ndarray, maxvio_compute_SPRC: np.ndarray,
                  extra: dict[str, Any] | None = None) -> xr.Dataset:
    """Assemble the result Dataset from recorded host arrays (any engine)."""
    from . import __version__

    labels_all = config.point_labels()
    if point_indices is None:
        point_indices = range(len(labels_all))
    point_indices = list(point_indices)
    dims3 = ("step", "point", "replica")
    dims4 = dims3 + ("expert",)
    steps = load_SPRE.shape[0]
    window = config.run.global_window
    load = load_SPRE.astype(np.int64)
    kept = kept_SPRE.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1.0 - kept.sum(-1) / np.maximum(load.sum(-1), 1)
    data = {
        "load": (dims4, load.astype(np.int32)),
        "kept_load": (dims4, kept.astype(np.int32)),
        "bias": (dims4, bias_SPRE),
        "maxvio_batch": (dims3, metrics.maxvio(load)),
        "maxvio_global": (dims3, metrics.maxvio(metrics.trailing_sum(load, window))),
        "maxvio_global_run": (("point", "replica"), metrics.maxvio(load.sum(axis=0))),
        "cv": (dims3, metrics.cv(load)),
        "min_load": (dims3, load.min(-1).astype(np.int32)),
        "max_load": (dims3, load.max(-1).astype(np.int32)),
        "dead_experts": (dims3, metrics.dead_experts(load).astype(np.int32)),
        "load_entropy": (dims3, metrics.load_entropy(load)),
        "drop_rate": (dims3, drop),
        "displacement": (dims3, displaced_SPR.astype(np.float64)),
        "flip_fraction": (dims3, metrics.flip_fraction(bias_SPRE)),
        "bias_spread": (dims3, metrics.bias_spread(bias_SPRE)),
    }
    coords: dict[str, Any] = {
        "step": np.arange(steps),
        "point": np.asarray(point_indices),
        "replica": np.arange(config.run.replicas),
        "expert": np.arange(load.shape[-1]),
        "label": ("point", np.asarray([labels_all[i] for i in point_indices], dtype=str)),
    }
    if config.batch.computation_batch_sizes:
        data["maxvio_compute"] = (dims3 + ("compute_batch",), maxvio_compute_SPRC)
        coords["compute_batch"] = np.asarray(config.batch.computation_batch_sizes)
    for key in config.sweep.parameters:
        values = [config.sweep.assignments()[i][key] for i in point_indices]
        coords[key] = ("point", np.asarray(values))
    if extra:
        data.update(extra)
    attrs = {
        "title": "routesim simulation",
        "routesim_version": __version__,
        "config": config.to_json(),
        "seed": int(config.run.seed),
        "seed_entropy": str(entropy_of(config.run.seed)),
        "engine": config.run.engine,
        "tokens_per_step": int(config.batch.tokens_per_step),
        "num_experts": int(config.router.num_experts),
        "topk": int(config.router.topk),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)
