"""Hypothesis strategies for routesim: valid configs, score matrices, loads, popularity.

Every strategy builds valid values by construction (K is drawn after N,
groups from the divisors of N, micro-batches from the divisors of the batch,
a law's parameters from its registration), never by filtering, so shrinking
stays fast and no example is rejected. Size bounds keep one example cheap:
by default at most 16 experts, 8 sequences of 32 tokens and 20 steps.

Legend: T tokens, E (or N) experts.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from hypothesis import strategies as st

from ..config import (BatchConfig, Config, ControllerConfig, RouterConfig, RunConfig,
                      TrafficConfig)
from ..controllers import get_law, registered

__all__ = [
    "router_configs",
    "traffic_configs",
    "batch_configs",
    "controller_configs",
    "configs",
    "score_matrices",
    "load_vectors",
    "popularity_vectors",
]

GATES = ("sigmoid", "softmax", "sqrtsoftplus")
SKEWS = ("uniform", "linear", "zipf")
NOISES = ("normal", "logistic", "gumbel")
WINDOWS = ("micro_batch", "global_batch", "steps")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _groupings(n: int, k: int) -> list[tuple[int, int]]:
    """Every (num_groups, group_topk) that RouterConfig accepts for N = n, K = k."""
    return [(g, gk) for g in _divisors(n) for gk in range(1, g + 1)
            if k % gk == 0 and gk * (n // g) >= k and k // gk <= n // g]


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def router_configs(draw: Any, *, min_experts: int = 2, max_experts: int = 16,
                   gates: Sequence[str] = GATES, groups: bool = True,
                   capacity: bool = True) -> RouterConfig:
    """Token-choice routers: N, then K in [1, N), optional groups and capacity.

    Parameters
    ----------
    min_experts, max_experts : int >= 2
        Bounds of ``router.num_experts``.
    gates : sequence of str
        Score functions to draw from.
    groups : bool
        Also draw group-limited routing (num_groups dividing N, group_topk
        dividing K).
    capacity : bool
        Also draw a capacity factor in [0.5, 2] (else dropless).

    Returns
    -------
    strategy of RouterConfig

    Examples
    --------
    >>> from hypothesis import find
    >>> r = find(router_configs(max_experts=8), lambda r: r.num_groups is not None)
    >>> (r.num_experts, r.topk, r.num_groups, r.group_topk)
    (2, 1, 1, 1)
    """
    n = draw(st.integers(min_experts, max_experts))
    k = draw(st.integers(1, n - 1))
    fields: dict[str, Any] = {"num_experts": n, "topk": k,
                              "score_function": draw(st.sampled_from(tuple(gates)))}
    if fields["score_function"] == "softmax" and draw(st.booleans()):
        fields["pre_softmax"] = True
    if groups and draw(st.booleans()):
        fields["num_groups"], fields["group_topk"] = draw(st.sampled_from(_groupings(n, k)))
    if capacity and draw(st.booleans()):
        fields["capacity_factor"] = draw(_floats(0.5, 2.0))
        fields["token_drop_policy"] = draw(st.sampled_from(("probs", "position")))
    return RouterConfig(**fields)


@st.composite
def traffic_configs(draw: Any, *, skews: Sequence[str] = SKEWS,
                    noises: Sequence[str] = NOISES, max_noise_scale: float = 2.0,
                    seq_correlation: bool = True) -> TrafficConfig:
    """Popularity traffic: skew kind and its bounded scale, noise law and scale.

    Parameters
    ----------
    skews : sequence of {"uniform", "linear", "zipf"}
        Popularity kinds to draw from.
    noises : sequence of {"normal", "logistic", "gumbel"}
        Noise laws to draw from.
    max_noise_scale : float > 0.1
        Upper bound of ``traffic.noise_scale`` (the lower one is 0.1).
    seq_correlation : bool
        Also draw a sequence correlation in [0, 0.5].

    Returns
    -------
    strategy of TrafficConfig

    Examples
    --------
    >>> from hypothesis import find
    >>> find(traffic_configs(), lambda t: t.skew == "zipf").zipf_exponent
    0.0
    """
    fields: dict[str, Any] = {"skew": draw(st.sampled_from(tuple(skews))),
                              "noise": draw(st.sampled_from(tuple(noises))),
                              "noise_scale": draw(_floats(0.1, max_noise_scale))}
    if fields["skew"] == "linear":
        fields["linear_spread"] = draw(_floats(0.0, 2.0))
    elif fields["skew"] == "zipf":
        fields["zipf_exponent"] = draw(_floats(0.0, 1.5))
    if seq_correlation:
        fields["seq_correlation"] = draw(_floats(0.0, 0.5))
    return TrafficConfig(**fields)


@st.composite
def batch_configs(draw: Any, *, max_sequences: int = 8, max_seq_length: int = 32,
                  seq_length_multiple: int = 1) -> BatchConfig:
    """Batches whose micro-batch size divides the number of sequences.

    Parameters
    ----------
    max_sequences : int > 0
        Upper bound of ``batch.num_sequences``.
    max_seq_length : int > 0
        Upper bound of ``batch.seq_length`` (before the multiple).
    seq_length_multiple : int > 0
        ``batch.seq_length`` is a multiple of it.

    Returns
    -------
    strategy of BatchConfig

    Examples
    --------
    >>> from hypothesis import find
    >>> b = find(batch_configs(), lambda b: b.num_micro_batches > 1)
    >>> (b.num_sequences, b.micro_batch_size)
    (2, 1)
    """
    b = draw(st.integers(1, max_sequences))
    mbs = draw(st.sampled_from(_divisors(b)))
    length = seq_length_multiple * draw(st.integers(1, max(1, max_seq_length
                                                            // seq_length_multiple)))
    return BatchConfig(num_sequences=b, seq_length=length,
                       micro_batch_size=None if mbs == b else mbs)


def _law_params(draw: Any, name: str) -> dict[str, float]:
    """Each parameter of law ``name``: its default scaled by [0.5, 2], or the default if refused."""
    out = {}
    for key, spec in get_law(name).params.items():
        value = spec.default * draw(_floats(0.5, 2.0))
        out[key] = value if spec.problem(value) is None else spec.default
    return out


@st.composite
def controller_configs(draw: Any, types: Sequence[str] | None = None, *,
                       max_rate: float = 0.05, windows: Sequence[str] = WINDOWS,
                       max_update_every: int = 4) -> ControllerConfig:
    """Controllers drawn from the registry, setting only the fields their law uses.

    Parameters
    ----------
    types : sequence of str or None
        Law names to draw from; None: every registered law
        (:func:`routesim.controllers.registered`, read when drawn) that
        needs no zero-computation experts.
    max_rate : float > 1e-4
        Upper bound of ``controller.bias_update_rate`` (lower: 1e-4).
    windows : sequence of {"micro_batch", "global_batch", "steps"}
        Update windows to draw from.
    max_update_every : int > 0
        Upper bound of ``controller.update_every`` (window ``steps``).

    Returns
    -------
    strategy of ControllerConfig

    Examples
    --------
    >>> from hypothesis import find
    >>> c = find(controller_configs(["sign"]), lambda c: c.window == "steps")
    >>> (c.type, c.update_every)
    ('sign', 1)
    """
    # by default the laws that need nothing from the router (zero_budget needs zero experts)
    default = tuple(n for n in registered() if "zero_experts" not in get_law(n).inputs)
    name = draw(st.sampled_from(tuple(types) if types is not None else default))
    law = get_law(name)
    uses = law.uses
    fields: dict[str, Any] = {"type": name}
    if "bias_update_rate" in uses:
        fields["bias_update_rate"] = draw(_floats(1e-4, max_rate))
    if "window" in uses:
        fields["window"] = draw(st.sampled_from(tuple(windows)))
        if fields["window"] == "steps":
            fields["update_every"] = draw(st.integers(1, max_update_every))
    if "momentum" in uses:
        fields["momentum"] = draw(_floats(0.0, 0.95))
    if "bias_cap" in uses:
        fields["bias_cap"] = draw(st.sampled_from((0.0, 0.5, 1.0)))
    if "warmup_steps" in uses:
        fields["warmup_steps"] = draw(st.integers(0, 2))
    if "tanh_scale" in uses:
        fields["tanh_scale"] = draw(_floats(0.05, 1.0))
    if "quantile_ema" in uses:
        fields["quantile_ema"] = draw(_floats(0.0, 0.9))
    fields["params"] = _law_params(draw, name)
    return ControllerConfig(**fields)


@st.composite
def configs(draw: Any, *, controllers: Sequence[str] | None = None, max_experts: int = 16,
            max_sequences: int = 8, max_seq_length: int = 32, max_steps: int = 20,
            engines: Sequence[str] = ("exact",), groups: bool = True,
            capacity: bool = True) -> Config:
    """Whole configs (popularity traffic, token choice), cheap to simulate.

    The law is drawn first; a quantile-balancing law then gets an additive,
    ungrouped router and a sequence length that makes ``tokens x K``
    divisible by N.

    Parameters
    ----------
    controllers : sequence of str or None
        Law names (None: every registered law).
    max_experts, max_sequences, max_seq_length, max_steps : int > 0
        Size bounds (the sequence length may grow to a multiple of N for
        quantile balancing).
    engines : sequence of {"exact", "meanfield"}
        Engines to draw from.
    groups, capacity : bool
        Also draw group-limited routing, a capacity factor.

    Returns
    -------
    strategy of Config

    Examples
    --------
    >>> from hypothesis import find
    >>> cfg = find(configs(controllers=["sign"]), lambda c: c.router.topk > 1)
    >>> (cfg.router.num_experts, cfg.router.topk, cfg.run.steps)
    (3, 2, 1)
    """
    controller = draw(controller_configs(controllers))
    law = get_law(controller.type)
    dual = law.needs_dual_estimate or law.bias_on_logits
    router = draw(router_configs(max_experts=max_experts, groups=groups and not dual,
                                 capacity=capacity))
    batch = draw(batch_configs(max_sequences=max_sequences, max_seq_length=max_seq_length))
    if dual:  # tokens per micro-batch x K must be divisible by N
        n, k = router.num_experts, router.topk
        multiple = n // math.gcd(n, k * batch.sequences_per_micro_batch)
        batch = BatchConfig(num_sequences=batch.num_sequences,
                            micro_batch_size=batch.micro_batch_size,
                            seq_length=multiple * max(1, batch.seq_length // multiple))
    run = RunConfig(steps=draw(st.integers(1, max_steps)), seed=draw(st.integers(0, 2**32)),
                    engine=draw(st.sampled_from(tuple(engines))))
    return Config(run=run, batch=batch, traffic=draw(traffic_configs()), router=router,
                  controller=controller)


@st.composite
def score_matrices(draw: Any, tokens: int, experts: int, *, spacing: float = 1e-2,
                   offset: float = 0.0) -> np.ndarray:
    """Score matrices (T, E) without ties: each row a permutation of a grid plus jitter.

    Row values are ``offset + spacing * (perm + jitter)`` with jitter in
    [0, 0.25]: distinct by at least ``spacing / 2`` within a row.

    Parameters
    ----------
    tokens, experts : int > 0
        Shape ``(T, E)``.
    spacing : float > 0
        Grid spacing.
    offset : float
        Added to every score.

    Returns
    -------
    strategy of ndarray, shape (T, E), float64

    Examples
    --------
    >>> from hypothesis import find
    >>> s = find(score_matrices(2, 4), lambda s: True)
    >>> s.shape, all(len(set(row)) == 4 for row in s.tolist())
    ((2, 4), True)
    """
    perms = [draw(st.permutations(range(experts))) for _ in range(tokens)]
    jitter = draw(st.lists(_floats(0.0, 0.25), min_size=tokens * experts,
                           max_size=tokens * experts))
    grid_TE = np.asarray(perms, dtype=np.float64).reshape(tokens, experts)
    return offset + spacing * (grid_TE + np.asarray(jitter).reshape(tokens, experts))


@st.composite
def load_vectors(draw: Any, experts: int, total: int) -> np.ndarray:
    """Integer loads (E,) >= 0 summing to ``total`` (stars and bars, no filtering).

    Parameters
    ----------
    experts : int > 0
        Length ``E``.
    total : int >= 0
        Sum of the loads (``K * T`` for one window).

    Returns
    -------
    strategy of ndarray, shape (E,), int64

    Examples
    --------
    >>> from hypothesis import find
    >>> v = find(load_vectors(4, 10), lambda v: v.max() >= 5)
    >>> int(v.sum()), v.shape
    (10, (4,))
    """
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=experts - 1,
                                max_size=experts - 1)))
    return np.diff(np.asarray([0, *cuts, total], dtype=np.int64))


@st.composite
def popularity_vectors(draw: Any, experts: int, skew: float) -> np.ndarray:
    """Popularity logits (E,) with spread ``max - min`` equal to ``skew``, zero mean.

    Interior values are drawn in [0, 1]; the largest and smallest are pinned
    to the ends before scaling, then the order is shuffled.

    Parameters
    ----------
    experts : int >= 2
        Length ``E``.
    skew : float >= 0
        ``max(mu) - min(mu)``.

    Returns
    -------
    strategy of ndarray, shape (E,), float64

    Examples
    --------
    >>> from hypothesis import find
    >>> mu = find(popularity_vectors(5, 2.0), lambda mu: True)
    >>> round(float(mu.max() - mu.min()), 12), round(float(mu.mean()), 12)
    (2.0, 0.0)
    """
    inner = draw(st.lists(_floats(0.0, 1.0), min_size=experts - 2, max_size=experts - 2))
    order = draw(st.permutations(range(experts)))
    unit_E = np.asarray([1.0, 0.0, *inner])[np.asarray(order)]
    mu_E = skew * unit_E
    return mu_E - mu_E.mean()
