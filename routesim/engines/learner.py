"""The learning engine: a router whose weights take gradient steps, beside the bias.

``make_learner_simulator(config)`` returns a pure ``(init, step)`` pair like
:func:`routesim.engines.exact.make_simulator`; :func:`simulate` dispatches here when
``penalty.learn`` is true. One step is one global batch and one optimizer
step:

1. tokens ``x`` and their topics (:func:`routesim.traffic.token_features`);
   logits ``z = x @ W.T`` (noisy gate: ``H = z + eps * softplus(x @ W_noise.T)``);
2. scores, then biased top-K selection per micro-batch; the bias controller
   (:func:`routesim.controllers.update_bias`) closes its window after a
   micro-batch, the global batch or n steps, exactly as in the exact engine;
3. the task-loss proxy (:mod:`routesim.learning.task_proxy`) and the penalties
   (:mod:`routesim.learning.penalties`, :mod:`routesim.learning.noisy_gate`), each with its
   analytic gradient on the logits, turned into gradients on ``W``;
4. interference: cosine between the task and penalty gradients on ``W`` and
   the share of the task gradient the penalty cancels;
5. one SGD or Adam step on ``W`` (and ``W_noise``) with the summed gradient;
   the expert usage behind the rich-get-richer quality is updated from the
   step's loads.

With the noisy gate the step's tokens are routed a second time with the
noise off (the evaluation window: same router and bias as the training
pass, no learning), giving ``eval_load``.

By default the points of a sweep share the random numbers of each replica
(``penalty.common_random_numbers``): the same topic centres, affinities,
initial router, tokens and gate noise, so that a sweep over penalties and
controllers is a paired comparison of the treatments alone.

Penalty weights and the learning rate follow their schedules
(:mod:`routesim.learning.optim`) and are reported per step. Everything is computed
for all points and replicas at once; points may differ in penalty type,
weights, learning rate, rich-get-richer strength and controller.

Shape legend: P points, R replicas, B sequences, T tokens, E experts,
K top-k, D features, M topics, C computation-batch sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ..learning import noisy_gate, optim, penalties, task_proxy
from .. import controllers, rng, routing, traffic
from .._backend import get_namespace, one_hot
from ..config import Config
from ..exceptions import ConfigError
from ..gates import gate

__all__ = ["LearnerState", "LearnerOutput", "make_learner_simulator", "simulate_learner",
           "NOISE_STREAM"]

#: Stream id of the noisy gate's draws (``rng.Stream.EXTRA`` upwards is free).
NOISE_STREAM = rng.Stream.EXTRA + 20


@dataclass(frozen=True)
class LearnerState:
    """Everything carried from one step to the next.

    Attributes
    ----------
    step : int
        Index of the next step.
    weight_PRED : array (P, R, E, D)
        Router weights ``W``.
    noise_weight_PRED : array (P, R, E, D) or None
        ``W_noise`` of the noisy gate.
    moments : tuple of arrays
        Adam's ``(m_W, v_W[, m_noise, v_noise])``; empty for SGD.
    bias_PRE, memory_PRE : arrays (P, R, E)
        Controller bias and memory.
    window_load_PRE : int array (P, R, E)
        Loads of the open controller window.
    windows_done : int
        Controller windows closed so far.
    usage_PRE : array (P, R, E)
        EMA of ``N * F_i`` behind the expert quality.
    affinity_PRME : array (P, R, M, E)
        Topic-expert affinities of the task proxy.
    traffic : traffic.TrafficState
    """

    step: int
    weight_PRED: Any
    noise_weight_PRED: Any
    moments: tuple
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    windows_done: int
    usage_PRE: Any
    affinity_PRME: Any
    traffic: traffic.TrafficState


@dataclass(frozen=True)
class LearnerOutput:
    """What one step reports: the exact engine's fields plus ``extra``.

    ``extra`` maps a variable name to an array of shape (P, R), (P,) or
    (P, R, E): ``task_proxy``, ``task_affinity``, ``penalty``,
    ``balance_loss``, ``z_loss_value``, ``interference``,
    ``cancelled_share``, ``max_logit``, ``logit_spread``, ``alpha_t``,
    ``z_loss_t``, ``lr_t``, ``expert_quality`` and, with the noisy gate,
    ``importance_cv2``, ``load_cv2``, ``eval_load``, ``gate_noise`` (mean
    noise scale ``softplus(x @ W_noise.T)``).
    """

    bias_PRE: Any
    load_PRE: Any
    kept_PRE: Any
    displaced_PR: Any
    maxvio_compute_PRC: Any
    extra: dict


LearnerSimulator = tuple[Callable[[], LearnerState],
                         Callable[[LearnerState], tuple[LearnerState, LearnerOutput]]]


def _select_points(config: Config, point_indices: Sequence[int] | None) -> tuple[list, list]:
    all_points = config.points()
    idx = list(range(len(all_points)) if point_indices is None else point_indices)
    if not idx:
        raise ConfigError("point_indices: empty; give at least one point")
    for i in idx:
        if not 0 <= i < len(all_points):
            raise ConfigError(f"point_indices: {i} is not a point index in [0, {len(all_points)})")
    return idx, [all_points[i] for i in idx]


def make_learner_simulator(config: Config, point_indices: Sequence[int] | None = None,
                           xp: ModuleType | None = None) -> LearnerSimulator:
    """Build the pure ``(init, step)`` pair of the learning engine.

    Parameters
    ----------
    config : Config
        The run (``penalty.learn`` must be true); its sweep defines the points.
    point_indices : sequence of int, optional
        Run only these points (global indices into the sweep).
    xp : namespace, optional
        Array namespace; default from ``config.run.backend``.

    Returns
    -------
    init : callable () -> LearnerState
    step : callable (LearnerState) -> (LearnerState, LearnerOutput)

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"steps": 2}, "traffic": {"kind": "features"},
    ...     "batch": {"num_sequences": 2, "seq_length": 16},
    ...     "router": {"num_experts": 4, "topk": 2}, "penalty": {"learn": True}})
    >>> init, step = make_learner_simulator(cfg)
    >>> state, out = step(init())
    >>> int(out.load_PRE.sum()), state.step
    (64, 1)
    """
    point_indices, points = _select_points(config, point_indices)
    cfg = points[0]
    if not cfg.penalty.learn:
        raise ConfigError("penalty.learn = False: the learning engine needs penalty.learn = true")
    xp = xp or get_namespace(cfg.run.backend)
    run, batch, router, ctrl, pen = cfg.run, cfg.batch, cfg.router, cfg.controller, cfg.penalty
    f64 = xp.float64
    bias_dtype = xp.float32 if run.bias_dtype == "float32" else f64
    n, k, d = router.num_experts, router.topk, cfg.traffic.feature_dim
    L, seqs_mb, n_mb = batch.seq_length, batch.sequences_per_micro_batch, batch.num_micro_batches
    tokens, t_mb = batch.tokens_per_step, batch.sequences_per_micro_batch * batch.seq_length
    noisy = pen.noisy_gate
    gate_name = "noisy" if noisy else router.score_function
    aux_gate = "softmax" if noisy else router.score_function
    # common random numbers: every point draws replica r's numbers (point 0's keys)
    key_points = [0] * len(points) if pen.common_random_numbers else point_indices
    keys_PR = xp.asarray(rng.point_keys(run.seed, key_points, run.replicas))
    tparams = traffic.make_traffic_params(points)
    cparams = controllers.make_controller_params(points)
    shape_PRE = (len(points), run.replicas, n)
    types_P = np.array([p.penalty.type for p in points])

    def col(name: str) -> np.ndarray:
        return np.array([getattr(p.penalty, name) for p in points], dtype=np.float64)

    alpha_P, zcoef_P, lr_P = col("alpha"), col("z_loss"), col("learning_rate")
    imp_P, loadw_P, gamma_P = col("importance_loss"), col("load_loss"), col("quality_strength")

    def per_point(values_P: np.ndarray, ndim: int) -> Any:
        return xp.reshape(xp.asarray(values_P, dtype=f64), (-1,) + (1,) * (ndim - 1))

    sched_steps = pen.schedule_steps or run.steps

    def coef(kind: str, t: int) -> float:
        return optim.weight_at(kind, t, 1.0, steps=sched_steps,
                               final_fraction=pen.schedule_final_fraction,
                               delay=pen.schedule_delay, width=pen.schedule_width)

    def init() -> LearnerState:
        tstate = traffic.init_traffic(xp, tparams, keys_PR)
        w = xp.astype(tstate.weight_PRED, f64)
        wn = None
        if noisy:
            wn = pen.noise_init_scale * rng.standard_normal(
                xp, keys_PR, -1, NOISE_STREAM, xp.arange(n, dtype=xp.uint64), d, f64)
        moments: tuple = ()
        if pen.optimizer == "adam":
            params = (w,) if wn is None else (w, wn)
            moments = tuple(xp.zeros_like(a) for a in params for _ in (0, 1))
        zeros = xp.zeros(shape_PRE, dtype=bias_dtype)
        init_bias = 1.0 if router.bias_mode == "multiplicative" else 0.0
        affinity = task_proxy.draw_affinity(xp, keys_PR, cfg.traffic.num_topics, n,
                                            col("affinity_scale"), f64)
        return LearnerState(step=0, weight_PRED=w, noise_weight_PRED=wn, moments=moments,
                            bias_PRE=zeros + init_bias, memory_PRE=zeros,
                            window_load_PRE=xp.zeros(shape_PRE, dtype=xp.int64),
                            windows_done=0, usage_PRE=xp.ones(shape_PRE, dtype=f64),
                            affinity_PRME=affinity, traffic=tstate)

    def route(state: LearnerState, s: Any, plain_idx: Any, t: int
              ) -> tuple[LearnerState, Any, Any, Any]:
        """Biased top-K per micro-batch with the controller in the loop."""
        masks, counts, displaced = [], [], xp.zeros(shape_PRE[:2], dtype=f64)
        for mb in range(n_mb):
            s_mb = s[:, :, mb * t_mb:(mb + 1) * t_mb, :]
            sel = routing.selection_scores(xp, s_mb, xp.astype(state.bias_PRE, f64),
                                           router.bias_mode)
            idx = routing.select_topk(xp, sel, k, router.num_groups, router.group_topk)
            routed = routing.counts_per_sequence(xp, idx, seqs_mb, L, n)
            masks.append(one_hot(xp, idx, n))
            counts.append(routed)
            if run.record_displacement:
                plain = plain_idx[:, :, mb * t_mb:(mb + 1) * t_mb, :]
                displaced = displaced + routing.displaced_share(xp, idx, plain) / n_mb
            state = dataclasses.replace(
                state, window_load_PRE=state.window_load_PRE + xp.sum(routed, axis=2))
            if ctrl.window == "micro_batch":
                state = close_window(state)
        if ctrl.window == "global_batch" or (
                ctrl.window == "steps" and (t + 1) % ctrl.update_every == 0):
            state = close_window(state)
        if not run.record_displacement:
            displaced = xp.full(shape_PRE[:2], float("nan"), dtype=f64)
        return state, xp.concat(masks, axis=2), xp.concat(counts, axis=2), displaced

    def close_window(state: LearnerState) -> LearnerState:
        bias, memory = controllers.update_bias(xp, cparams, state.bias_PRE, state.memory_PRE,
                                               state.window_load_PRE, None, state.windows_done)
        return dataclasses.replace(state, bias_PRE=bias, memory_PRE=memory,
                                   window_load_PRE=xp.zeros_like(state.window_load_PRE),
                                   windows_done=state.windows_done + 1)

    def penalty_terms(t: int, h: Any, mask: Any, unbiased: Any, clean: Any, raw: Any,
                      eps: Any) -> tuple[Any, Any, Any, dict]:
        """Weighted penalty value, its gradients on h, on clean logits and on raw noise."""
        zero_PR = xp.zeros(shape_PRE[:2], dtype=f64)
        value, d_h, d_clean, d_raw = zero_PR, xp.zeros_like(h), None, None
        logs = {"balance_loss": zero_PR, "z_loss_value": zero_PR}
        w_bal, w_z = coef(pen.alpha_schedule, t), coef(pen.z_loss_schedule, t)
        if np.any(types_P != "none"):
            fmap = unbiased if pen.f_map == "unbiased" else mask
            for typ, groups in (("switch", n_mb), ("sequence", batch.num_sequences),
                                ("global_batch", 1)):
                chosen = types_P == typ
                if not chosen.any():
                    continue
                val, grad = penalties.balance_loss(xp, h, fmap, aux_gate, k, groups,
                                                   pen.normalization)
                c_P = np.where(chosen, alpha_P * w_bal, 0.0)
                value = value + per_point(c_P, 2) * val
                d_h = d_h + per_point(c_P, 4) * grad
                logs["balance_loss"] = xp.where(per_point(chosen, 2) > 0, val,
                                                logs["balance_loss"])
        if np.any(zcoef_P > 0):
            val, grad = penalties.z_loss(xp, h)
            value = value + per_point(zcoef_P * w_z, 2) * val
            d_h = d_h + per_point(zcoef_P * w_z, 4) * grad
            # 0 where the point has no z-loss, as if it ran alone
            logs["z_loss_value"] = xp.where(per_point(zcoef_P > 0, 2) > 0, val, zero_PR)
        if noisy:
            val, grad = noisy_gate.importance_loss(xp, h, mask, n_mb)
            value = value + per_point(imp_P * w_bal, 2) * val
            d_h = d_h + per_point(imp_P * w_bal, 4) * grad
            logs["importance_cv2"] = val
            val, d_clean, d_raw = noisy_gate.load_loss(xp, clean, raw, eps, k, n_mb)
            value = value + per_point(loadw_P * w_bal, 2) * val
            d_clean = per_point(loadw_P * w_bal, 4) * d_clean
            d_raw = per_point(loadw_P * w_bal, 4) * d_raw
            logs["load_cv2"] = val
        logs["alpha_t"] = xp.asarray(alpha_P * w_bal, dtype=f64)
        logs["z_loss_t"] = xp.asarray(zcoef_P * w_z, dtype=f64)
        return value, d_h, (d_clean, d_raw), logs

    def optimize(state: LearnerState, t: int, grads: tuple) -> LearnerState:
        lr = per_point(lr_P * optim.lr_at(pen.lr_schedule, t, 1.0, total=run.steps,
                                          final_fraction=pen.lr_final_fraction), 4)
        params = (state.weight_PRED,) if grads[1] is None else (state.weight_PRED,
                                                                 state.noise_weight_PRED)
        new, moments = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            if pen.optimizer == "adam":
                p, m, v = optim.adam_step(xp, p, g, state.moments[2 * i],
                                          state.moments[2 * i + 1], t + 1, lr=lr,
                                          beta1=pen.adam_beta1, beta2=pen.adam_beta2,
                                          eps=pen.adam_eps)
                moments += [m, v]
            else:
                p = optim.sgd_step(xp, p, g, lr)
            new.append(p)
        return dataclasses.replace(state, weight_PRED=new[0],
                                   noise_weight_PRED=new[1] if len(new) > 1 else None,
                                   moments=tuple(moments))

    def step(state: LearnerState) -> tuple[LearnerState, LearnerOutput]:
        t = state.step
        tstate = traffic.advance_traffic(xp, tparams, state.traffic, keys_PR, t)
        state = dataclasses.replace(state, traffic=tstate)
        x32, topic = traffic.token_features(xp, tparams, tstate, keys_PR, t, 0, tokens)
        x = xp.astype(x32, f64)
        clean = penalties.router_logits(xp, x, state.weight_PRED)
        raw = eps = None
        if noisy:
            raw = penalties.router_logits(xp, x, state.noise_weight_PRED)
            eps = rng.standard_normal(xp, keys_PR, t, NOISE_STREAM,
                                      xp.arange(tokens, dtype=xp.uint64), n, f64)
            h, sigma = noisy_gate.noisy_logits(xp, clean, raw, eps)
            s = gate(xp, "softmax", h)
        else:
            h = clean
            s = penalties.aux_probabilities(xp, aux_gate, h)[0] if aux_gate == "softmax" \
                else penalties._sigmoid(xp, h)
        first_bias = state.bias_PRE
        # the unbiased top-K: displacement reference and (without groups) the map of f
        plain_idx = routing.select_topk(xp, s, k, router.num_groups, router.group_topk)
        unbiased = (one_hot(xp, plain_idx, n) if router.num_groups is None
                    else penalties.topk_map(xp, h, k))
        state, mask, routed_seq, displaced = route(state, s, plain_idx, t)
        load = xp.sum(routed_seq, axis=2)
        quality = per_point(gamma_P, 3) * (state.usage_PRE - 1.0)
        values = task_proxy.token_values(xp, topic, state.affinity_PRME, quality)
        proxy, d_task, weights = task_proxy.task_loss(xp, gate_name, h, mask, values, k,
                                                      router.topk_scaling_factor,
                                                      router.pre_softmax)
        affinity_part = xp.mean(xp.sum(weights * (values - quality[:, :, None, :]), axis=-1),
                                axis=-1)
        pen_value, d_pen, (d_clean_load, d_raw_load), logs = penalty_terms(
            t, h, mask, unbiased, clean, raw, eps)
        g_task = penalties.weight_grad(xp, d_task, x)
        g_pen = penalties.weight_grad(
            xp, d_pen if d_clean_load is None else d_pen + d_clean_load, x)
        grads: tuple = (g_task + g_pen, None)
        if noisy:
            d_raw = (d_task + d_pen) * eps * penalties._sigmoid(xp, raw) + d_raw_load
            grads = (g_task + g_pen, penalties.weight_grad(xp, d_raw, x))
        cos, cancelled = penalties.interference(xp, g_task, g_pen)
        state = optimize(state, t, grads)
        usage = task_proxy.update_usage(xp, state.usage_PRE, load, pen.quality_memory, k, tokens)
        extra = dict(logs, task_proxy=proxy, task_affinity=affinity_part, penalty=pen_value,
                     interference=cos, cancelled_share=cancelled,
                     max_logit=xp.max(h, axis=(-2, -1)),
                     logit_spread=xp.mean(xp.std(h, axis=-1), axis=-1),
                     lr_t=xp.asarray(lr_P * optim.lr_at(pen.lr_schedule, t, 1.0, total=run.steps,
                                                        final_fraction=pen.lr_final_fraction)),
                     expert_quality=quality)
        if noisy:
            s_eval = gate(xp, "softmax", clean)
            sel = routing.selection_scores(xp, s_eval, xp.astype(first_bias, f64),
                                           router.bias_mode)
            idx = routing.select_topk(xp, sel, k, router.num_groups, router.group_topk)
            extra["eval_load"] = xp.sum(routing.counts_per_sequence(
                xp, idx, batch.num_sequences, L, n), axis=2)
            extra["gate_noise"] = xp.mean(sigma, axis=(-2, -1))
        out = LearnerOutput(bias_PRE=first_bias, load_PRE=load, kept_PRE=load,
                            displaced_PR=displaced,
                            maxvio_compute_PRC=_maxvio_compute(xp, routed_seq,
                                                               batch.computation_batch_sizes),
                            extra=extra)
        return dataclasses.replace(state, step=t + 1, usage_PRE=usage), out

    return init, step


def _maxvio_compute(xp: ModuleType, routed_PRBE: Any, sizes: tuple[int, ...]) -> Any:
    """Mean MaxVio over computation batches of each size: (P, R, C)."""
    p, r, b, e = routed_PRBE.shape
    out = []
    for size in sizes:
        g = xp.astype(xp.sum(xp.reshape(routed_PRBE, (p, r, b // size, size, e)), axis=3),
                      xp.float64)
        mean = xp.mean(g, axis=-1)
        out.append(xp.mean((xp.max(g, axis=-1) - mean) / mean, axis=-1))
    return xp.stack(out, axis=-1) if out else xp.zeros((p, r, 0), dtype=xp.float64)


_DIMS = {2: ("step", "point"), 3: ("step", "point", "replica"),
         4: ("step", "point", "replica", "expert")}


def _load_ratio(load_SPRE: np.ndarray) -> np.ndarray:
    """Max over min of the run's total load per expert: (P, R); inf with a dead expert."""
    total = load_SPRE.sum(axis=0).astype(np.float64)
    low, high = total.min(axis=-1), total.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(low > 0, high / np.where(low > 0, low, 1.0), np.inf)


def simulate_learner(config: Config, *, point_indices: Sequence[int] | None = None,
                     progress: bool | None = None) -> Any:
    """Run the learning engine over all steps and return the result Dataset.

    Parameters
    ----------
    config : Config
        With ``penalty.learn = true``.
    point_indices : sequence of int, optional
        Run only these points of the sweep.
    progress : bool or None
        Progress bar on stderr; None shows it only on a terminal.

    Returns
    -------
    xarray.Dataset
        The exact engine's variables (:func:`routesim.simulate`) plus, per
        step, point and replica, ``task_proxy``, ``task_affinity``,
        ``penalty``, ``balance_loss``, ``z_loss_value``, ``interference``,
        ``cancelled_share``, ``max_logit``, ``logit_spread``; per step and
        point ``alpha_t``, ``z_loss_t``, ``lr_t``; ``expert_quality`` per
        expert; ``load_ratio`` (max/min total load over the run) and
        ``maxvio_global_final`` (MaxVio of the loads of the last
        ``run.global_window`` steps) per point and replica. With the noisy
        gate also ``importance_cv2``, ``load_cv2``, ``gate_noise``,
        ``eval_load``, ``maxvio_global_eval`` (trailing
        ``run.global_window`` steps of ``eval_load``),
        ``maxvio_global_eval_run`` and ``load_ratio_eval``.
    """
    from .. import faults, metrics, resources
    from .._backend import to_numpy
    from ..run import _progress, _quiet, build_dataset

    progress = resources.check(config, point_indices, progress)
    init, step = make_learner_simulator(config, point_indices)
    check = faults.make_step_check(config, point_indices, get_namespace(config.run.backend))
    state = init()
    records: dict[str, list[np.ndarray]] = {}
    with _progress(progress, config.run.steps, "routesim (learning)") as bar:
        for _ in range(config.run.steps):
            with _quiet(check):
                state, out = step(state)
            check(state, out)
            fields = {"bias": out.bias_PRE, "load": out.load_PRE, "disp": out.displaced_PR,
                      "mvcb": out.maxvio_compute_PRC, **out.extra}
            for key, value in fields.items():
                records.setdefault(key, []).append(to_numpy(value))
            bar.update(1)
    s = {k: np.stack(v) for k, v in records.items()}
    extra: dict[str, Any] = {}
    for key, value in s.items():
        if key not in ("bias", "load", "disp", "mvcb", "eval_load"):
            extra[key] = (_DIMS[value.ndim], value)
    window = config.run.global_window
    extra["load_ratio"] = (("point", "replica"), _load_ratio(s["load"]))
    extra["maxvio_global_final"] = (("point", "replica"),
                                    metrics.maxvio(s["load"][-window:].sum(axis=0)))
    if "eval_load" in s:
        ev = s["eval_load"].astype(np.int64)
        extra["eval_load"] = (_DIMS[4], ev.astype(np.int32))
        extra["maxvio_global_eval"] = (_DIMS[3], metrics.maxvio(metrics.trailing_sum(ev, window)))
        extra["maxvio_global_eval_run"] = (("point", "replica"), metrics.maxvio(ev.sum(axis=0)))
        extra["load_ratio_eval"] = (("point", "replica"), _load_ratio(ev))
    return build_dataset(config, point_indices, bias_SPRE=s["bias"], load_SPRE=s["load"],
                         kept_SPRE=s["load"], displaced_SPR=s["disp"],
                         maxvio_compute_SPRC=s["mvcb"], extra=extra)
