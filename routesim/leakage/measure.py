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

Routers (:func:`leakage_setup`, from the config and ``timing``):

=====================  ===================================================
``token_choice``       top-K of ``s + b``; ``lagged``: ``b`` from the
                       previous block's loads (the controller's one-window
                       lag: causal, exactly 0 bits); ``current``: ``b``
                       updated with this block's loads before routing it
``capacity``           as above (lagged bias), then
                       ``router.capacity_factor`` with ``probs`` or
                       ``position`` dropping over the block
``quantile``           top-K of ``z + b`` with ``b`` the quantile dual of
                       the previous block (``lagged``) or of this one
                       (``current``)
``expert_choice``      each expert takes its top ``K * T / N`` tokens
=====================  ===================================================

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
from ..gates import gate
from ..traffic import popularity

__all__ = [
    "LeakageSetup",
    "LeakageResult",
    "leakage_setup",
    "block_logits",
    "route_block",
    "lagged_bias",
    "outcome_labels",
    "measure_leakage",
]

#: Counter-RNG streams: early scores, late redraws, previous block.
CONTEXT_STREAM, DRAW_STREAM, PREVIOUS_STREAM = (rng.Stream.EXTRA + i for i in range(3))
#: Upper bound on draws x T x E per routed chunk (memory control).
CHUNK_ELEMENTS = 1 << 21


# ----------------------------------------------------------------------------
# The block and its routers
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakageSetup:
    """One block, its split and its router, read from a config.

    Attributes
    ----------
    router : {"token_choice", "capacity", "quantile", "expert_choice"}
    timing : {"lagged", "current"}
        When the bias (or quantile dual) is computed (ignored by Expert Choice).
    block, segments, segment_length : int
        ``T = B * Ls`` tokens, sequence-major.
    position : int
        Split position inside each segment.
    capacity : int
        Tokens per expert (capacity dropping, Expert Choice), else ``T``.
    mu_E : ndarray (E,)
        Popularity logits.
    config : Config
        The (single-point) config it came from.

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> setup = leakage_setup(cfg, 4)
    >>> setup.label, setup.early_index.tolist(), setup.late_index.tolist()
    ('token choice, lagged sign bias', [0, 1, 2, 3], [4, 5, 6, 7])
    """

    router: str
    timing: str
    block: int
    segments: int
    segment_length: int
    position: int
    capacity: int
    mu_E: np.ndarray
    config: Config

    @property
    def early_index(self) -> np.ndarray:
        """Block indices of the early tokens (positions < ``position``)."""
        pos = np.arange(self.block) % self.segment_length
        return np.flatnonzero(pos < self.position)

    @property
    def late_index(self) -> np.ndarray:
        """Block indices of the late tokens."""
        pos = np.arange(self.block) % self.segment_length
        return np.flatnonzero(pos >= self.position)

    @property
    def label(self) -> str:
        """Short router description for tables."""
        r, c = self.config.router, self.config.controller
        if self.router == "expert_choice":
            return "expert choice"
        if self.router == "capacity":
            return f"capacity {r.token_drop_policy} (C={r.capacity_factor:g})"
        if self.router == "quantile":
            return f"quantile, {self.timing} dual"
        when = "same-batch" if self.timing == "current" else "lagged"
        return f"token choice, {when} {c.type} bias"


def leakage_setup(config: Config, position: int, timing: str = "lagged") -> LeakageSetup:
    """Read the block, split and router of a leakage measurement from ``config``.

    Parameters
    ----------
    config : Config
        One point (no sweep), ``traffic.kind = "popularity"`` with
        ``seq_correlation = 0``. The block is ``router.expert_choice_block``
        (or one micro-batch) for Expert Choice, one micro-batch otherwise.
    position : int
        Split position inside each segment, in ``[1, Ls)``.
    timing : {"lagged", "current"}
        Bias or dual from the previous block (causal) or from this one.

    Returns
    -------
    LeakageSetup

    Raises
    ------
    ConfigError
        Naming the field or argument that makes the measurement undefined.

    Examples
    --------
    One micro-batch of one sequence of 8 tokens, split after 4; dropless,
    so the capacity is the whole block:

    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> setup = leakage_setup(cfg, 4)
    >>> setup.router, setup.block, setup.segments, setup.segment_length, setup.capacity
    ('token_choice', 8, 1, 8, 8)
    >>> leakage_setup(cfg, 8)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: position = 8: must be an integer in [1, 8) (a position inside each segment of the block)
    """
    points = config.points()
    if len(points) != 1:
        raise ConfigError(f"sweep.parameters = {dict(config.sweep.parameters)!r}: a leakage "
                          "measurement takes a config with one point (no sweep)")
    cfg = points[0]
    r, b, t = cfg.router, cfg.batch, cfg.traffic
    if t.kind != "popularity":
        raise ConfigError(f"traffic.kind = {t.kind!r}: leakage is measured on 'popularity' "
                          "traffic (independent tokens)")
    if t.seq_correlation != 0:
        raise ConfigError(f"traffic.seq_correlation = {t.seq_correlation!r}: must be 0 for a "
                          "leakage measurement (late tokens are redrawn independently)")
    if timing not in ("lagged", "current"):
        raise ConfigError(f"timing = {timing!r}: must be 'lagged' or 'current'")
    tokens_mb = b.sequences_per_micro_batch * b.seq_length
    if r.router_type == "expert_choice":
        kind, block = "expert_choice", r.expert_choice_block or tokens_mb
    else:
        kind = ("quantile" if controllers.get_law(cfg.controller.type).bias_on_logits
                else "token_choice" if r.dropless else "capacity")
        block = tokens_mb
    L = b.seq_length
    if block >= L and block % L == 0:
        segments, seg_len = block // L, L
    elif block < L and L % block == 0:
        segments, seg_len = 1, block
    else:
        raise ConfigError(f"router.expert_choice_block = {block}: must be a multiple or a "
                          f"divisor of batch.seq_length ({L}) for a leakage measurement")
    if not (isinstance(position, (int, np.integer)) and 1 <= position < seg_len):
        raise ConfigError(f"position = {position!r}: must be an integer in [1, {seg_len}) "
                          "(a position inside each segment of the block)")
    if kind == "expert_choice":
        cap = block * r.topk // r.num_experts
    else:
        cap = routing.capacity(block, r.topk, r.num_experts, r.capacity_factor)
    mu = popularity(t.skew, r.num_experts, linear_spread=t.linear_spread,
                    zipf_exponent=t.zipf_exponent)
    return LeakageSetup(router=kind, timing=timing, block=block, segments=segments,
                        segment_length=seg_len, position=int(position), capacity=cap,
                        mu_E=mu, config=cfg)


def block_logits(setup: LeakageSetup, seed: int, step: int, stream: int, rows: Any
                 ) -> np.ndarray:
    """Popularity logits ``mu + scale * noise`` of some tokens, float64 (len(rows), E).

    Parameters
    ----------
    setup : LeakageSetup
        Gives ``mu``, the noise law and its scale.
    seed : int >= 0
        Root seed (one counter-RNG key).
    step, stream : int
        Counter coordinates: the context index and one of the module's
        ``*_STREAM`` ids.
    rows : int array
        Global row indices; a row's logits depend only on
        ``(seed, step, stream, row)``.

    Returns
    -------
    ndarray (len(rows), E)

    Examples
    --------
    A row's logits do not depend on which other rows are drawn with it:

    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> setup = leakage_setup(cfg, 4)
    >>> z = block_logits(setup, 0, 0, CONTEXT_STREAM, np.arange(3))
    >>> z.shape, bool(np.array_equal(z[1:], block_logits(setup, 0, 0, CONTEXT_STREAM, [1, 2])))
    ((3, 4), True)
    """
    t = setup.config.traffic
    key = rng.point_keys(seed, [0], 1)
    eps = rng.noise(np, t.noise, key, step, stream, np.asarray(rows, dtype=np.uint64),
                    setup.mu_E.size, np.float64)[0, 0]
    return setup.mu_E + t.noise_scale * eps


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
    return _controller_step(setup, bias, z)[0]


def route_block(setup: LeakageSetup, z_DTE: Any, bias_E: Any) -> Any:
    """Final assignment mask (D, T, E) of the blocks ``z_DTE`` (logits).

    Parameters
    ----------
    setup : LeakageSetup
        The router.
    z_DTE : array (D, T, E)
        Router logits of ``D`` versions of the block.
    bias_E : array (E,)
        Bias from the previous block (the lagged one; with ``timing =
        "current"`` one more controller window on each block updates it).

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
        return expert_choice_mask(np, gate(np, r.score_function, z_DTE), r.topk, setup.block)
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
        out = route_block(setup, z, bias)[:, early]  # (d, n_early, E)
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


