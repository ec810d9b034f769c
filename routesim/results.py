"""The result Dataset: the one place where recorded host arrays become a Dataset.

:func:`build_dataset` assembles the variables every engine has (loads, bias,
the per-step metrics of :mod:`routesim.metrics`); :func:`engine_variables`
adds what an engine reports in its :class:`~routesim.engines._common.StepOutput`
extension (Expert Choice's histogram, the mean-field evaluations, the
learning router's losses). Assembly is O(P) in the number of points: every
per-point coordinate is built in one pass.

Every variable and coordinate carries CF-style ``long_name`` and ``units``
attributes from one table, :data:`VARIABLE_ATTRS` (``"1"`` for a
dimensionless quantity). ``run.record`` and ``run.record_every`` are applied
last, after every metric has been computed from every step
(:func:`apply_record`).

Shape legend: S steps, P points (``P * model.num_layers`` rows before the
layer axis is unfolded), R replicas, E experts, C computation-batch sizes,
J assignment counts 0..E, B computation batches, K expert-parallel ranks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import xarray as xr

from . import metrics, placement
from .assignment import oracle_variables
from .controllers import get_law, make_controller_params
from .controllers.schedules import rate_factor
from ._version import __version__
from .config import Config
from .engines._common import ExpertChoiceExtra, LearnerExtra, MeanFieldExtra
from .rng import entropy_of

__all__ = ["build_dataset", "engine_variables", "extra_variables", "sweep_coords", "apply_record",
           "VARIABLE_ATTRS", "describe", "placement_variables", "layer_percentiles",
           "LAYER_STATS", "controller_variables"]

#: Dimension of each shape letter of a recorded field name.
_DIM_OF = {"S": "step", "P": "point", "R": "replica", "E": "expert", "L": "position"}


#: ``name -> (long_name, units)`` of every variable and coordinate a Dataset can hold.
VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    # coordinates
    "step": ("training step", "steps"),
    "point": ("index of the sweep point", "1"),
    "replica": ("index of the independent replica", "1"),
    "expert": ("expert index", "1"),
    "label": ("name of the sweep point", "1"),
    "compute_batch": ("computation batch size", "sequences"),
    "num_assigned": ("number of experts assigned to a token", "1"),
    "position": ("token position in the sequence", "1"),
    # every engine
    "expert_load": ("tokens routed to the expert in the step (before capacity dropping)",
                    "tokens"),
    "kept_load": ("tokens kept by the expert in the step (after capacity dropping)", "tokens"),
    "bias": ("expert bias that routed the step's first micro-batch", "1"),
    "maxvio_batch": ("MaxVio of the step's loads, (max - mean) / mean", "1"),
    "maxvio_global": ("MaxVio of the loads summed over the trailing run.global_window steps",
                      "1"),
    "maxvio_global_run": ("MaxVio of the loads summed over the whole run", "1"),
    "maxvio_global_final": ("MaxVio of the loads summed over the last run.global_window steps",
                            "1"),
    "maxvio_compute": ("mean MaxVio over the computation batches of each size", "1"),
    "cv": ("coefficient of variation of the step's loads over experts", "1"),
    "min_load": ("smallest expert load of the step", "tokens"),
    "max_load": ("largest expert load of the step", "tokens"),
    "dead_experts": ("experts with no token in the step", "1"),
    "load_entropy": ("entropy of the step's load fractions", "bit"),
    "drop_rate": ("share of assignments dropped by capacity", "1"),
    "displacement": ("share of selections outside the unbiased top-K", "1"),
    "flip_fraction": ("share of experts whose bias update reversed direction", "1"),
    "bias_spread": ("max bias - min bias", "1"),
    "unrouted_share": ("share of tokens with no expert", "1"),
    # controller schedules and targets
    "bias_update_rate": ("bias update rate of the step's window, after the rate schedule",
                         "1"),
    "maxvio_target": ("MaxVio against the target shares, max c / (Q sum c) - 1", "1"),
    # the optimal-assignment oracle (routesim.assignment)
    "routed_objective": ("total selection score of the step's routed assignment", "1"),
    "oracle_objective": ("optimal total selection score under capacity T K Q", "1"),
    "price_of_balance": ("unconstrained top-K score minus the optimal score", "1"),
    "oracle_gap": ("optimal score minus the routed assignment's score", "1"),
    "oracle_gap_relative": ("oracle_gap over the price of balance", "1"),
    "capacity_overflow": ("max load over capacity minus 1", "1"),
    "oracle_agreement": ("share of routed assignments the oracle makes too", "1"),
    "dual_correlation": ("correlation of the centred bias with the centred -price", "1"),
    "kkt_feasibility": ("largest relative overload (KKT primal feasibility)", "1"),
    "kkt_slackness": ("sum of price x |capacity - load| over total capacity (KKT "
                      "complementary slackness)", "1"),
    "lagrangian_gap": ("dual function at the bias's price minus the optimum", "1"),
    "regret": ("cumulative Lagrangian gap over the steps so far", "1"),
    "oracle_price": ("dual price of the expert's capacity constraint", "1"),
    "cycle_period": ("period of the cycle the centred bias settles into (0: none)", "steps"),
    "cycle_entered": ("step from which the bias repeats with that period (-1: none)", "steps"),
    "cycle_band": ("largest range of a centred bias within the cycle", "1"),
    # Expert Choice, mean field
    "experts_per_token": ("tokens of the step with each number of experts", "tokens"),
    "meanfield_evaluations": ("exact evaluations of the expected-load map", "1"),
    # learning router
    "task_proxy": ("task proxy: routing-weighted expert quality", "1"),
    "task_affinity": ("task proxy without the expert-quality term", "1"),
    "penalty": ("weighted total of the penalties", "1"),
    "balance_loss": ("balance loss (unweighted)", "1"),
    "z_loss_value": ("router z-loss (unweighted)", "1"),
    "interference": ("cosine between the task gradient and the penalty gradient", "1"),
    "cancelled_share": ("share of the task gradient removed by the penalty", "1"),
    "task_projection": ("projection of the total router gradient on the task gradient", "1"),
    "reversal_share": ("share of steps whose total gradient points against the task gradient",
                       "1"),
    "drop_by_position": ("share of assignments dropped by capacity, per sequence position", "1"),
    "max_logit": ("largest router logit of the step", "1"),
    "logit_spread": ("mean over tokens of the standard deviation of a token's logits", "1"),
    "alpha_t": ("balance loss weight at the step", "1"),
    "z_loss_t": ("z-loss weight at the step", "1"),
    "lr_t": ("learning rate at the step", "1"),
    "expert_quality": ("expert quality of the task proxy", "1"),
    "importance_cv2": ("squared coefficient of variation of the importance", "1"),
    "load_cv2": ("squared coefficient of variation of the smooth load", "1"),
    "gate_noise": ("mean standard deviation of the gate noise", "1"),
    "eval_load": ("tokens routed to the expert with the gate noise off", "tokens"),
    "maxvio_global_eval": ("MaxVio of eval_load over the trailing run.global_window steps", "1"),
    "maxvio_global_eval_run": ("MaxVio of eval_load over the whole run", "1"),
    "load_ratio": ("max over min of the run's total expert loads", "1"),
    "load_ratio_eval": ("max over min of the run's total eval_load", "1"),
    # layers, placement, zero-computation experts
    "layer": ("MoE layer index", "1"),
    "layer_stat": ("statistic over layers (median, 90th percentile, maximum)", "1"),
    "rank": ("expert-parallel rank index", "1"),
    "expert_rank": ("rank of each expert in the base placement", "1"),
    "rank_load": ("tokens computed by the rank in the step (base placement)", "tokens"),
    "rank_straggler": ("max / mean rank load, averaged over the step's computation batches "
                       "(base placement)", "1"),
    "expert_gini": ("Gini coefficient of the step's expert loads", "1"),
    "rank_gini": ("Gini coefficient of the step's rank loads (base placement)", "1"),
    "planned_copies": ("copies of the expert in the planned placement", "1"),
    "planned_share": ("share of the expert's load on the rank in the planned placement", "1"),
    "rank_load_planned": ("tokens computed by the rank in the step (planned placement)",
                          "tokens"),
    "rank_straggler_planned": ("max / mean rank load, averaged over the step's computation "
                               "batches (planned placement)", "1"),
    "maxvio_ffn": ("MaxVio of the step's loads over the FFN experts", "1"),
    "ffn_per_token": ("mean number of FFN experts per token in the step", "1"),
}
VARIABLE_ATTRS.update({
    f"{name}_across_layers": (f"{VARIABLE_ATTRS[name][0]}: statistic over layers",
                              VARIABLE_ATTRS[name][1])
    for name in ("maxvio_batch", "maxvio_global", "maxvio_ffn", "rank_straggler",
                 "rank_straggler_planned")})

#: Units of swept settings that are not dimensionless.
_SETTING_UNITS = {"traffic.drift_period": "steps", "controller.warmup_steps": "steps"}


def describe(ds: xr.Dataset) -> xr.Dataset:
    """Set ``long_name`` and ``units`` on every variable and coordinate of ``ds`` (in place).

    Names come from :data:`VARIABLE_ATTRS`; a swept setting (a coordinate
    named by its dotted field) is described as such.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    xarray.Dataset
        ``ds`` itself.

    Raises
    ------
    KeyError
        For a variable the table does not describe.

    Examples
    --------
    >>> ds = describe(xr.Dataset({"expert_load": ("expert", [3, 1])},
    ...                          coords={"controller.bias_update_rate": 0.01}))
    >>> ds["expert_load"].attrs["units"], ds["controller.bias_update_rate"].attrs["long_name"]
    ('tokens', 'swept setting controller.bias_update_rate')
    """
    for name, var in ds.variables.items():
        if name in VARIABLE_ATTRS:
            long_name, units = VARIABLE_ATTRS[name]
        elif str(name).endswith(".resolved"):
            base = str(name)[: -len(".resolved")]
            long_name, units = (f"swept setting {base}, as resolved before the run",
                                _SETTING_UNITS.get(base, "1"))
        elif "." in str(name):
            long_name, units = f"swept setting {name}", _SETTING_UNITS.get(str(name), "1")
        else:
            raise KeyError(f"results variable {name!r} has no entry in VARIABLE_ATTRS")
        var.attrs.update(long_name=long_name, units=units)
    return ds


def apply_record(ds: xr.Dataset, record: str, every: int) -> xr.Dataset:
    """Keep what ``run.record`` and ``run.record_every`` ask for.

    Parameters
    ----------
    ds : xarray.Dataset
        Every step, every variable.
    record : {"full", "metrics"}
        ``metrics`` drops every variable with an ``expert`` dimension (and
        the ``expert`` coordinate).
    every : int >= 1
        Keep steps ``0, every, 2 * every, ...``.

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> ds = xr.Dataset({"bias": (("step", "expert"), [[0.0, 1.0]] * 5), "cv": ("step", range(5))},
    ...                 coords={"step": range(5), "expert": [0, 1]})
    >>> kept = apply_record(ds, "metrics", 2)
    >>> list(kept.data_vars), kept["step"].values.tolist(), list(kept.coords)
    (['cv'], [0, 2, 4], ['step'])
    """
    if record == "metrics":
        ds = ds.drop_vars([n for n, v in ds.variables.items() if "expert" in v.dims])
    if every > 1:
        ds = ds.isel(step=slice(None, None, every))
    return ds


def sweep_coords(config: Config, indices: list[int]) -> dict[str, Any]:
    """Label, swept values and resolved values of the chosen points (one pass).

    A value resolved before the run (``sweep.resolved``, e.g. a rate written
    as ``"0.5 u_c"``) is the coordinate ``KEY.resolved``.

    Parameters
    ----------
    config : Config
        The whole run.
    indices : list of int
        Global indices of the points.

    Returns
    -------
    dict of str to (dims, array)
        Coordinates along ``point``.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"sweep": {"traffic.noise_scale": [0.5, 1.0]}})
    >>> coords = sweep_coords(cfg, [1])
    >>> coords["label"][1].tolist(), coords["traffic.noise_scale"][1].tolist()
    (['noise_scale=1.0'], [1.0])
    """
    labels_all = config.point_labels()
    assignments = config.sweep.assignments()
    coords: dict[str, Any] = {
        "label": ("point", np.asarray([labels_all[i] for i in indices], dtype=str))}
    for key in config.sweep.parameters:
        coords[key] = ("point", np.asarray([assignments[i][key] for i in indices]))
    for key, values in config.sweep.resolved.items():
        coords[f"{key}.resolved"] = ("point", np.asarray([values[i] for i in indices]))
    return coords


def build_dataset(config: Config, point_indices: Sequence[int] | None, *,
                  bias_SPRE: np.ndarray, load_SPRE: np.ndarray, kept_SPRE: np.ndarray,
                  displaced_SPR: np.ndarray, maxvio_compute_SPRC: np.ndarray,
                  extra: dict[str, Any] | None = None,
                  ep_batch_SPRBE: np.ndarray | None = None) -> xr.Dataset:
    """Assemble the result Dataset from recorded host arrays (any engine).

    With ``model.num_layers = L > 1`` the point axis of every recorded
    array holds ``P * L`` rows, point-major; they come back on a ``layer``
    dimension after ``point``.

    Parameters
    ----------
    config : Config
        The whole run.
    point_indices : sequence of int or None
        Global indices of the points recorded (None: every point).
    bias_SPRE, load_SPRE, kept_SPRE : arrays (S, P, R, E)
    displaced_SPR : array (S, P, R)
    maxvio_compute_SPRC : array (S, P, R, C)
    extra : dict of str to (dims, array), optional
        Engine variables (:func:`engine_variables`).
    ep_batch_SPRBE : array (S, P, R, B, E), optional
        Kept loads of each expert-parallel computation batch (with
        ``placement.ep_size``).

    Returns
    -------
    xarray.Dataset
        As documented in :func:`routesim.simulate`.

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config
    >>> load = np.array([[[[3, 1]]]])  # one step, point and replica; two experts
    >>> ds = build_dataset(Config(), None, bias_SPRE=np.zeros((1, 1, 1, 2)), load_SPRE=load,
    ...                    kept_SPRE=load, displaced_SPR=np.zeros((1, 1, 1)),
    ...                    maxvio_compute_SPRC=np.zeros((1, 1, 1, 0)))
    >>> float(ds["maxvio_batch"].item())
    0.5
    """

    indices = list(range(config.num_points) if point_indices is None else point_indices)
    layers = config.model.num_layers
    unfold = _unfolder(layers)
    load_SPRE, kept_SPRE, bias_SPRE, displaced_SPR, maxvio_compute_SPRC, ep_batch_SPRBE = (
        unfold(x) for x in (load_SPRE, kept_SPRE, bias_SPRE, displaced_SPR,
                            maxvio_compute_SPRC, ep_batch_SPRBE))
    dims3 = ("step", "point", "layer", "replica") if layers > 1 else ("step", "point", "replica")
    dims4 = dims3 + ("expert",)
    window = config.run.global_window
    load = load_SPRE.astype(np.int64)
    kept = kept_SPRE.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1.0 - kept.sum(-1) / np.maximum(load.sum(-1), 1)
    data = {
        "expert_load": (dims4, load.astype(np.int32)),
        "kept_load": (dims4, kept.astype(np.int32)),
        "bias": (dims4, bias_SPRE),
        "maxvio_batch": (dims3, metrics.maxvio(load)),
        "maxvio_global": (dims3, metrics.maxvio(metrics.trailing_sum(load, window))),
        "maxvio_global_run": (dims3[1:], metrics.maxvio(load.sum(axis=0))),
        "maxvio_global_final": (dims3[1:], metrics.maxvio(load[-window:].sum(axis=0))),
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
        "step": np.arange(load.shape[0]),
        "point": np.asarray(indices),
        "replica": np.arange(config.run.replicas),
        "expert": np.arange(load.shape[-1]),
    }
    coords.update(sweep_coords(config, indices))
    if config.batch.computation_batch_sizes:
        data["maxvio_compute"] = (dims3 + ("compute_batch",), maxvio_compute_SPRC)
        coords["compute_batch"] = np.asarray(config.batch.computation_batch_sizes)
    if extra:
        data.update({name: _unfold_variable(unfold, dims, value)
                     for name, (dims, value) in extra.items()})
    zero = config.router.zero_experts
    if zero:  # zero-computation experts: the FFN experts' balance and budget
        ffn = load[..., :load.shape[-1] - zero]
        data["maxvio_ffn"] = (dims3, metrics.maxvio(ffn))
        data["ffn_per_token"] = (dims3, ffn.sum(-1) / config.batch.tokens_per_step)
    if layers == 1:  # the oracle scores one layer (refused in the config otherwise)
        data.update(oracle_variables(config, point_indices, bias_SPRE, load))
    data.update(controller_variables(config, indices, load))
    if config.placement.ep_size is not None:  # placement active
        data.update(placement_variables(config, dims3, kept, ep_batch_SPRBE))
        coords["rank"] = np.arange(config.placement.ep_size)
    if layers > 1:
        coords["layer"] = np.arange(layers)
        coords["layer_stat"] = np.asarray(LAYER_STATS, dtype=str)
        data.update(layer_percentiles(data, dims3))
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
        "num_layers": int(layers),
    }
    if config.placement.ep_size is not None:  # placement active
        attrs["ep_size"] = int(config.placement.ep_size)
        attrs["computation_batch_sequences"] = int(
            config.batch.sequences_per_micro_batch * config.placement.ep_size)
    ds = describe(xr.Dataset(data, coords=coords, attrs=attrs))
    return apply_record(ds, config.run.record, config.run.record_every)


def _unfolder(layers: int) -> Any:
    """Reshape axis 1 of a recorded array from ``P * L`` rows to ``(P, L)`` (identity for L = 1)."""
    def unfold(x: np.ndarray | None) -> np.ndarray | None:
        if x is None or layers == 1:
            return x
        return x.reshape((x.shape[0], x.shape[1] // layers, layers) + x.shape[2:])
    return unfold


def _unfold_variable(unfold: Any, dims: tuple[str, ...], value: np.ndarray) -> tuple:
    """An engine variable with its point axis unfolded into (point, layer)."""
    unfolded = unfold(value) if dims[:2] == ("step", "point") else value
    if unfolded is value:
        return dims, value
    return dims[:2] + ("layer",) + dims[2:], unfolded


#: Statistics over layers of a per-layer metric (dimension ``layer_stat``).
LAYER_STATS = ("median", "p90", "max")

#: Per-layer variables summarised across layers.
_ACROSS_LAYERS = ("maxvio_batch", "maxvio_global", "maxvio_ffn", "rank_straggler",
                  "rank_straggler_planned")


def layer_percentiles(data: dict[str, Any], dims3: tuple[str, ...]) -> dict[str, Any]:
    """Median, 90th percentile and maximum over layers of the per-layer metrics.

    ``NAME_across_layers`` for ``maxvio_batch``, ``maxvio_global`` and the
    rank straggler ratios present in ``data``, dims ``(step, point,
    replica, layer_stat)``.

    Parameters
    ----------
    data : dict of str to (dims, array)
        The Dataset's variables, with a ``layer`` dimension.
    dims3 : tuple of str
        ``(step, point, replica)``, the dimensions before ``layer``.

    Returns
    -------
    dict of str to (dims, array)

    Examples
    --------
    >>> import numpy as np
    >>> dims = ("step", "point", "layer", "replica")
    >>> mv = np.arange(10.0).reshape(1, 1, 10, 1)  # ten layers: 0, 1, ..., 9
    >>> out = layer_percentiles({"maxvio_batch": (dims, mv)}, dims)
    >>> out["maxvio_batch_across_layers"][1].ravel().tolist()
    [4.5, 8.1, 9.0]
    """
    axis = dims3.index("layer")
    out_dims = tuple(d for d in dims3 if d != "layer") + ("layer_stat",)
    out = {}
    for name in _ACROSS_LAYERS:
        if name not in data:
            continue
        value = data[name][1]
        stats = [np.median(value, axis=axis), np.quantile(value, 0.9, axis=axis),
                 np.max(value, axis=axis)]
        out[f"{name}_across_layers"] = (out_dims, np.stack(stats, axis=-1))
    return out


def placement_variables(config: Config, dims3: tuple[str, ...], kept: np.ndarray,
                        ep_batch: np.ndarray) -> dict[str, Any]:
    """Rank loads, straggler ratios and Gini of a placement (:mod:`routesim.placement`).

    Parameters
    ----------
    config : Config
        With ``placement.ep_size`` set.
    dims3 : tuple of str
        Dims of a per-step metric (step, point, [layer,] replica).
    kept : int array (S, P, [L,] R, E)
        Kept loads of each step.
    ep_batch : int array (S, P, [L,] R, B, E)
        Kept loads of each computation batch.

    Returns
    -------
    dict of str to (dims, array)
        ``expert_rank`` (expert), ``rank_load`` (step loads per rank),
        ``rank_straggler`` (mean over the step's computation batches of max
        / mean rank load), ``expert_gini`` and ``rank_gini`` (of the step's
        loads). With ``placement.optimise = "greedy"`` also the plan built
        from each row's mean load over the run: ``planned_copies``,
        ``planned_share`` (share of each expert's load on each rank),
        ``rank_load_planned`` and ``rank_straggler_planned``.

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1},
    ...     "batch": {"num_sequences": 2, "micro_batch_size": 1},
    ...     "placement": {"ep_size": 2}})
    >>> kept = np.array([[[[3, 1, 2, 2]]]])         # (S, P, R, E)
    >>> out = placement_variables(cfg, ("step", "point", "replica"), kept, kept[..., None, :])
    >>> out["rank_load"][1].ravel().tolist(), out["rank_straggler"][1].ravel().tolist()
    ([4, 4], [1.0])
    """
    pl = config.placement
    n, ep = config.router.num_experts, pl.ep_size
    if ep is None:
        raise ValueError("placement_variables: placement.ep_size is not set (no placement)")
    rank_E = np.asarray(pl.map) if pl.map is not None else placement.contiguous_map(n, ep)
    share_EK = placement.placement_matrix(rank_E, ep)
    dims_rank = dims3 + ("rank",)
    rank_load = placement.rank_loads(kept, share_EK)
    out = {
        "expert_rank": (("expert",), rank_E.astype(np.int32)),
        "rank_load": (dims_rank, np.rint(rank_load).astype(np.int64)),
        "rank_straggler": (dims3, placement.straggler_ratio(
            placement.rank_loads(ep_batch, share_EK)).mean(axis=-1)),
        "expert_gini": (dims3, placement.gini(kept)),
        "rank_gini": (dims3, placement.gini(rank_load)),
    }
    if pl.planned:
        mean_load = kept.mean(axis=0)                               # (P, [L,] R, E)
        copies = placement.replicate_hottest(mean_load, pl.replicate_hottest)
        share = placement.greedy_pack(mean_load, copies, ep)      # (P, [L,] R, E, K)
        planned = placement.rank_loads(kept, share[None])
        out["planned_copies"] = (dims3[1:] + ("expert",), copies.astype(np.int32))
        out["planned_share"] = (dims3[1:] + ("expert", "rank"), share)
        out["rank_load_planned"] = (dims_rank, planned)
        out["rank_straggler_planned"] = (dims3, placement.straggler_ratio(
            np.einsum("...be,...ek->...bk", ep_batch.astype(np.float64), share[None]))
            .mean(axis=-1))
    return out


def controller_variables(config: Config, indices: Sequence[int],
                         load_SPRE: np.ndarray) -> dict[str, Any]:
    """``bias_update_rate`` (step, point) and, with target shares, ``maxvio_target``.

    The rate is the one of the update that closes the step's window (the
    first window of the step for micro-batch windows), after the schedule
    (:mod:`routesim.controllers.schedules`); NaN for laws without a rate.
    ``maxvio_target`` is ``max_i c_i / (Q_i sum_j c_j) - 1``, MaxVio against
    the target shares ``Q``.

    Parameters
    ----------
    config : Config
        The whole run.
    indices : sequence of int
        Global indices of the recorded points.
    load_SPRE : ndarray (S, P, R, E)
        The recorded loads.

    Returns
    -------
    dict of str to (dims, array)

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config
    >>> cfg = Config().replace(**{"controller.rate_schedule": "inv", "run.steps": 3})
    >>> v = controller_variables(cfg, [0], np.ones((3, 1, 1, 8), dtype=np.int64))
    >>> v["bias_update_rate"][1][:, 0].tolist()
    [0.001, 0.0005, 0.0003333333333333333]
    """
    all_points = config.points()
    points = [all_points[i] for i in indices]
    params = make_controller_params(points)
    steps = load_SPRE.shape[0]
    s = np.arange(steps)
    window_SP = np.stack([
        s * p.batch.num_micro_batches if p.controller.window == "micro_batch" else
        s // p.controller.update_every if p.controller.window == "steps" else s
        for p in points], axis=1)
    has_rate = np.array(["bias_update_rate" in get_law(p.controller.type).fields
                         for p in points])
    u0 = params.fields_P["bias_update_rate"]
    if params.schedule_P:
        # one schedule evaluation per distinct window sequence (usually one for the
        # whole sweep), not one per point: each gives every point's factor (S, P)
        factor = np.ones_like(window_SP, dtype=np.float64)
        columns, which_P = np.unique(window_SP, axis=1, return_inverse=True)
        for c in range(columns.shape[1]):
            chosen_P = np.ravel(which_P) == c
            factor[:, chosen_P] = _factor_column(params.schedule_P, columns[:, c])[:, chosen_P]
    else:
        factor = np.ones_like(window_SP, dtype=np.float64)
    rate = np.where(has_rate, u0 * factor, np.nan)
    data: dict[str, Any] = {"bias_update_rate": (("step", "point"), rate)}
    if params.target_PE is not None:
        # loads are (S, P, R, E), or (S, P, L, R, E) with layers
        middle = load_SPRE.ndim - 3
        q = params.target_PE.reshape((1, len(points)) + (1,) * middle + (-1,))
        total = load_SPRE.sum(-1, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(q > 0, load_SPRE / np.where(q > 0, q * total, 1.0),
                             np.where(load_SPRE > 0, np.inf, 1.0))
        dims = ("step", "point", "layer", "replica") if middle == 2 else ("step", "point", "replica")
        data["maxvio_target"] = (dims, np.where(total[..., 0] > 0, ratio.max(-1) - 1.0, np.nan))
    return data


def _factor_column(schedule: Any, windows: np.ndarray) -> np.ndarray:
    """Schedule factors of every point at the given windows: (S, P)."""
    return rate_factor(schedule["decay"], windows, schedule["warmup"], schedule["horizon"],
                       schedule["final"], schedule["freeze"])


def engine_variables(config: Config, records: dict[str, Any]) -> dict[str, Any]:
    """The Dataset variables of the recorded step outputs beyond the common ones.

    ``records`` holds the recorded :class:`~routesim.engines._common.StepOutput`
    fields, each stacked along a leading step axis; ``records["extra"]`` is
    the engine's extension with its fields stacked the same way (or None).

    Parameters
    ----------
    config : Config
        The whole run.
    records : dict
        The stacked step outputs (see above).

    Returns
    -------
    dict of str to (dims, array)

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config
    >>> rec = {"unrouted_PR": np.zeros((3, 1, 1)), "extra": None,
    ...        "load_PRE": np.ones((3, 1, 1, 2))}
    >>> list(engine_variables(Config(), rec))
    ['unrouted_share']
    """
    data: dict[str, Any] = {}
    if records.get("unrouted_PR") is not None:
        data["unrouted_share"] = (("step", "point", "replica"), records["unrouted_PR"])
    data.update(extra_variables(config, records.get("extra"), records["load_PRE"]))
    return data


def extra_variables(config: Config, extra: Any, load_SPRE: np.ndarray) -> dict[str, Any]:
    """Dataset variables of a stacked engine extension (None: none).

    Parameters
    ----------
    config : Config
        The whole run.
    extra : dataclass or None
        The engine's extension, its fields stacked along a leading step axis.
    load_SPRE : array (S, P, R, E)
        The recorded loads.

    Returns
    -------
    dict of str to (dims, array)

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config
    >>> from routesim.engines._common import MeanFieldExtra
    >>> ev = MeanFieldExtra(evaluations_PR=np.array([[[1, 1]], [[0, 2]]]))  # (S, P, R)
    >>> dims, total = extra_variables(Config(), ev, None)["meanfield_evaluations"]
    >>> dims, total.tolist()
    (('point', 'replica'), [[1, 3]])"""
    if isinstance(extra, ExpertChoiceExtra):
        return {"experts_per_token": (("step", "point", "replica", "num_assigned"),
                                      extra.experts_per_token_PRJ.astype(np.int32))}
    if isinstance(extra, MeanFieldExtra):
        # stacked over steps, then summed: per point and replica, whatever ran beside them
        return {"meanfield_evaluations": (("point", "replica"),
                                          extra.evaluations_PR.sum(axis=0).astype(np.int64))}
    if isinstance(extra, LearnerExtra):
        return _learner_variables(config, extra, load_SPRE)
    return {}


def _named(field_name: str) -> tuple[str, tuple[str, ...]]:
    """``task_proxy_PR`` -> ``("task_proxy", ("step", "point", "replica"))``."""
    name, shape = field_name.rsplit("_", 1)
    return name, ("step",) + tuple(_DIM_OF[c] for c in shape)


def _load_ratio(load_SPRE: np.ndarray) -> np.ndarray:
    """Max over min of the run's total load per expert: (P, R); inf with a dead expert."""
    total = load_SPRE.sum(axis=0).astype(np.float64)
    low, high = total.min(axis=-1), total.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(low > 0, high / np.where(low > 0, low, 1.0), np.inf)


def _learner_variables(config: Config, extra: LearnerExtra,
                       load_SPRE: np.ndarray) -> dict[str, Any]:
    """The learning engine's variables (see :func:`routesim.engines.learner.simulate_learner`)."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(extra):
        value = getattr(extra, f.name)
        if value is not None and f.name != "eval_load_PRE":
            name, dims = _named(f.name)
            data[name] = (dims, value)
    window = config.run.global_window
    pr = ("point", "replica")
    data["load_ratio"] = (pr, _load_ratio(load_SPRE))
    proj = extra.task_projection_PR
    with np.errstate(invalid="ignore"):
        # steps whose total gradient points against the task gradient (NaN steps left out)
        data["reversal_share"] = (pr, np.sum(proj < 0, axis=0)
                                  / np.maximum(np.sum(np.isfinite(proj), axis=0), 1))
    if extra.eval_load_PRE is not None:
        ev = extra.eval_load_PRE.astype(np.int64)
        data["eval_load"] = (("step", "point", "replica", "expert"), ev.astype(np.int32))
        data["maxvio_global_eval"] = (("step", "point", "replica"),
                                      metrics.maxvio(metrics.trailing_sum(ev, window)))
        data["maxvio_global_eval_run"] = (pr, metrics.maxvio(ev.sum(axis=0)))
        data["load_ratio_eval"] = (pr, _load_ratio(ev))
    return data
