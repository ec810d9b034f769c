"""The exact engine: a pure step function over (point, replica) axes.

``make_simulator(config)`` returns ``(init, step)``::

    init, step = make_simulator(cfg)
    state = init()
    for _ in range(cfg.run.steps):
        state, obs = step(state)

``step`` never mutates its input. One step is one global batch: its
micro-batches are routed in order (the bias may change between them when the
controller's window is a micro-batch), each with logits for every point and
replica at once. Loads are counted per (sequence, expert), from which step,
micro-batch and computation-batch loads follow by summation.

Everything fixed for the run sits in a frozen :class:`ExactPlan`, built once;
the step is a chain of module-level functions of the plan and the state.

The generic path reports the sum of each step's logits (``logit_sum_PR``) for
the per-step finite check of :mod:`routesim.faults`. A compiled kernel
(``run.kernel``) does not expose its logits; it relies on the load-time bound
on the logits (:mod:`routesim.config._numerics`).

Shape legend: P points, R replicas, B sequences, T tokens, E experts, K top-k,
C computation-batch sizes, J assignment counts 0..E.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ..routing import expert_choice
from ..routing import expert_threshold
from ..routing import hash as hash_routing
from .. import controllers, routing, traffic
from . import kernels as _kernels
from .._backend import one_hot
from ..config import Config
from ..gates import gate
from ._common import (ExpertChoiceExtra, PointPlan, StepOutput, batch_loads,
                      closes_after_micro_batch,
                      closes_after_step, initial_bias, make_plan, maxvio_compute,
                      update_controller)

__all__ = ["SimState", "StepOutput", "ExactPlan", "Simulator", "make_simulator", "make_plan_exact",
           "init_state", "step_state", "ENGINE_CHUNK_ELEMENTS"]

#: Upper bound on P * R * tokens * experts per routed chunk (memory control).
ENGINE_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SimState:
    """Everything carried from one step to the next.

    Attributes
    ----------
    step : int
        Index of the next step to run.
    bias_PRE : array (P, R, E)
        Expert bias (selection only).
    memory_PRE : array (P, R, E)
        Controller memory (EMA of fractions, or momentum).
    window_load_PRE : int array (P, R, E)
        Loads counted so far in the current controller window.
    window_estimate_PRE : array (P, R, E)
        Sum of quantile dual estimates over the window's micro-batches.
    window_batches : int
        Micro-batches counted in the current window.
    windows_done : int
        Controller windows completed (for warm-up).
    traffic : traffic.TrafficState
    threshold_PRE : array (P, R, E) or None
        Expert Threshold routing: each expert's score threshold.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> state = init_state(make_plan_exact(cfg))
    >>> state.step, state.bias_PRE.shape, int(state.window_load_PRE.sum())
    (0, (1, 1, 4), 0)
    """

    step: int
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    window_estimate_PRE: Any
    window_batches: int
    windows_done: int
    traffic: traffic.TrafficState
    threshold_PRE: Any = None


Simulator = tuple[Callable[[], SimState], Callable[[SimState], tuple[SimState, StepOutput]]]


@dataclass(frozen=True)
class ExactPlan:
    """What the exact engine fixes once per run (see :func:`make_plan_exact`).

    Attributes
    ----------
    points : PointPlan
    tparams, cparams : traffic and controller parameters of the points.
    quantile_P : bool array (P,)
        Points whose controller is quantile balancing.
    fast_router : callable or None
        A compiled kernel's router (None: the generic array path).
    chunk_seqs : int
        Sequences per routed chunk of a micro-batch.
    cap : int
        Expert capacity per micro-batch.
    ec_block : int or None
        Expert Choice block in tokens (None for token choice).
    hash_table_PVK : int array (P, V, K) or None
        Hash routing: the id-to-experts table of each row (one per layer).
    hash_cdf_V : float64 array (V,) or None
        Hash routing: cumulative token-id frequencies.
    hash_rows_P : bool array (P,) or None
        ``model.hash_layers``: the rows (layers) routed by hash, the others
        by token choice; None when every row routes alike.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> plan = make_plan_exact(cfg)
    >>> plan.points.shape_PRE, plan.points.indices
    ((1, 1, 4), (0,))
    """

    points: PointPlan
    tparams: Any
    cparams: Any
    quantile_P: np.ndarray
    fast_router: Any
    chunk_seqs: int
    cap: int
    ec_block: int | None
    hash_table_PVK: Any = None
    hash_cdf_V: Any = None
    hash_rows_P: Any = None

    @property
    def cfg(self) -> Config:
        """The first point's config (fields that cannot be swept)."""
        return self.points.first


def _chunk_sequences(cfg: Config, num_points: int, any_quantile: bool) -> int:
    """Sequences per routed chunk of a micro-batch (whole micro-batch if needed).

    Capacity dropping, Expert Choice and the quantile dual estimate look at
    the whole micro-batch at once; ``any_quantile`` is asked of every point
    routed together, not of the first one, so that a quantile point's numbers
    do not depend on its neighbours.
    """
    b, r = cfg.batch, cfg.router
    per_mb = b.sequences_per_micro_batch
    if not r.dropless or any_quantile or r.router_type != "token_choice":
        return per_mb
    per_seq = num_points * cfg.run.replicas * b.seq_length * r.num_experts
    fit = max(1, ENGINE_CHUNK_ELEMENTS // per_seq)
    while per_mb % fit:
        fit -= 1
    return fit


def make_plan_exact(config: Config, point_indices: Sequence[int] | None = None,
                    xp: ModuleType | None = None) -> ExactPlan:
    """Check the points and fix everything the exact engine needs for the run.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> make_plan_exact(cfg, [3])
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: point_indices: 3 is not a point index in [0, 1)
    """
    pp = make_plan(config, point_indices, xp)
    cfg, xp = pp.first, pp.xp
    batch, router = cfg.batch, cfg.router
    tparams = traffic.make_traffic_params(pp.points)
    if cfg.model.num_layers > 1:
        tparams = dataclasses.replace(tparams, mu0_PE=traffic.layer_popularity(
            tparams.mu0_PE, cfg.model.num_layers, cfg.model.layer_correlation, cfg.run.seed))
    cparams = controllers.make_controller_params(pp.points)
    seqs_mb = batch.sequences_per_micro_batch
    # A compiled kernel (run.kernel) streams over tokens itself: one call per micro-batch.
    # It is chosen for the whole sweep, so a subset of points routes as in the whole run.
    fast_router = (_kernels.make_router(pp.points, xp, pp.keys_PR, tparams)
                   if _kernels.choose_kernel(pp.all_points, xp) != "generic" else None)
    chunk_seqs = (seqs_mb if fast_router is not None
                  else _chunk_sequences(cfg, len(pp.points), cparams.any_quantile))
    # Expert Choice: block size (None for token choice); see route_expert_choice.
    ec_block = ((router.expert_choice_block or seqs_mb * batch.seq_length)
                if router.router_type == "expert_choice" else None)
    table, cdf, hash_rows = None, None, None
    if cfg.model.hash_layers:
        layer_P = np.arange(len(pp.points)) % cfg.model.num_layers
        hash_rows = xp.asarray(layer_P < cfg.model.hash_layers)
    if router.router_type == "hash" or hash_rows is not None:
        layers = cfg.model.num_layers
        per_layer = [hash_routing.hash_table(router.hash_vocab_size, router.num_experts,
                                             router.topk, cfg.run.seed, layer)
                     for layer in range(layers)]
        table = xp.asarray(np.stack(per_layer * (len(pp.points) // layers)))
        cdf = xp.asarray(np.cumsum(hash_routing.token_frequencies(
            router.hash_vocab_size, router.hash_zipf_exponent)))
    return ExactPlan(points=pp, tparams=tparams, cparams=cparams,
                     quantile_P=cparams.on_logits_P,
                     fast_router=fast_router, chunk_seqs=chunk_seqs,
                     cap=routing.capacity(seqs_mb * batch.seq_length, router.topk,
                                          router.num_experts, router.capacity_factor),
                     ec_block=ec_block, hash_table_PVK=table, hash_cdf_V=cdf,
                     hash_rows_P=hash_rows)


def init_state(plan: ExactPlan) -> SimState:
    """The state before the first step.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> init_state(make_plan_exact(cfg)).bias_PRE.tolist()  # additive bias starts at 0
    [[[0.0, 0.0, 0.0, 0.0]]]
    """
    pp = plan.points
    xp = pp.xp
    zeros = xp.zeros(pp.shape_PRE, dtype=pp.dtype)
    tstate = traffic.init_traffic(xp, plan.tparams, pp.keys_PR)
    threshold = None
    if plan.cfg.router.router_type == "expert_threshold":
        # a calibration micro-batch, drawn at step -1 (before the run): causal
        b, router = plan.cfg.batch, plan.cfg.router
        z = traffic.logits(xp, plan.tparams, tstate, pp.keys_PR, -1, 0,
                           b.sequences_per_micro_batch * b.seq_length)
        threshold = expert_threshold.threshold_estimate(
            xp, gate(xp, router.score_function, z), router.topk)
    return SimState(step=0, bias_PRE=initial_bias(pp), memory_PRE=zeros,
                    window_load_PRE=xp.zeros(pp.shape_PRE, dtype=xp.int64),
                    window_estimate_PRE=zeros, window_batches=0, windows_done=0,
                    traffic=tstate, threshold_PRE=threshold)


def route_chunk(plan: ExactPlan, tstate: traffic.TrafficState, bias_PRE: Any, step: int,
                token_start: int, n_seqs: int) -> tuple[Any, Any, Any, Any, Any]:
    """Route one chunk; returns routed and kept counts per sequence, displaced
    selections, the quantile estimate (or None) and the sum of the logits (P, R)
    (None from a compiled kernel)."""
    xp, keys_PR, tparams, cparams = plan.points.xp, plan.points.keys_PR, plan.tparams, plan.cparams
    run, router, L = plan.cfg.run, plan.cfg.router, plan.cfg.batch.seq_length
    cap, quantile_P = plan.cap, plan.quantile_P
    if plan.fast_router is not None:
        routed, displaced = plan.fast_router(tstate, bias_PRE, step, token_start, n_seqs)
        return routed, routed, displaced, None, None
    z = traffic.logits(xp, tparams, tstate, keys_PR, step, token_start, n_seqs * L)
    out = routing.route_block(xp, z, bias_PRE, router, num_sequences=n_seqs, seq_length=L,
                              capacity=cap,
                              logit_bias_P=quantile_P if cparams.any_quantile else None,
                              displaced=run.record_displacement,
                              quantile_estimate=cparams.any_quantile,
                              target_share_PE=cparams.target_PE)
    return out.routed_PRBE, out.kept_PRBE, out.displaced_PR, out.estimate_PRE, _logit_sum(xp, z)


def _logit_sum(xp: ModuleType, z_PRTE: Any) -> Any:
    """Sum of the logits per point and replica: NaN or Inf survive it (the fault check)."""
    return xp.sum(z_PRTE, axis=(-2, -1), dtype=xp.float64)


def route_expert_choice(plan: ExactPlan, tstate: traffic.TrafficState, step: int,
                        token_start: int, n_seqs: int) -> tuple[Any, Any, Any]:
    """Expert Choice on one micro-batch: counts per sequence (P, R, B, E), tokens
    with 0..E experts (P, R, E + 1) and the sum of the logits (P, R). The bias is
    not used: a per-expert constant does not change which tokens an expert ranks
    first."""
    xp, cfg = plan.points.xp, plan.cfg
    L = cfg.batch.seq_length
    z = traffic.logits(xp, plan.tparams, tstate, plan.points.keys_PR, step, token_start,
                       n_seqs * L)
    scores = gate(xp, cfg.router.score_function, z)
    if cfg.router.expert_choice_shuffle:  # a content-blind permutation of the micro-batch
        perm = expert_threshold.token_permutation(xp, plan.points.keys_PR, step, token_start,
                                                  n_seqs * L)
        mask = expert_threshold.shuffled_expert_choice_mask(xp, scores, cfg.router.topk,
                                                            plan.ec_block, perm)
    else:
        mask = expert_choice.expert_choice_mask(xp, scores, cfg.router.topk, plan.ec_block)
    return (routing.mask_counts_per_sequence(xp, mask, n_seqs, L),
            expert_choice.experts_per_token_histogram(xp, mask), _logit_sum(xp, z))


def close_window(plan: ExactPlan, state: SimState) -> SimState:
    """Apply the controller to the window's loads and open a new window."""
    xp = plan.points.xp
    est = None
    if plan.cparams.any_quantile:
        est = state.window_estimate_PRE / max(state.window_batches, 1)
    bias, memory = update_controller(xp, plan.cparams, state.bias_PRE, state.memory_PRE,
                                     state.window_load_PRE, est, state.windows_done)
    return dataclasses.replace(
        state, bias_PRE=bias, memory_PRE=memory,
        window_load_PRE=xp.zeros_like(state.window_load_PRE),
        window_estimate_PRE=xp.zeros_like(state.window_estimate_PRE),
        window_batches=0, windows_done=state.windows_done + 1)


@dataclass(frozen=True)
class _MicroBatch:
    """One micro-batch's counts per sequence and what its chunks reported."""

    routed_PRBE: Any
    kept_PRBE: Any
    displaced_parts: list    # per chunk: selections outside the unbiased top-K
    estimate_PRE: Any        # the quantile estimate (None without quantile points)
    hist_parts: list         # per chunk: Expert Choice histogram
    logit_sum_PR: Any        # None from a compiled kernel
    threshold_estimate_PRE: Any = None  # Expert Threshold: this micro-batch's estimate


def _hash_rows(plan: ExactPlan, step: int, start: int, routed: Any, kept: Any,
               disp: Any) -> tuple[Any, Any, Any]:
    """Replace the counts of the hash-routed rows (``model.hash_layers``) by hash routing."""
    xp, L = plan.points.xp, plan.cfg.batch.seq_length
    ids = hash_routing.token_ids(xp, plan.points.keys_PR, step, start, plan.chunk_seqs * L,
                                 plan.hash_cdf_V)
    hashed = hash_routing.route_hash(xp, ids, plan.hash_table_PVK, plan.chunk_seqs, L,
                                     plan.cfg.router.num_experts)
    rows = xp.reshape(plan.hash_rows_P, (-1, 1, 1, 1))
    hashed = xp.astype(hashed, routed.dtype)
    if disp is not None:
        disp = xp.where(xp.reshape(plan.hash_rows_P, (-1, 1)), xp.zeros_like(disp), disp)
    return xp.where(rows, hashed, routed), xp.where(rows, hashed, kept), disp


def route_micro_batch(plan: ExactPlan, state: SimState, mb: int) -> _MicroBatch:
    """Route micro-batch ``mb`` of the step ``state.step`` chunk by chunk."""
    xp, cfg = plan.points.xp, plan.cfg
    seqs_mb, L, t = cfg.batch.sequences_per_micro_batch, cfg.batch.seq_length, state.step
    routed_parts, kept_parts, displaced, hists, estimate = [], [], [], [], None
    threshold_est = None
    logit_sum = 0.0
    for c0 in range(0, seqs_mb, plan.chunk_seqs):
        start = (mb * seqs_mb + c0) * L
        if plan.hash_table_PVK is not None and plan.hash_rows_P is None:  # hash: no bias
            ids = hash_routing.token_ids(xp, plan.points.keys_PR, t, start,
                                         plan.chunk_seqs * L, plan.hash_cdf_V)
            routed = hash_routing.route_hash(xp, ids, plan.hash_table_PVK, plan.chunk_seqs, L,
                                             cfg.router.num_experts)
            kept, disp, est, zsum = routed, None, None, None
        elif cfg.router.router_type == "expert_threshold":  # chunk = whole micro-batch
            z = traffic.logits(xp, plan.tparams, state.traffic, plan.points.keys_PR, t, start,
                               plan.chunk_seqs * L)
            scores = gate(xp, cfg.router.score_function, z)
            mask = expert_threshold.threshold_mask(xp, scores, state.threshold_PRE)
            routed = routing.mask_counts_per_sequence(xp, mask, plan.chunk_seqs, L)
            hists.append(expert_choice.experts_per_token_histogram(xp, mask))
            threshold_est = expert_threshold.threshold_estimate(xp, scores, cfg.router.topk)
            kept, disp, est, zsum = routed, None, None, _logit_sum(xp, z)
        elif plan.ec_block is not None:  # Expert Choice (chunk = whole micro-batch)
            routed, hist, zsum = route_expert_choice(plan, state.traffic, t, start,
                                                     plan.chunk_seqs)
            kept, disp, est = routed, None, None
            hists.append(hist)
        else:
            routed, kept, disp, est, zsum = route_chunk(plan, state.traffic, state.bias_PRE, t,
                                                        start, plan.chunk_seqs)
            if plan.hash_rows_P is not None:  # the hash-routed first layers
                routed, kept, disp = _hash_rows(plan, t, start, routed, kept, disp)
        routed_parts.append(routed)
        kept_parts.append(kept)
        if disp is not None:
            displaced.append(disp)
        estimate = est
        logit_sum = None if zsum is None else logit_sum + zsum
    return _MicroBatch(xp.concat(routed_parts, axis=2), xp.concat(kept_parts, axis=2),
                       displaced, estimate, hists, logit_sum, threshold_est)


def count_micro_batch(plan: ExactPlan, state: SimState, part: _MicroBatch) -> SimState:
    """Add a micro-batch to the controller window (closing it after each micro-batch)."""
    xp = plan.points.xp
    window_est = state.window_estimate_PRE
    if part.estimate_PRE is not None:
        window_est = window_est + xp.astype(part.estimate_PRE, plan.points.dtype)
    state = dataclasses.replace(
        state, window_load_PRE=state.window_load_PRE + xp.sum(part.kept_PRBE, axis=2),
        window_estimate_PRE=window_est, window_batches=state.window_batches + 1)
    if closes_after_micro_batch(plan.cfg.controller):
        state = close_window(plan, state)
    return state


def step_state(plan: ExactPlan, state: SimState) -> tuple[SimState, StepOutput]:
    """One global batch: every micro-batch routed in order, then the step's report.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> plan = make_plan_exact(cfg)
    >>> state, out = step_state(plan, init_state(plan))
    >>> state.step, int(out.load_PRE.sum())  # 16 tokens x 2 experts each
    (1, 32)
    """
    xp, t = plan.points.xp, state.step
    tstate = traffic.advance_traffic(xp, plan.tparams, state.traffic, plan.points.keys_PR, t)
    state = dataclasses.replace(state, traffic=tstate)
    first_bias = state.bias_PRE
    parts = []
    for mb in range(plan.cfg.batch.num_micro_batches):
        part = route_micro_batch(plan, state, mb)
        state = count_micro_batch(plan, state, part)
        if part.threshold_estimate_PRE is not None:  # routes the next micro-batch
            state = dataclasses.replace(state, threshold_PRE=expert_threshold.update_threshold(
                state.threshold_PRE, part.threshold_estimate_PRE, plan.cfg.router.threshold_ema))
        parts.append(part)
    if closes_after_step(plan.cfg.controller, t):
        state = close_window(plan, state)
    out = step_output(plan, first_bias, parts)
    return dataclasses.replace(state, step=t + 1), out


def step_output(plan: ExactPlan, first_bias: Any, parts: list[_MicroBatch]) -> StepOutput:
    """The step's report from its micro-batches."""
    xp, cfg, shape_PR = plan.points.xp, plan.cfg, plan.points.shape_PRE[:2]
    batch, router = cfg.batch, cfg.router
    routed_seq = xp.concat([p.routed_PRBE for p in parts], axis=2)  # (P, R, B, E)
    kept = xp.sum(xp.concat([p.kept_PRBE for p in parts], axis=2), axis=2)
    displaced = xp.zeros(shape_PR, dtype=xp.float64)
    per_token = xp.zeros(shape_PR + (router.num_experts + 1,), dtype=xp.int64)
    for p in parts:  # in routing order, as the sums were always taken
        for disp in p.displaced_parts:
            displaced = displaced + disp
        for hist in p.hist_parts:
            per_token = per_token + hist
    logit_sum = None if parts[0].logit_sum_PR is None else sum(p.logit_sum_PR for p in parts)
    masked = plan.ec_block is not None or router.router_type == "expert_threshold"
    if (cfg.run.record_displacement and router.router_type == "token_choice"):
        disp_share = displaced / (batch.tokens_per_step * router.topk)
    else:
        disp_share = xp.full(shape_PR, float("nan"), dtype=xp.float64)
    extra = None
    if masked:  # tokens with 0..E experts (Expert Choice, Expert Threshold)
        extra = ExpertChoiceExtra(experts_per_token_PRJ=per_token)
        unrouted = xp.astype(per_token[..., 0], xp.float64) / batch.tokens_per_step
    else:
        unrouted = xp.full(shape_PR, 0.0 if router.dropless else float("nan"), dtype=xp.float64)
    ep_batch = None
    if cfg.placement.active:  # kept loads of each expert-parallel computation batch
        kept_seq = xp.concat([p.kept_PRBE for p in parts], axis=2)
        ep_batch = batch_loads(xp, kept_seq,
                               batch.sequences_per_micro_batch * cfg.placement.ep_size)
    return StepOutput(bias_PRE=first_bias, load_PRE=xp.sum(routed_seq, axis=2), kept_PRE=kept,
                      displaced_PR=disp_share,
                      maxvio_compute_PRC=maxvio_compute(xp, routed_seq,
                                                        batch.computation_batch_sizes),
                      unrouted_PR=unrouted, logit_sum_PR=logit_sum, extra=extra,
                      ep_batch_load_PRBE=ep_batch)


def make_simulator(config: Config, point_indices: Sequence[int] | None = None,
                   xp: ModuleType | None = None) -> Simulator:
    """Build the pure ``(init, step)`` pair of the exact engine.

    Parameters
    ----------
    config : Config
        The whole run; its sweep defines the points.
    point_indices : sequence of int, optional
        Run only these points (global indices into the sweep). A point's
        random numbers depend on its global index, not on its neighbours.
    xp : namespace, optional
        Array namespace; default from ``config.run.backend``.

    Returns
    -------
    init : callable () -> SimState
    step : callable (SimState) -> (SimState, StepOutput)

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> init, step = make_simulator(cfg)
    >>> state, out = step(init())
    >>> int(out.kept_PRE.sum()), out.maxvio_compute_PRC.shape  # dropless: all 32 kept
    (32, (1, 1, 0))
    """
    plan = make_plan_exact(config, point_indices, xp)
    return (lambda: init_state(plan)), (lambda state: step_state(plan, state))
