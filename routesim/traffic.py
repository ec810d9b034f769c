"""Traffic: the router logits of each step's tokens.

Three kinds (``traffic.kind``):

``popularity``
    ``z[t, i] = mu_i(step) + scale * (sqrt(rho) * a[seq(t), i] + sqrt(1 - rho) * eps[t, i])``
    with a popularity vector ``mu`` (uniform, linear or Zipf skew), i.i.d.
    noise ``eps`` (normal, logistic or Gumbel) and a per-sequence shared
    component ``a`` that correlates the tokens of one sequence (``rho``).
    ``mu`` may drift: random walk, sinusoid, or regime switches (a fresh
    permutation of the experts at given steps).
``features``
    Token features ``x`` from a mixture of topics (centre plus spread)
    through router weights ``W``: ``z = x @ W.T``. The topic weights may
    drift the same three ways, on their logarithms: a random walk, a
    sinusoid (topic ``m`` in phase ``2 pi m / M``), or regime switches (a
    fresh permutation of the weights at given steps).
``trace``
    Replay of a recorded logit array, cycled over steps.
``frozen``
    One logit matrix per point and replica, replayed unchanged every step:
    the first step of popularity traffic, ``separation * N(0, 1)``, or the
    first step of a trace (``traffic.frozen_source``).

Tokens of a step are indexed globally, sequence-major (``t = s * L + l``),
so any chunk of tokens is generated identically.

Shape legend: P points, R replicas, T tokens, E experts, D feature dim,
M topics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from . import rng
from .config import Config
from .config._trace import check_trace, read_trace
from .exceptions import ConfigError

__all__ = [
    "popularity",
    "layer_popularity",
    "topic_weights",
    "TrafficParams",
    "TrafficState",
    "make_traffic_params",
    "init_traffic",
    "advance_traffic",
    "token_features",
    "logits",
    "load_trace",
]


#: Stream id of the regime permutations of the topic weights.
TOPIC_REGIME_STREAM = rng.Stream.EXTRA + 22


def popularity(skew: str, num_experts: int, *, linear_spread: float = 1.0,
               zipf_exponent: float = 1.0) -> np.ndarray:
    """Popularity logits ``mu`` of shape (E,), zero-mean.

    Parameters
    ----------
    skew : {"uniform", "linear", "zipf"}
    num_experts : int >= 2
    linear_spread : float >= 0
        ``linear``: ``mu`` runs evenly from ``+spread`` to ``-spread``.
    zipf_exponent : float >= 0
        ``zipf``: ``mu_i = -a * log(i + 1)`` (centred), so ``softmax(mu)``
        is the Zipf law with exponent ``a``.

    Examples
    --------
    >>> popularity("linear", 3, linear_spread=1.0)
    array([ 1.,  0., -1.])
    """
    i = np.arange(num_experts, dtype=np.float64)
    if skew == "uniform":
        mu = np.zeros(num_experts)
    elif skew == "linear":
        mu = linear_spread * (1.0 - 2.0 * i / (num_experts - 1))
    elif skew == "zipf":
        mu = -zipf_exponent * np.log1p(i)
    else:
        raise ConfigError(f"traffic.skew = {skew!r}: must be one of uniform, linear, zipf")
    return mu - mu.mean()


#: Spawn key of the draws that order each layer's popularity (one per run seed).
_LAYER_ORDER_KEY = 0x4C41_5945  # "LAYE"


def layer_popularity(mu_PE: np.ndarray, num_layers: int, correlation: float,
                     seed: int) -> np.ndarray:
    """Each layer's popularity: the same values in the layer's own expert order.

    Rows are point-major (row ``p * L + l`` is layer ``l`` of point ``p``).
    Layer ``l`` ranks its experts by ``g_l = sqrt(c) g + sqrt(1 - c) e_l``
    (a Gaussian copula: ``g`` and ``e_l`` standard normal vectors drawn from
    ``seed``, common to every point and replica) and gives the ``j``-th
    largest popularity value to its ``j``-th ranked expert. With one layer
    ``mu`` is returned unchanged.

    Parameters
    ----------
    mu_PE : ndarray (P * L, E)
        Popularity of each row (:func:`popularity` of its point).
    num_layers : int >= 1
    correlation : float in [0, 1]
        ``c``: correlation of the layers' latent scores.
    seed : int
        ``run.seed``.

    Returns
    -------
    ndarray (P * L, E)

    Examples
    --------
    >>> mu = np.tile(popularity("linear", 4), (3, 1))     # one point, three layers
    >>> out = layer_popularity(mu, 3, 1.0, seed=0)        # c = 1: one order for all
    >>> bool((out == out[0]).all()), sorted(out[0].tolist()) == sorted(mu[0].tolist())
    (True, True)
    """
    if num_layers == 1:
        return mu_PE
    rows, n = mu_PE.shape
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LAYER_ORDER_KEY,)))
    shared = gen.standard_normal(n)
    own = gen.standard_normal((num_layers, n))
    score_LE = math.sqrt(correlation) * shared + math.sqrt(1.0 - correlation) * own
    rank_LE = np.argsort(np.argsort(-score_LE, axis=-1, kind="stable"), axis=-1)
    values = -np.sort(-mu_PE, axis=-1)                     # descending, per row
    rank_XE = np.tile(rank_LE, (rows // num_layers, 1))
    return np.take_along_axis(values, rank_XE, axis=-1)


@dataclass(frozen=True)
class TrafficParams:
    """Per-point traffic parameters as host arrays plus the static settings.

    Built by :func:`make_traffic_params`; the ``_P`` and ``_PE`` fields have
    one row per point, the others are common to all points.

    Examples
    --------
    >>> from routesim import Config
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "traffic.skew": "linear"})
    >>> params = make_traffic_params(cfg.points())
    >>> params.kind, params.num_experts, params.mu0_PE.round(3).tolist()
    ('popularity', 4, [[1.0, 0.333, -0.333, -1.0]])
    """

    kind: str
    noise: str
    drift: str
    num_experts: int
    seq_length: int
    sequences_per_micro_batch: int
    mu0_PE: np.ndarray
    noise_scale_P: np.ndarray
    rho_P: np.ndarray
    drift_std_P: np.ndarray
    drift_amplitude_P: np.ndarray
    drift_period_P: np.ndarray
    regime_steps: tuple[int, ...]
    feature_dim: int
    num_topics: int
    topic_cumweights_M: np.ndarray
    topic_logweights_M: np.ndarray
    topic_spread_P: np.ndarray
    router_init_scale: float
    topic_by_micro_batch: bool
    trace_SXE: np.ndarray | None
    frozen_source: str = "popularity"
    separation_P: np.ndarray | None = None


@dataclass(frozen=True)
class TrafficState:
    """What traffic carries between steps.

    Attributes
    ----------
    mu_PRE : array (P, R, E)
        Popularity logits in force for the current step.
    walk_PRE : array (P, R, E)
        Random-walk displacement accumulated so far.
    regime_perm_GPRE : array (G, P, R, E)
        Expert permutation of each regime (G = switches + 1).
    centres_PRMD : array (P, R, M, D) or None
        Topic centres (``features``).
    weight_PRED : array (P, R, E, D) or None
        Router weights (``features``).
    topic_logw_PRM : float64 array (P, R, M) or None
        Log topic weights in force (``features`` with drift; None without).
    topic_walk_PRM : float64 array (P, R, M) or None
        Random-walk displacement of the log topic weights.
    topic_perm_GPRM : int array (G, P, R, M) or None
        Topic permutation of each regime (``features`` with regime drift).

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2})
    >>> state = init_traffic(np, make_traffic_params(cfg.points()), rng.point_keys(0, [0], 2))
    >>> state.mu_PRE.shape, state.regime_perm_GPRE.shape, state.weight_PRED is None
    ((1, 2, 4), (1, 1, 2, 4), True)
    """

    mu_PRE: Any
    walk_PRE: Any
    regime_perm_GPRE: Any
    centres_PRMD: Any = None
    weight_PRED: Any = None
    topic_logw_PRM: Any = None
    topic_walk_PRM: Any = None
    topic_perm_GPRM: Any = None


def load_trace(trace: str) -> np.ndarray:
    """Load a logit trace of shape (steps, tokens, experts) as read-only float32.

    ``"builtin"`` is the small trace shipped with the package (recorded from
    this package's own topic-mixture traffic: 16 steps of 512 tokens over 16
    experts). A config with ``traffic.kind = "trace"`` reads and checks its
    trace when it is built (:func:`routesim.config._trace.read_trace`), so
    this read is served from that cache.

    Raises
    ------
    ConfigError
        Naming ``traffic.trace`` if the file is missing, not an ``.npz``
        archive, corrupt, or its ``logits`` are not a finite real 3-D array.

    Examples
    --------
    >>> load_trace("builtin").shape
    (16, 512, 16)
    """
    return read_trace(trace)


def make_traffic_params(points: Sequence[Config]) -> TrafficParams:
    """Collect per-point traffic settings into arrays (set-up, not the hot path).

    Parameters
    ----------
    points : sequence of Config
        The points of one run (sweep applied).

    Returns
    -------
    TrafficParams

    Examples
    --------
    A sweep over the noise scale gives one entry per point:

    >>> from routesim import Config
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "sweep.parameters": {"traffic.noise_scale": [0.5, 2.0]}})
    >>> params = make_traffic_params(cfg.points())
    >>> params.noise_scale_P.tolist(), params.mu0_PE.shape
    ([0.5, 2.0], (2, 4))
    """
    first = points[0]
    t, r, b = first.traffic, first.router, first.batch
    n = r.num_experts
    mu0 = np.stack([
        popularity(p.traffic.skew, n, linear_spread=p.traffic.linear_spread,
                   zipf_exponent=p.traffic.zipf_exponent)
        for p in points
    ])
    weights = t.topic_weights or tuple([1.0 / t.num_topics] * t.num_topics)
    trace = None
    if t.replays_trace:
        check_trace(t.trace, n, b.tokens_per_step)
        trace = load_trace(t.trace)

    def col(name: str) -> np.ndarray:
        return np.array([getattr(p.traffic, name) for p in points], dtype=np.float64)

    return TrafficParams(
        kind=t.kind, noise=t.noise, drift=t.drift, num_experts=n, seq_length=b.seq_length,
        sequences_per_micro_batch=b.sequences_per_micro_batch, mu0_PE=mu0,
        noise_scale_P=col("noise_scale"), rho_P=col("seq_correlation"),
        drift_std_P=col("drift_std"), drift_amplitude_P=col("drift_amplitude"),
        drift_period_P=col("drift_period"), regime_steps=t.regime_steps,
        feature_dim=t.feature_dim, num_topics=t.num_topics,
        topic_cumweights_M=np.cumsum(np.asarray(weights, dtype=np.float64)),
        topic_logweights_M=_log_weights(weights),
        topic_spread_P=col("topic_spread"), router_init_scale=t.router_init_scale,
        topic_by_micro_batch=t.topic_by_micro_batch, trace_SXE=trace,
        frozen_source=t.frozen_source, separation_P=col("separation"),
    )


def _log_weights(weights: Sequence[float]) -> np.ndarray:
    """Logarithms of the topic weights (-inf for a zero weight)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(weights, dtype=np.float64))


def _per_point(xp: ModuleType, values_P: np.ndarray, ndim: int, dtype: Any) -> Any:
    """A (P,) host vector as an xp array shaped (P, 1, ..., 1) with ``ndim`` axes."""
    return xp.reshape(xp.asarray(values_P, dtype=dtype), (-1,) + (1,) * (ndim - 1))


def init_traffic(xp: ModuleType, params: TrafficParams, keys_PR: Any,
                 dtype: Any = None) -> TrafficState:
    """Initial traffic state (regime permutations, topic centres, router weights).

    Parameters
    ----------
    params : TrafficParams
    keys_PR : uint64 array (P, R)
        The run's random keys (:func:`routesim.rng.point_keys`).
    dtype : dtype, optional
        Of the logits (default ``xp.float32``).

    Returns
    -------
    TrafficState

    Examples
    --------
    Every replica starts from its point's popularity vector:

    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "traffic.skew": "linear"})
    >>> state = init_traffic(np, make_traffic_params(cfg.points()), rng.point_keys(0, [0], 3))
    >>> state.mu_PRE.shape, state.mu_PRE[0, 2].astype(float).round(3).tolist()
    ((1, 3, 4), [1.0, 0.333, -0.333, -1.0])
    """
    dtype = dtype or xp.float32
    n = params.num_experts
    shape = tuple(keys_PR.shape)
    mu0 = xp.broadcast_to(xp.asarray(params.mu0_PE, dtype=dtype)[:, None, :], shape + (n,))
    groups = len(params.regime_steps) + 1
    perms = [xp.broadcast_to(xp.arange(n), shape + (n,))]
    for g in range(1, groups):
        u = rng.uniform(xp, keys_PR, -1, rng.Stream.INIT,
                        xp.arange(g * n, (g + 1) * n, dtype=xp.uint64))
        perms.append(xp.argsort(u, axis=-1))
    regime_perm = xp.stack(perms)
    centres = weight = logw = walk = topic_perm = None
    if params.kind == "features":
        d, m = params.feature_dim, params.num_topics
        centres = rng.standard_normal(xp, keys_PR, -1, rng.Stream.FEATURE,
                                      xp.arange(m, dtype=xp.uint64), d, dtype) / math.sqrt(d)
        weight = params.router_init_scale * rng.standard_normal(
            xp, keys_PR, -1, rng.Stream.TOPIC, xp.arange(n, dtype=xp.uint64), d, dtype)
        if params.drift != "none":
            logw = xp.broadcast_to(xp.asarray(params.topic_logweights_M, dtype=xp.float64),
                                   shape + (m,))
            walk = xp.zeros(shape + (m,), dtype=xp.float64)
            tperms = [xp.broadcast_to(xp.arange(m), shape + (m,))]
            for g in range(1, groups):
                u = rng.uniform(xp, keys_PR, -1, TOPIC_REGIME_STREAM,
                                xp.arange(g * m, (g + 1) * m, dtype=xp.uint64))
                tperms.append(xp.argsort(u, axis=-1))
            topic_perm = xp.stack(tperms)
    return TrafficState(mu_PRE=xp.asarray(mu0, copy=True), walk_PRE=xp.zeros_like(mu0),
                        regime_perm_GPRE=regime_perm, centres_PRMD=centres,
                        weight_PRED=weight, topic_logw_PRM=logw, topic_walk_PRM=walk,
                        topic_perm_GPRM=topic_perm)


def advance_traffic(xp: ModuleType, params: TrafficParams, state: TrafficState, keys_PR: Any,
                    step: int) -> TrafficState:
    """The traffic state in force at ``step`` (drift applied), a new object.

    Parameters
    ----------
    params : TrafficParams
    state : TrafficState
        The previous step's state (or the initial one).
    keys_PR : uint64 array (P, R)
    step : int

    Returns
    -------
    TrafficState

    Examples
    --------
    A sinusoid of amplitude 1 and period 4 adds ``sin(2 pi step / 4 + 2 pi i / E)``
    to expert ``i``; at step 1 that is ``cos(2 pi i / 4)``:

    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "traffic.drift": "sinusoid", "traffic.drift_amplitude": 1.0,
    ...                           "traffic.drift_period": 4.0})
    >>> params, keys = make_traffic_params(cfg.points()), rng.point_keys(0, [0], 1)
    >>> state = advance_traffic(np, params, init_traffic(np, params, keys), keys, step=1)
    >>> (state.mu_PRE[0, 0].astype(float).round(3) + 0.0).tolist()  # + 0.0: no -0.0
    [1.0, 0.0, -1.0, 0.0]
    """
    if params.drift == "none" or params.kind == "trace":
        return state
    if params.kind == "features":
        return _advance_topics(xp, params, state, keys_PR, step)
    n = params.num_experts
    dtype = state.mu_PRE.dtype
    mu0 = xp.asarray(params.mu0_PE, dtype=dtype)[:, None, :]
    walk = state.walk_PRE
    if params.drift == "random_walk" and step > 0:
        z = rng.standard_normal(xp, keys_PR, step, rng.Stream.DRIFT,
                                xp.arange(1, dtype=xp.uint64), n, dtype)[:, :, 0, :]
        walk = walk + _per_point(xp, params.drift_std_P, 3, dtype) * z
    mu = mu0 + walk
    if params.drift == "sinusoid":
        phase = 2 * math.pi * xp.arange(n, dtype=dtype) / n
        period = _per_point(xp, params.drift_period_P, 3, dtype)
        amp = _per_point(xp, params.drift_amplitude_P, 3, dtype)
        mu = mu + amp * xp.sin(2 * math.pi * step / period + phase)
    if params.drift == "regime":
        g = sum(1 for s in params.regime_steps if step >= s)
        perm = state.regime_perm_GPRE[g]
        mu = xp.take_along_axis(xp.broadcast_to(mu0, perm.shape), perm, axis=-1)
    return dataclasses.replace(state, mu_PRE=mu, walk_PRE=walk)


def _advance_topics(xp: ModuleType, params: TrafficParams, state: TrafficState, keys_PR: Any,
                    step: int) -> TrafficState:
    """The log topic weights in force at ``step`` (``features`` traffic with drift)."""
    m, f64 = params.num_topics, xp.float64
    logw0 = xp.asarray(params.topic_logweights_M, dtype=f64)
    walk = state.topic_walk_PRM
    if params.drift == "random_walk" and step > 0:
        z = rng.standard_normal(xp, keys_PR, step, rng.Stream.DRIFT,
                                xp.arange(1, dtype=xp.uint64), m, f64)[:, :, 0, :]
        walk = walk + _per_point(xp, params.drift_std_P, 3, f64) * z
    logw = logw0 + walk
    if params.drift == "sinusoid":
        phase = 2 * math.pi * xp.arange(m, dtype=f64) / m
        period = _per_point(xp, params.drift_period_P, 3, f64)
        amp = _per_point(xp, params.drift_amplitude_P, 3, f64)
        logw = logw + amp * xp.sin(2 * math.pi * step / period + phase)
    if params.drift == "regime":
        g = sum(1 for s in params.regime_steps if step >= s)
        perm = state.topic_perm_GPRM[g]
        logw = xp.take_along_axis(xp.broadcast_to(logw0, perm.shape), perm, axis=-1)
    return dataclasses.replace(state, topic_logw_PRM=logw, topic_walk_PRM=walk)


def topic_weights(xp: ModuleType, params: TrafficParams, state: TrafficState) -> Any:
    """Topic mixture weights in force: array (P, R, M), or (M,) without drift.

    Parameters
    ----------
    xp : namespace
    params : TrafficParams
        Of ``features`` traffic.
    state : TrafficState
        As returned by :func:`advance_traffic` for the step.

    Returns
    -------
    float64 array (P, R, M) with drift, (M,) without

    Examples
    --------
    Regime switches permute the weights ``[0.7, 0.2, 0.1]`` at step 2:

    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...     "traffic.kind": "features", "traffic.num_topics": 3,
    ...     "traffic.topic_weights": [0.7, 0.2, 0.1], "traffic.drift": "regime",
    ...     "traffic.regime_steps": [2]})
    >>> params, keys = make_traffic_params(cfg.points()), rng.point_keys(0, [0], 1)
    >>> state = init_traffic(np, params, keys)
    >>> before = topic_weights(np, params, advance_traffic(np, params, state, keys, 1))
    >>> after = topic_weights(np, params, advance_traffic(np, params, state, keys, 2))
    >>> before.round(6).tolist(), sorted(after[0, 0].round(6).tolist())
    ([[[0.7, 0.2, 0.1]]], [0.1, 0.2, 0.7])
    """
    if state.topic_logw_PRM is None:
        return xp.diff(xp.asarray(params.topic_cumweights_M, dtype=xp.float64),
                       prepend=xp.zeros((1,), dtype=xp.float64))
    logw = state.topic_logw_PRM
    top = xp.max(logw, axis=-1, keepdims=True)
    e = xp.exp(logw - top)
    return e / xp.sum(e, axis=-1, keepdims=True)


def token_features(xp: ModuleType, params: TrafficParams, state: TrafficState, keys_PR: Any,
                   step: int, token_start: int, n_tokens: int) -> tuple[Any, Any]:
    """Features and topics of tokens ``[token_start, token_start + n_tokens)``.

    Parameters
    ----------
    params : TrafficParams
        Of ``features`` traffic.
    state : TrafficState
    keys_PR : uint64 array (P, R)
    step : int
    token_start, n_tokens : int
        The chunk, in global token indices of the step.

    Returns
    -------
    x_PRTD : array (P, R, T, D)
    topic_PRT : int array (P, R, T)

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "traffic.kind": "features", "traffic.feature_dim": 8,
    ...                           "traffic.num_topics": 3})
    >>> params, keys = make_traffic_params(cfg.points()), rng.point_keys(0, [0], 1)
    >>> x, topic = token_features(np, params, init_traffic(np, params, keys), keys, 0, 0, 6)
    >>> x.shape, topic.shape, bool(np.all((topic >= 0) & (topic < 3)))
    ((1, 1, 6, 8), (1, 1, 6), True)
    """
    dtype = state.centres_PRMD.dtype
    rows = xp.arange(token_start, token_start + n_tokens, dtype=xp.uint64)
    if params.topic_by_micro_batch:
        per_mb = params.sequences_per_micro_batch * params.seq_length
        unit = rows // per_mb
    else:
        unit = rows
    u = rng.uniform(xp, keys_PR, step, rng.Stream.TOPIC, unit, dtype=xp.float64)
    if state.topic_logw_PRM is None:
        cum = xp.asarray(params.topic_cumweights_M[:-1], dtype=xp.float64)
    else:  # drifting weights: one cumulative table per (point, replica)
        cum = xp.cumulative_sum(topic_weights(xp, params, state), axis=-1)[:, :, None, :-1]
    topic = xp.sum(xp.astype(u[..., None] >= cum, xp.int64), axis=-1)
    m = params.num_topics
    onehot = xp.astype(topic[..., None] == xp.arange(m), dtype)
    x = xp.matmul(onehot, state.centres_PRMD)
    eps = rng.standard_normal(xp, keys_PR, step, rng.Stream.FEATURE, rows, params.feature_dim,
                              dtype)
    spread = _per_point(xp, params.topic_spread_P, 4, dtype) / math.sqrt(params.feature_dim)
    return x + spread * eps, topic


def logits(xp: ModuleType, params: TrafficParams, state: TrafficState, keys_PR: Any, step: int,
           token_start: int, n_tokens: int) -> Any:
    """Router logits ``z`` of shape (P, R, T, E) for a chunk of the step's tokens.

    Parameters
    ----------
    xp : namespace
    params : TrafficParams
    state : TrafficState
        As returned by :func:`advance_traffic` for this step.
    keys_PR : uint64 array (P, R)
    step : int
    token_start, n_tokens : int
        The chunk, in global token indices of the step (sequence-major).

    Returns
    -------
    array (P, R, T, E)

    Examples
    --------
    Tokens are drawn by their global index, so a chunk equals the same tokens
    drawn with the whole step:

    >>> import numpy as np
    >>> from routesim import Config, rng
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2})
    >>> params, keys = make_traffic_params(cfg.points()), rng.point_keys(0, [0], 2)
    >>> state = init_traffic(np, params, keys)
    >>> z = logits(np, params, state, keys, step=0, token_start=0, n_tokens=5)
    >>> z.shape, z.dtype
    ((1, 2, 5, 4), dtype('float32'))
    >>> np.array_equal(z[:, :, 3:], logits(np, params, state, keys, 0, 3, 2))
    True
    """
    n = params.num_experts
    if params.kind == "frozen":  # the first step, every step
        step = 0
        if params.frozen_source == "separation":
            rows = xp.arange(token_start, token_start + n_tokens, dtype=xp.uint64)
            eps = rng.noise(xp, "normal", keys_PR, 0, rng.Stream.NOISE, rows, n,
                            state.mu_PRE.dtype)
            return _per_point(xp, params.separation_P, 4, state.mu_PRE.dtype) * eps
    if params.trace_SXE is not None:
        trace = params.trace_SXE[step % params.trace_SXE.shape[0]]
        z = xp.asarray(trace[token_start:token_start + n_tokens])
        return xp.broadcast_to(z, tuple(keys_PR.shape) + tuple(z.shape))
    if params.kind == "features":
        x, _ = token_features(xp, params, state, keys_PR, step, token_start, n_tokens)
        return xp.matmul(x, xp.matrix_transpose(state.weight_PRED))
    dtype = state.mu_PRE.dtype
    rows = xp.arange(token_start, token_start + n_tokens, dtype=xp.uint64)
    eps = rng.noise(xp, params.noise, keys_PR, step, rng.Stream.NOISE, rows, n, dtype)
    scale = _per_point(xp, params.noise_scale_P, 4, dtype)
    if np.any(params.rho_P > 0):
        L = params.seq_length
        first, last = token_start // L, (token_start + n_tokens - 1) // L
        seq_rows = xp.arange(first, last + 1, dtype=xp.uint64)
        a = rng.noise(xp, params.noise, keys_PR, step, rng.Stream.SEQUENCE, seq_rows, n, dtype)
        seq_of_token = (xp.arange(token_start, token_start + n_tokens) // L) - first
        a_tok = xp.take(a, seq_of_token, axis=2)
        rho = _per_point(xp, params.rho_P, 4, dtype)
        eps = xp.sqrt(rho) * a_tok + xp.sqrt(1.0 - rho) * eps
    return state.mu_PRE[:, :, None, :] + scale * eps
