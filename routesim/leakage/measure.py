"""Measured information leakage: what a block's later tokens write into the
routing of its earlier tokens.

A block of ``T`` tokens is ``B`` sequence segments of ``Ls`` positions (whole
sequences when the block spans several, ``B = 1`` and ``Ls = T`` when it is
part of one). A split at ``position`` ``t`` makes the tokens at positions
``< t`` of every segment *early* and the others *late*. Routing is a
deterministic function of the scores, so with the early scores fixed (a
*context*) and the late ones redrawn ``draws`` times, the entropy of the
early tokens' routing is the mutual information ``I(early routing; late
tokens | early scores)`` in bits per block; averaging over ``contexts`` gives
the conditional mutual information.

The block, its split and its routers are read from the config by
:func:`routesim.leakage.setup.leakage_setup`; the routing goes through
:func:`routesim.routing.route_block`.

Entropy is estimated from the outcome counts (:mod:`routesim.leakage.entropy`:
Miller-Madow by default, Chao-Shen or plug-in) with a bootstrap interval over
draws. ``method="per_expert"`` sums the entropies of each expert's column of
the early routing: exact when the columns are independent given the context
(Expert Choice with an elementwise gate and independent logit noise), an
upper bound otherwise (subadditivity); it needs far fewer draws than
``joint``, whose outcomes multiply across experts. A result with coverage
below 0.9 (:attr:`LeakageResult.undersampled`) is a lower bound.

What an encoder that controls the late scores can send is in
:mod:`routesim.leakage.channel`.

Traffic: ``traffic.kind = "popularity"`` with independent tokens
(``seq_correlation = 0``), at the step-0 popularity. Shape legend: D draws,
T tokens of a block, E experts, K top-k, M messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import controllers, rng, routing
from ..config import Config
from .entropy import ESTIMATORS, coverage, draws_needed, entropy_ci
from ..exceptions import ConfigError
from ..routing.expert_choice import expert_choice_mask
from ..routing.expert_threshold import (shuffled_expert_choice_mask, threshold_estimate,
                                        threshold_mask, token_permutation)
from ..gates import gate
from .setup import (
    CONTEXT_STREAM,
    DRAW_STREAM,
    PREVIOUS_STREAM,
    LeakageSetup,
    block_logits,
    leakage_setup,
)

__all__ = [
    "LeakageResult",
    "route_block",
    "lagged_bias",
    "outcome_labels",
    "measure_leakage",
]

#: Upper bound on draws x T x E per routed chunk (memory control).
CHUNK_ELEMENTS = 1 << 21


# ----------------------------------------------------------------------------
# The block's routers
# ----------------------------------------------------------------------------
def _route(setup: LeakageSetup, z_DTE: Any, bias_DE: Any, dropping: bool) -> routing.RoutedBlock:
    """The block router (:func:`routesim.routing.route_block`) on ``D`` versions of the block.

    The draws are the replica axis of one point: logits (1, D, T, E), bias
    (1, D, E). Quantile balancing puts the bias on the logits.
    """
    cap = setup.capacity if dropping and setup.router == "capacity" else None
    return routing.route_block(np, z_DTE[None], bias_DE[None], setup.config.router,
                               num_sequences=setup.segments,
                               seq_length=setup.segment_length, capacity=cap,
                               logit_bias_P=np.array([setup.router == "quantile"]),
                               quantile_estimate=setup.router == "quantile" and not dropping)


def _controller_step(setup: LeakageSetup, bias_DE: Any, z_DTE: Any) -> Any:
    """Bias after one controller window on the blocks ``z_DTE`` routed with ``bias_DE``."""
    cfg = setup.config
    out = _route(setup, z_DTE, bias_DE, dropping=False)
    load = np.sum(out.routed_PRBE, axis=2)  # (1, D, E): loads before dropping
    params = controllers.make_controller_params([cfg])
    estimate = out.estimate_PRE if setup.router == "quantile" else None
    new, _ = controllers.update_bias(np, params, bias_DE[None], np.zeros_like(bias_DE)[None],
                                     load, estimate, windows_done=1 << 30)
    return new[0]


def lagged_bias(setup: LeakageSetup, seed: int, context: int) -> np.ndarray:
    """The bias (E,) that the previous block leaves: one controller window from the start.

    Parameters
    ----------
    setup : LeakageSetup
    seed : int >= 0
        Root seed.
    context : int >= 0
        Context index (each context has its own previous block).

    Returns
    -------
    ndarray (E,)
        The controller's bias (quantile: the dual estimate blended as in
        :func:`routesim.controllers.quantile_update`); Expert Choice uses none.

    Examples
    --------
    The sign law moves each expert by ``bias_update_rate`` (1e-3) towards
    the mean load of the previous block (an expert at the mean stays):

    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> b = lagged_bias(leakage_setup(cfg, 4), 0, 0)
    >>> np.rint(b * 1000).astype(int).tolist()
    [0, -1, 1, 0]
    """
    r = setup.config.router
    init = 1.0 if (r.bias_mode == "multiplicative" and setup.router != "quantile") else 0.0
    bias = np.full((1, r.num_experts), init)
    if setup.router == "expert_choice":
        return bias[0]
    z = block_logits(setup, seed, context, PREVIOUS_STREAM, np.arange(setup.block))[None]
    if setup.router == "expert_threshold":  # the threshold the previous block leaves
        return threshold_estimate(np, gate(np, r.score_function, z), r.topk)[0]
    return _controller_step(setup, bias, z)[0]


def route_block(setup: LeakageSetup, z_DTE: Any, bias_E: Any, perm_T: Any = None) -> Any:
    """Final assignment mask (D, T, E) of the blocks ``z_DTE`` (logits).

    Parameters
    ----------
    setup : LeakageSetup
        The router.
    z_DTE : array (D, T, E)
        Router logits of ``D`` versions of the block.
    bias_E : array (E,)
        Bias from the previous block (the lagged one; with ``timing =
        "current"`` one more controller window on each block updates it);
        Expert Threshold: the previous block's thresholds (``current``: this
        block's own).
    perm_T : int array (T,), optional
        Shuffled Expert Choice: the order of the block's tokens.

    Returns
    -------
    bool array (D, T, E)
        Assignments after selection and, for ``capacity``, dropping.

    Examples
    --------
    Every token prefers expert 3, the others tie (the lower index wins)
    until a bias lifts expert 2:

    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> setup = leakage_setup(cfg, 4)
    >>> z = np.zeros((1, 8, 4)); z[..., 3] = 1.0
    >>> route_block(setup, z, np.zeros(4)).sum(axis=1).tolist()
    [[8, 0, 0, 8]]
    >>> route_block(setup, z, np.array([0.0, 0.0, 1.0, 0.0])).sum(axis=1).tolist()
    [[0, 0, 8, 8]]
    """
    r = setup.config.router
    if setup.router == "expert_choice":
        scores = gate(np, r.score_function, z_DTE)
        if setup.shuffle:
            perm = np.broadcast_to(np.asarray(perm_T), z_DTE.shape[:2])
            return shuffled_expert_choice_mask(np, scores, r.topk, setup.ec_block, perm)
        return expert_choice_mask(np, scores, r.topk, setup.ec_block)
    if setup.router == "expert_threshold":
        scores = gate(np, r.score_function, z_DTE)
        thr = (threshold_estimate(np, scores, r.topk) if setup.timing == "current"
               else np.broadcast_to(np.asarray(bias_E, dtype=scores.dtype),
                                    (z_DTE.shape[0], r.num_experts)))
        return threshold_mask(np, scores, thr)
    bias = np.broadcast_to(np.asarray(bias_E, dtype=np.float64),
                           (z_DTE.shape[0], r.num_experts))
    if setup.timing == "current":
        bias = _controller_step(setup, bias, z_DTE)
    return _route(setup, z_DTE, bias, dropping=True).assignments(np, r.num_experts)[0]


def outcome_labels(packed: list[np.ndarray]) -> np.ndarray:
    """Label in ``[0, distinct)`` of each row of packed outcome bytes (list of (D, bytes)).

    Examples
    --------
    >>> a = np.array([[1, 2], [3, 4]], dtype=np.uint8); b = np.array([[1, 2]], dtype=np.uint8)
    >>> outcome_labels([a, b]).tolist()
    [0, 1, 0]
    """
    rows = np.ascontiguousarray(np.concatenate(packed))
    void = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    return np.unique(void, return_inverse=True)[1].ravel()


def _early_outcomes(setup: LeakageSetup, seed: int, context: int, draws: int,
                    per_expert: bool) -> list[np.ndarray]:
    """Labels (D,) of the early routing, one array per group (joint: one)."""
    e = setup.config.router.num_experts
    early, late = setup.early_index, setup.late_index
    ctx = block_logits(setup, seed, context, CONTEXT_STREAM, np.arange(early.size))
    bias = lagged_bias(setup, seed, context)
    perm = (token_permutation(np, rng.point_keys(seed, [0], 1), context, 0, setup.block)[0, 0]
            if setup.shuffle else None)  # fixed per context: blind to the tokens
    chunk = max(1, CHUNK_ELEMENTS // (setup.block * e))
    groups = e if per_expert else 1
    packed: list[list[np.ndarray]] = [[] for _ in range(groups)]
    for d0 in range(0, draws, chunk):
        d = min(chunk, draws - d0)
        rows = np.arange(d0 * late.size, (d0 + d) * late.size)
        z = np.empty((d, setup.block, e))
        z[:, early] = ctx
        z[:, late] = block_logits(setup, seed, context, DRAW_STREAM, rows).reshape(
            d, late.size, e)
        out = route_block(setup, z, bias, perm)[:, early]  # (d, n_early, E)
        if per_expert:
            for g in range(e):
                packed[g].append(np.packbits(out[:, :, g], axis=1))
        else:
            packed[0].append(np.packbits(out.reshape(d, -1), axis=1))
    return [outcome_labels(p) for p in packed]


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakageResult:
    """A measured leakage, in bits per block (``per_token`` divides by T).

    Attributes
    ----------
    label : str
        Router description.
    block, position, n_early : int
        Block size, split position, early tokens of the block.
    draws, contexts : int
    method, estimator : str
    bits : float
        Estimate, averaged over contexts.
    bits_plugin : float
        Plug-in estimate (biased low).
    ci : (float, float)
        Bootstrap interval of ``bits`` (:func:`routesim.leakage.entropy.entropy_ci`).
    distinct : int
        Most distinct outcomes seen in one group of one context.
    coverage : float
        Smallest Good-Turing sample coverage ``1 - singletons / draws``.
    counts : tuple of arrays
        Outcome counts of every (context, group).

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> result = measure_leakage(cfg, 4, 200, 0)
    >>> result.per_token, result.distinct, result.undersampled
    (0.0, 1, False)
    """

    label: str
    block: int
    position: int
    n_early: int
    draws: int
    contexts: int
    method: str
    estimator: str
    bits: float
    bits_plugin: float
    ci: tuple[float, float]
    distinct: int
    coverage: float
    counts: tuple

    @property
    def per_token(self) -> float:
        """Bits per token of the block, comparable with ``leakage_exact``."""
        return self.bits / self.block

    @property
    def undersampled(self) -> bool:
        """True when coverage < 0.9: many outcomes are unseen, ``bits`` is a lower bound."""
        return self.coverage < 0.9

    def draws_for(self, precision: float, confidence: float = 0.95) -> int:
        """Draws per context for a ``precision``-bit estimate (see ``entropy.draws_needed``)."""
        g = len(self.counts) // self.contexts
        return max(draws_needed(self.counts[c * g:(c + 1) * g], precision, confidence)
                   for c in range(self.contexts))


def measure_leakage(config: Config, position: int, draws: int, seed: int, *,
                    timing: str = "lagged", contexts: int = 1, method: str = "joint",
                    estimator: str = "miller_madow", confidence: float = 0.95,
                    n_resamples: int = 1000) -> LeakageResult:
    """Entropy of the early tokens' routing when the late tokens are redrawn.

    Parameters
    ----------
    config : Config
        One point; see :func:`leakage_setup` for what it must hold.
    position : int
        Split position inside each segment of the block.
    draws : int >= 2
        Redraws of the late tokens per context.
    seed : int >= 0
        Root of the counter RNG: the same seed gives the same numbers,
        however the draws are chunked.
    timing : {"lagged", "current"}
        Bias or quantile dual from the previous block or from this one.
    contexts : int >= 1
        Independent draws of the early scores; the result is their mean.
    method : {"joint", "per_expert"}
        Entropy of the whole early routing, or the sum over experts of the
        entropy of each expert's column (exact for independent columns, an
        upper bound otherwise).
    estimator : {"miller_madow", "chao_shen", "plugin"}
    confidence : float in (0, 1)
        Level of the bootstrap interval.
    n_resamples : int > 0
        Bootstrap resamples.

    Returns
    -------
    LeakageResult

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> measure_leakage(cfg, 4, 200, 0).bits    # lagged bias: causal
    0.0
    """
    setup = leakage_setup(config, position, timing)
    for name, value, ok in (("draws", draws, draws >= 2), ("contexts", contexts, contexts >= 1),
                            ("n_resamples", n_resamples, n_resamples >= 1)):
        if not (isinstance(value, (int, np.integer)) and ok):
            raise ConfigError(f"{name} = {value!r}: must be an integer >= "
                              f"{2 if name == 'draws' else 1}")
    if method not in ("joint", "per_expert"):
        raise ConfigError(f"method = {method!r}: must be 'joint' or 'per_expert'")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator = {estimator!r}: must be one of {', '.join(ESTIMATORS)}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence = {confidence!r}: must be in (0, 1)")
    labels: list[np.ndarray] = []
    for c in range(contexts):
        labels += _early_outcomes(setup, seed, c, draws, method == "per_expert")
    counts = tuple(np.bincount(lab) for lab in labels)

    def total(est: str) -> float:
        return float(sum(ESTIMATORS[est](c) for c in counts)) / contexts

    ci = entropy_ci(labels, estimator, confidence, n_resamples, seed, scale=1.0 / contexts)
    return LeakageResult(label=setup.label, block=setup.block, position=setup.position,
                         n_early=int(setup.early_index.size), draws=draws, contexts=contexts,
                         method=method, estimator=estimator, bits=total(estimator),
                         bits_plugin=total("plugin"), ci=ci,
                         distinct=max(c.size for c in counts),
                         coverage=min(coverage(c) for c in counts), counts=counts)


