"""The learning engine: a router whose weights take gradient steps, beside the bias.

``make_learner_simulator(config)`` returns a pure ``(init, step)`` pair like
:func:`routesim.engines.exact.make_simulator`; :func:`routesim.simulate` runs it
when ``penalty.learn`` is true. One step is one global batch and one optimizer
step:

1. tokens ``x`` and their topics (:func:`routesim.traffic.token_features`);
   logits ``z = x @ W.T`` (noisy gate: ``H = z + eps * softplus(x @ W_noise.T)``);
2. scores, then biased top-K selection per micro-batch; the bias controller
   (:func:`routesim.controllers.update_bias`) closes its window after a
   micro-batch, the global batch or n steps, exactly as in the exact engine;
3. the task-loss proxy (:mod:`routesim.learning.task_proxy`) and the penalties
   (:mod:`routesim.learning.penalties`, :mod:`routesim.learning.noisy_gate`), each with its
   analytic gradient on the logits, turned into gradients on ``W``;
4. interference: cosine between the task and penalty gradients on ``W``, the
   share of the task gradient the penalty cancels (clipped to [0, 1]) and the
   signed projection of the total gradient on the task gradient (negative
   when the step goes against the task);
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
from .._backend import one_hot
from .._math import sigmoid
from ..config import Config
from ..exceptions import ConfigError
from ..gates import gate
from .learner_penalty import penalty_terms, per_point
from ._common import (LearnerExtra, PointPlan, StepOutput, closes_after_micro_batch,
                      closes_after_step, initial_bias, make_plan, maxvio_compute,
                      update_controller)

__all__ = ["LearnerState", "LearnerOutput", "LearnerPlan", "make_learner_simulator",
           "make_plan_learner", "init_state", "step_state", "drop_by_position", "NOISE_STREAM"]

#: Stream id of the noisy gate's draws (``rng.Stream.EXTRA`` upwards is free).
NOISE_STREAM = rng.Stream.EXTRA + 20

#: What a step of the learning engine reports (its extension is a ``LearnerExtra``).
LearnerOutput = StepOutput


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

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> state = init_state(make_plan_learner(cfg))
    >>> state.step, state.bias_PRE.shape, state.noise_weight_PRED is None
    (0, (1, 1, 4), True)
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


LearnerSimulator = tuple[Callable[[], LearnerState],
                         Callable[[LearnerState], tuple[LearnerState, StepOutput]]]


@dataclass(frozen=True)
class LearnerPlan:
    """What the learning engine fixes once per run (see :func:`make_plan_learner`).

    Attributes
    ----------
    points : PointPlan
    tparams, cparams : traffic and controller parameters of the points.
    types_P, losses_P : str arrays (P,)
        Balance-loss groups (``penalty.type``) and objective (``penalty.loss``)
        of each point.
    alpha_P, zcoef_P, lr_P, imp_P, loadw_P, gamma_P, affinity_P : float arrays (P,)
        Per-point penalty weights, learning rate, rich-get-richer strength and
        affinity scale.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> plan = make_plan_learner(cfg)
    >>> plan.types_P.tolist(), plan.alpha_P.shape
    (['none'], (1,))
    """

    points: PointPlan
    tparams: Any
    cparams: Any
    types_P: np.ndarray
    losses_P: np.ndarray
    alpha_P: np.ndarray
    zcoef_P: np.ndarray
    lr_P: np.ndarray
    imp_P: np.ndarray
    loadw_P: np.ndarray
    gamma_P: np.ndarray
    affinity_P: np.ndarray

    @property
    def cfg(self) -> Config:
        """The first point's config (fields that cannot be swept)."""
        return self.points.first

    @property
    def aux_gate(self) -> str:
        """The gate of the auxiliary probabilities (softmax under the noisy gate)."""
        return "softmax" if self.cfg.penalty.noisy_gate else self.cfg.router.score_function


def make_plan_learner(config: Config, point_indices: Sequence[int] | None = None,
                      xp: ModuleType | None = None) -> LearnerPlan:
    """Check the points and fix everything the learning engine needs for the run.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> make_plan_learner(config_from_dict({"router": {"num_experts": 4, "topk": 1}}))
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: penalty.learn = False: the learning engine needs penalty.learn = true
    """
    # common random numbers: every point draws replica r's numbers (point 0's keys)
    pp = make_plan(config, point_indices, xp,
                   common_random_numbers=config.penalty.common_random_numbers)
    if not pp.first.penalty.learn:
        raise ConfigError("penalty.learn = False: the learning engine needs penalty.learn = true")

    def col(name: str) -> np.ndarray:
        return np.array([getattr(p.penalty, name) for p in pp.points], dtype=np.float64)

    return LearnerPlan(points=pp, tparams=traffic.make_traffic_params(pp.points),
                       cparams=controllers.make_controller_params(pp.points),
                       types_P=np.array([p.penalty.type for p in pp.points]),
                       losses_P=np.array([p.penalty.loss for p in pp.points]),
                       alpha_P=col("alpha"), zcoef_P=col("z_loss"), lr_P=col("learning_rate"),
                       imp_P=col("importance_loss"), loadw_P=col("load_loss"),
                       gamma_P=col("quality_strength"), affinity_P=col("affinity_scale"))


def _lr_factor(plan: LearnerPlan, t: int) -> float:
    pen = plan.cfg.penalty
    return optim.lr_at(pen.lr_schedule, t, 1.0, total=plan.cfg.run.steps,
                       final_fraction=pen.lr_final_fraction)


def init_state(plan: LearnerPlan) -> LearnerState:
    """The state before the first step.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> float(init_state(make_plan_learner(cfg)).usage_PRE.sum())  # usage starts at 1
    4.0
    """
    pp, cfg = plan.points, plan.cfg
    xp, f64, pen, n = pp.xp, pp.xp.float64, cfg.penalty, cfg.router.num_experts
    tstate = traffic.init_traffic(xp, plan.tparams, pp.keys_PR)
    w = xp.astype(tstate.weight_PRED, f64)
    wn = None
    if pen.noisy_gate:
        wn = pen.noise_init_scale * rng.standard_normal(
            xp, pp.keys_PR, -1, NOISE_STREAM, xp.arange(n, dtype=xp.uint64),
            cfg.traffic.feature_dim, f64)
    moments: tuple = ()
    if pen.optimizer == "adam":
        params = (w,) if wn is None else (w, wn)
        moments = tuple(xp.zeros_like(a) for a in params for _ in (0, 1))
    affinity = task_proxy.draw_affinity(xp, pp.keys_PR, cfg.traffic.num_topics, n,
                                        plan.affinity_P, f64)
    return LearnerState(step=0, weight_PRED=w, noise_weight_PRED=wn, moments=moments,
                        bias_PRE=initial_bias(pp),
                        memory_PRE=xp.zeros(pp.shape_PRE, dtype=pp.dtype),
                        window_load_PRE=xp.zeros(pp.shape_PRE, dtype=xp.int64),
                        windows_done=0, usage_PRE=xp.ones(pp.shape_PRE, dtype=f64),
                        affinity_PRME=affinity, traffic=tstate)


def close_window(plan: LearnerPlan, state: LearnerState) -> LearnerState:
    """Apply the controller to the window's loads and open a new window."""
    bias, memory = update_controller(plan.points.xp, plan.cparams, state.bias_PRE,
                                     state.memory_PRE, state.window_load_PRE, None,
                                     state.windows_done)
    return dataclasses.replace(state, bias_PRE=bias, memory_PRE=memory,
                               window_load_PRE=plan.points.xp.zeros_like(state.window_load_PRE),
                               windows_done=state.windows_done + 1)


@dataclass(frozen=True)
class _Routed:
    """A step's routing: chosen and kept assignments, loads per sequence."""

    mask: Any         # (P, R, T, E) chosen (biased top-K)
    kept: Any         # (P, R, T, E) kept after capacity (the mask when dropless)
    routed_seq: Any   # (P, R, B, E) chosen per sequence
    kept_seq: Any     # (P, R, B, E) kept per sequence
    displaced: Any    # (P, R)


def route(plan: LearnerPlan, state: LearnerState, fw: _Forward, plain_idx: Any, t: int
          ) -> tuple[LearnerState, _Routed]:
    """Biased top-K and capacity per micro-batch, with the controller in the loop.

    The controller window counts the kept loads, as in the exact engine; with
    ``router.capacity_factor`` each micro-batch's assignments beyond
    ``routing.capacity`` are dropped by :func:`routesim.routing.drop_to_capacity`
    (``probs``: the smallest mixing weights go first).
    """
    xp, cfg, shape_PR = plan.points.xp, plan.cfg, plan.points.shape_PRE[:2]
    batch, router, record = cfg.batch, cfg.router, cfg.run.record_displacement
    n_mb, k, n = batch.num_micro_batches, router.topk, router.num_experts
    seqs_mb = batch.sequences_per_micro_batch
    t_mb = seqs_mb * batch.seq_length
    cap = routing.capacity(t_mb, k, n, router.capacity_factor)
    gate_kind = "noisy" if cfg.penalty.noisy_gate else router.score_function
    masks, kept_masks, counts, kept_counts = [], [], [], []
    displaced = xp.zeros(shape_PR, dtype=xp.float64)
    for mb in range(n_mb):
        rows = slice(mb * t_mb, (mb + 1) * t_mb)
        sel = routing.selection_scores(xp, fw.s[:, :, rows, :],
                                       xp.astype(state.bias_PRE, xp.float64), router.bias_mode)
        idx = routing.select_topk(xp, sel, k, router.num_groups, router.group_topk)
        mask = one_hot(xp, idx, n)
        routed = routing.counts_per_sequence(xp, idx, seqs_mb, batch.seq_length, n)
        kept, kept_routed = mask, routed
        if cap < t_mb:
            w = task_proxy.mixing_weights(xp, gate_kind, fw.h[:, :, rows, :], mask, k,
                                          router.topk_scaling_factor, router.pre_softmax)
            kept = routing.drop_to_capacity(xp, mask, w, cap, router.token_drop_policy,
                                            seqs_mb, batch.seq_length)
            kept_routed = routing.mask_counts_per_sequence(xp, kept, seqs_mb, batch.seq_length)
        masks.append(mask)
        kept_masks.append(kept)
        counts.append(routed)
        kept_counts.append(kept_routed)
        if record:
            plain = plain_idx[:, :, rows, :]
            displaced = displaced + routing.displaced_share(xp, idx, plain) / n_mb
        state = dataclasses.replace(
            state, window_load_PRE=state.window_load_PRE + xp.sum(kept_routed, axis=2))
        if closes_after_micro_batch(cfg.controller):
            state = close_window(plan, state)
    if closes_after_step(cfg.controller, t):
        state = close_window(plan, state)
    if not record:
        displaced = xp.full(shape_PR, float("nan"), dtype=xp.float64)
    return state, _Routed(mask=xp.concat(masks, axis=2), kept=xp.concat(kept_masks, axis=2),
                          routed_seq=xp.concat(counts, axis=2),
                          kept_seq=xp.concat(kept_counts, axis=2), displaced=displaced)


def drop_by_position(xp: ModuleType, mask_PRTE: Any, kept_PRTE: Any, num_sequences: int,
                     seq_length: int) -> Any:
    """Share of the assignments at each sequence position dropped by capacity: (P, R, L).

    Parameters
    ----------
    xp : namespace
    mask_PRTE, kept_PRTE : bool arrays (P, R, T, E)
        Chosen and kept assignments, tokens sequence-major (``T = B * L``).
    num_sequences, seq_length : int
        ``B`` and ``L``.

    Returns
    -------
    float64 array (P, R, L)

    Examples
    --------
    Two sequences of two tokens, top-1; the second token of sequence 1 dropped:

    >>> import numpy as np
    >>> mask = np.ones((1, 1, 4, 1), dtype=bool)
    >>> kept = np.array([True, True, True, False])[None, None, :, None]
    >>> drop_by_position(np, mask, kept, 2, 2).tolist()
    [[[0.0, 0.5]]]
    """
    p, r, _, e = mask_PRTE.shape
    shape = (p, r, num_sequences, seq_length, e)
    chosen = xp.sum(xp.astype(xp.reshape(mask_PRTE, shape), xp.float64), axis=(2, 4))
    lost = xp.sum(xp.astype(xp.reshape(mask_PRTE & ~kept_PRTE, shape), xp.float64),
                  axis=(2, 4))
    return lost / xp.where(chosen > 0, chosen, 1.0)


def optimize(plan: LearnerPlan, state: LearnerState, t: int, grads: tuple) -> LearnerState:
    """One SGD or Adam step on ``W`` (and ``W_noise``)."""
    xp, pen = plan.points.xp, plan.cfg.penalty
    lr = per_point(plan, plan.lr_P * _lr_factor(plan, t), 4)
    params = (state.weight_PRED,) if grads[1] is None else (state.weight_PRED,
                                                             state.noise_weight_PRED)
    new, moments = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if pen.optimizer == "adam":
            p, m, v = optim.adam_step(xp, p, g, state.moments[2 * i], state.moments[2 * i + 1],
                                      t + 1, lr=lr, beta1=pen.adam_beta1,
                                      beta2=pen.adam_beta2, eps=pen.adam_eps)
            moments += [m, v]
        else:
            p = optim.sgd_step(xp, p, g, lr)
        new.append(p)
    return dataclasses.replace(state, weight_PRED=new[0],
                               noise_weight_PRED=new[1] if len(new) > 1 else None,
                               moments=tuple(moments))


@dataclass(frozen=True)
class _Forward:
    """A step's tokens, logits and scores (training pass)."""

    x: Any        # (P, R, T, D) features
    topic: Any    # (P, R, T) topics
    clean: Any    # (P, R, T, E) logits x @ W.T
    raw: Any      # noise logits x @ W_noise.T (None without the noisy gate)
    eps: Any      # gate noise draws (None without the noisy gate)
    h: Any        # logits the gate sees
    sigma: Any    # noise scale (None without the noisy gate)
    s: Any        # scores


def forward(plan: LearnerPlan, state: LearnerState, t: int) -> _Forward:
    """Draw the step's tokens and compute logits and scores."""
    pp, cfg = plan.points, plan.cfg
    xp, f64, tokens = pp.xp, pp.xp.float64, cfg.batch.tokens_per_step
    x32, topic = traffic.token_features(xp, plan.tparams, state.traffic, pp.keys_PR, t, 0,
                                        tokens)
    x = xp.astype(x32, f64)
    clean = penalties.router_logits(xp, x, state.weight_PRED)
    raw = eps = sigma = None
    if cfg.penalty.noisy_gate:
        raw = penalties.router_logits(xp, x, state.noise_weight_PRED)
        eps = rng.standard_normal(xp, pp.keys_PR, t, NOISE_STREAM,
                                  xp.arange(tokens, dtype=xp.uint64), cfg.router.num_experts,
                                  f64)
        h, sigma = noisy_gate.noisy_logits(xp, clean, raw, eps)
        s = gate(xp, "softmax", h)
    else:
        h = clean
        s = penalties.aux_probabilities(xp, plan.aux_gate, h)[0] \
            if plan.aux_gate == "softmax" else sigmoid(xp, h)
    return _Forward(x=x, topic=topic, clean=clean, raw=raw, eps=eps, h=h, sigma=sigma, s=s)


def _gradients(plan: LearnerPlan, fw: _Forward, d_task: Any, d_pen: Any,
               d_clean_load: Any, d_raw_load: Any) -> tuple[tuple, Any, tuple]:
    """Gradients on ``W`` (and ``W_noise``); cosine, cancelled share and signed projection."""
    xp = plan.points.xp
    g_task = penalties.weight_grad(xp, d_task, fw.x)
    g_pen = penalties.weight_grad(
        xp, d_pen if d_clean_load is None else d_pen + d_clean_load, fw.x)
    grads: tuple = (g_task + g_pen, None)
    if fw.raw is not None:
        d_raw = (d_task + d_pen) * fw.eps * sigmoid(xp, fw.raw) + d_raw_load
        grads = (g_task + g_pen, penalties.weight_grad(xp, d_raw, fw.x))
    cos, cancelled = penalties.interference(xp, g_task, g_pen)
    return grads, cos, (cancelled, penalties.task_projection(xp, g_task, g_pen))


def _eval_pass(plan: LearnerPlan, fw: _Forward, first_bias: Any) -> tuple[Any, Any]:
    """Noisy gate: the step's tokens routed again with the noise off; loads and noise scale."""
    xp, cfg = plan.points.xp, plan.cfg
    router = cfg.router
    s_eval = gate(xp, "softmax", fw.clean)
    sel = routing.selection_scores(xp, s_eval, xp.astype(first_bias, xp.float64),
                                   router.bias_mode)
    idx = routing.select_topk(xp, sel, router.topk, router.num_groups, router.group_topk)
    load = xp.sum(routing.counts_per_sequence(xp, idx, cfg.batch.num_sequences,
                                              cfg.batch.seq_length, router.num_experts), axis=2)
    return load, xp.mean(fw.sigma, axis=(-2, -1))


def step_state(plan: LearnerPlan, state: LearnerState) -> tuple[LearnerState, StepOutput]:
    """One global batch and one optimizer step.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> plan = make_plan_learner(cfg)
    >>> state, out = step_state(plan, init_state(plan))
    >>> state.step, int(out.load_PRE.sum())  # 8 tokens, one expert each
    (1, 8)
    """
    pp, cfg, t = plan.points, plan.cfg, state.step
    xp, router = pp.xp, cfg.router
    k, n = router.topk, router.num_experts
    state = dataclasses.replace(state, traffic=traffic.advance_traffic(
        xp, plan.tparams, state.traffic, pp.keys_PR, t))
    fw = forward(plan, state, t)
    first_bias = state.bias_PRE
    # the unbiased top-K: displacement reference and (without groups) the map of f
    plain_idx = routing.select_topk(xp, fw.s, k, router.num_groups, router.group_topk)
    unbiased = (one_hot(xp, plain_idx, n) if router.num_groups is None
                else penalties.topk_map(xp, fw.h, k))
    state, rt = route(plan, state, fw, plain_idx, t)
    mask = rt.mask
    load, kept_load = xp.sum(rt.routed_seq, axis=2), xp.sum(rt.kept_seq, axis=2)
    quality = per_point(plan, plan.gamma_P, 3) * (state.usage_PRE - 1.0)
    # a dropped assignment earns nothing and passes no task gradient (the residual carries it)
    kept_f = xp.astype(rt.kept, xp.float64)
    values = task_proxy.token_values(xp, fw.topic, state.affinity_PRME, quality) * kept_f
    proxy, d_task, weights = task_proxy.task_loss(
        xp, "noisy" if cfg.penalty.noisy_gate else router.score_function, fw.h, mask, values,
        k, router.topk_scaling_factor, router.pre_softmax)
    affinity_part = xp.mean(
        xp.sum(weights * (values - quality[:, :, None, :] * kept_f), axis=-1), axis=-1)
    pen_value, d_pen, (d_clean_load, d_raw_load), logs = penalty_terms(
        plan, t, fw.h, mask, unbiased, fw.clean, fw.raw, fw.eps)
    grads, cos, (cancelled, projection) = _gradients(plan, fw, d_task, d_pen, d_clean_load,
                                                     d_raw_load)
    state = optimize(plan, state, t, grads)
    usage = task_proxy.update_usage(xp, state.usage_PRE, kept_load, cfg.penalty.quality_memory,
                                    k, cfg.batch.tokens_per_step)
    eval_load, noise = (_eval_pass(plan, fw, first_bias) if cfg.penalty.noisy_gate
                        else (None, None))
    extra = LearnerExtra(
        task_proxy_PR=proxy, task_affinity_PR=affinity_part, penalty_PR=pen_value,
        balance_loss_PR=logs["balance_loss"], z_loss_value_PR=logs["z_loss_value"],
        interference_PR=cos, cancelled_share_PR=cancelled, task_projection_PR=projection,
        max_logit_PR=xp.max(fw.h, axis=(-2, -1)),
        logit_spread_PR=xp.mean(xp.std(fw.h, axis=-1), axis=-1),
        alpha_t_P=logs["alpha_t"], z_loss_t_P=logs["z_loss_t"],
        lr_t_P=xp.asarray(plan.lr_P * _lr_factor(plan, t)), expert_quality_PRE=quality,
        importance_cv2_PR=logs.get("importance_cv2"), load_cv2_PR=logs.get("load_cv2"),
        gate_noise_PR=noise, eval_load_PRE=eval_load,
        drop_by_position_PRL=(None if router.dropless else drop_by_position(
            xp, mask, rt.kept, cfg.batch.num_sequences, cfg.batch.seq_length)))
    out = StepOutput(bias_PRE=first_bias, load_PRE=load, kept_PRE=kept_load,
                     displaced_PR=rt.displaced,
                     maxvio_compute_PRC=maxvio_compute(xp, rt.routed_seq,
                                                       cfg.batch.computation_batch_sizes),
                     extra=extra)
    return dataclasses.replace(state, step=t + 1, usage_PRE=usage), out


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
    step : callable (LearnerState) -> (LearnerState, StepOutput)
        The output's ``extra`` is a :class:`~routesim.engines._common.LearnerExtra`.

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
    plan = make_plan_learner(config, point_indices, xp)
    return (lambda: init_state(plan)), (lambda state: step_state(plan, state))
