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

Shape legend: P points, R replicas, B sequences, T tokens, E experts, K top-k,
C computation-batch sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ..routing import expert_choice
from .. import controllers, routing, traffic
from . import kernels as _kernels
from .._backend import get_namespace, one_hot
from ..config import Config
from ..exceptions import ConfigError
from ..gates import gate
from ..rng import point_keys

__all__ = ["SimState", "StepOutput", "Simulator", "make_simulator", "ENGINE_CHUNK_ELEMENTS"]

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
    """

    step: int
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    window_estimate_PRE: Any
    window_batches: int
    windows_done: int
    traffic: traffic.TrafficState


@dataclass(frozen=True)
class StepOutput:
    """What one step reports (arrays in the engine's namespace).

    Attributes
    ----------
    bias_PRE : bias that routed the step's first micro-batch.
    load_PRE : routed loads of the step (before dropping).
    kept_PRE : loads after capacity dropping.
    displaced_PR : share of selections outside the unbiased top-K (NaN if off).
    maxvio_compute_PRC : mean MaxVio over the computation batches of each size.
    unrouted_PR : share of tokens with no expert (0 for dropless token choice,
        NaN for token choice with capacity dropping, measured for Expert Choice).
    experts_per_token_PRJ : Expert Choice only (else None): tokens of the step
        with 0, 1, ..., E experts.
    """

    bias_PRE: Any
    load_PRE: Any
    kept_PRE: Any
    displaced_PR: Any
    maxvio_compute_PRC: Any
    unrouted_PR: Any = None
    experts_per_token_PRJ: Any = None


Simulator = tuple[Callable[[], SimState], Callable[[SimState], tuple[SimState, StepOutput]]]


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
    """
    all_points = config.points()
    if point_indices is None:
        point_indices = range(len(all_points))
    point_indices = list(point_indices)
    for i in point_indices:
        if not 0 <= i < len(all_points):
            raise ConfigError(f"point_indices: {i} is not a point index in [0, {len(all_points)})")
    if not point_indices:
        raise ConfigError("point_indices: empty; give at least one point")
    points = [all_points[i] for i in point_indices]
    cfg = points[0]
    xp = xp or get_namespace(cfg.run.backend)
    run, batch, router, ctrl = cfg.run, cfg.batch, cfg.router, cfg.controller
    dtype = xp.float32 if run.bias_dtype == "float32" else xp.float64
    n, k = router.num_experts, router.topk
    key_points = [0] * len(points) if run.common_random_numbers else point_indices
    keys_PR = xp.asarray(point_keys(run.seed, key_points, run.replicas))
    tparams = traffic.make_traffic_params(points)
    cparams = controllers.make_controller_params(points)
    quantile_P = np.array([t == "quantile" for t in cparams.types])
    L = batch.seq_length
    seqs_mb = batch.sequences_per_micro_batch
    # A compiled kernel (run.kernel) streams over tokens itself: one call per micro-batch.
    # It is chosen for the whole sweep, so a subset of points routes as in the whole run.
    fast_router = (_kernels.make_router(points, xp, keys_PR, tparams)
                   if _kernels.choose_kernel(all_points, xp) != "generic" else None)
    chunk_seqs = (seqs_mb if fast_router is not None
                  else _chunk_sequences(cfg, len(points), cparams.any_quantile))
    cap = routing.capacity(seqs_mb * L, k, n, router.capacity_factor)
    cb_sizes = batch.computation_batch_sizes
    # Expert Choice: block size (None for token choice); see route_expert_choice.
    ec_block = ((router.expert_choice_block or seqs_mb * L)
                if router.router_type == "expert_choice" else None)
    init_bias = 1.0 if router.bias_mode == "multiplicative" else 0.0
    shape_PRE = (len(points), run.replicas, n)

    def init() -> SimState:
        zeros = xp.zeros(shape_PRE, dtype=dtype)
        return SimState(step=0, bias_PRE=zeros + init_bias, memory_PRE=zeros,
                        window_load_PRE=xp.zeros(shape_PRE, dtype=xp.int64),
                        window_estimate_PRE=zeros, window_batches=0, windows_done=0,
                        traffic=traffic.init_traffic(xp, tparams, keys_PR))

    def route_chunk(tstate: traffic.TrafficState, bias_PRE: Any, step: int, token_start: int,
                    n_seqs: int) -> tuple[Any, Any, Any, Any]:
        """Route one chunk; returns routed and kept counts per sequence, displaced
        selections and the quantile estimate (or None)."""
        if fast_router is not None:
            routed, displaced = fast_router(tstate, bias_PRE, step, token_start, n_seqs)
            return routed, routed, displaced, None
        z = traffic.logits(xp, tparams, tstate, keys_PR, step, token_start, n_seqs * L)
        out = routing.route_block(xp, z, bias_PRE, router, num_sequences=n_seqs, seq_length=L,
                                  capacity=cap,
                                  logit_bias_P=quantile_P if cparams.any_quantile else None,
                                  displaced=run.record_displacement,
                                  quantile_estimate=cparams.any_quantile)
        return out.routed_PRBE, out.kept_PRBE, out.displaced_PR, out.estimate_PRE

    def route_expert_choice(tstate: traffic.TrafficState, step: int, token_start: int,
                            n_seqs: int) -> tuple[Any, Any]:
        """Expert Choice on one micro-batch: counts per sequence (P, R, B, E) and
        tokens with 0..E experts (P, R, E + 1). The bias is not used: a per-expert
        constant does not change which tokens an expert ranks first."""
        z = traffic.logits(xp, tparams, tstate, keys_PR, step, token_start, n_seqs * L)
        mask = expert_choice.expert_choice_mask(xp, gate(xp, router.score_function, z), k,
                                                ec_block)
        return (routing.mask_counts_per_sequence(xp, mask, n_seqs, L),
                expert_choice.experts_per_token_histogram(xp, mask))

    def close_window(state: SimState) -> SimState:
        est = None
        if cparams.any_quantile:
            est = state.window_estimate_PRE / max(state.window_batches, 1)
        bias, memory = controllers.update_bias(xp, cparams, state.bias_PRE, state.memory_PRE,
                                               state.window_load_PRE, est, state.windows_done)
        return dataclasses.replace(
            state, bias_PRE=bias, memory_PRE=memory,
            window_load_PRE=xp.zeros_like(state.window_load_PRE),
            window_estimate_PRE=xp.zeros_like(state.window_estimate_PRE),
            window_batches=0, windows_done=state.windows_done + 1)

    def step(state: SimState) -> tuple[SimState, StepOutput]:
        t = state.step
        tstate = traffic.advance_traffic(xp, tparams, state.traffic, keys_PR, t)
        state = dataclasses.replace(state, traffic=tstate)
        first_bias = state.bias_PRE
        routed_parts, kept_parts = [], []
        displaced = xp.zeros(shape_PRE[:2], dtype=xp.float64)
        per_token = xp.zeros(shape_PRE[:2] + (n + 1,), dtype=xp.int64)
        for mb in range(batch.num_micro_batches):
            mb_routed, mb_kept = [], []
            mb_estimate = None
            for c0 in range(0, seqs_mb, chunk_seqs):
                start = (mb * seqs_mb + c0) * L
                if ec_block is not None:  # Expert Choice (chunk = whole micro-batch)
                    routed, hist = route_expert_choice(tstate, t, start, chunk_seqs)
                    kept, disp, est, per_token = routed, None, None, per_token + hist
                else:
                    routed, kept, disp, est = route_chunk(tstate, state.bias_PRE, t, start,
                                                          chunk_seqs)
                mb_routed.append(routed)
                mb_kept.append(kept)
                if disp is not None:
                    displaced = displaced + disp
                mb_estimate = est
            kept_mb = xp.concat(mb_kept, axis=2)
            routed_parts.append(xp.concat(mb_routed, axis=2))
            kept_parts.append(kept_mb)
            window_est = state.window_estimate_PRE
            if mb_estimate is not None:
                window_est = window_est + xp.astype(mb_estimate, dtype)
            state = dataclasses.replace(
                state, window_load_PRE=state.window_load_PRE + xp.sum(kept_mb, axis=2),
                window_estimate_PRE=window_est, window_batches=state.window_batches + 1)
            if ctrl.window == "micro_batch":
                state = close_window(state)
        if ctrl.window == "global_batch" or (
                ctrl.window == "steps" and (t + 1) % ctrl.update_every == 0):
            state = close_window(state)
        routed_seq = xp.concat(routed_parts, axis=2)  # (P, R, B, E)
        load = xp.sum(routed_seq, axis=2)
        kept = xp.sum(xp.concat(kept_parts, axis=2), axis=2)
        mv_cb = []
        for size in cb_sizes:
            p, r, b, e = routed_seq.shape
            groups = xp.sum(xp.reshape(routed_seq, (p, r, b // size, size, e)), axis=3)
            g = xp.astype(groups, xp.float64)
            mean = xp.mean(g, axis=-1)
            mv = (xp.max(g, axis=-1) - mean) / mean
            mv_cb.append(xp.mean(mv, axis=-1))
        mv_cb_PRC = (xp.stack(mv_cb, axis=-1) if mv_cb
                     else xp.zeros(shape_PRE[:2] + (0,), dtype=xp.float64))
        total = batch.tokens_per_step * k
        disp_share = (displaced / total if run.record_displacement and ec_block is None
                      else xp.full(shape_PRE[:2], float("nan"), dtype=xp.float64))
        if ec_block is not None:
            ept = per_token
            unrouted = xp.astype(per_token[..., 0], xp.float64) / batch.tokens_per_step
        else:
            unrouted = xp.full(shape_PRE[:2], 0.0 if router.dropless else float("nan"),
                               dtype=xp.float64)
            ept = None
        out = StepOutput(bias_PRE=first_bias, load_PRE=load, kept_PRE=kept,
                         displaced_PR=disp_share, maxvio_compute_PRC=mv_cb_PRC,
                         unrouted_PR=unrouted, experts_per_token_PRJ=ept)
        return dataclasses.replace(state, step=t + 1), out

    return init, step
