"""The block of a leakage measurement: its split, its router and its logits.

A block of ``T`` tokens is ``B`` sequence segments of ``Ls`` positions (whole
sequences when the block spans several, ``B = 1`` and ``Ls = T`` when it is
part of one). A split at ``position`` ``t`` makes the tokens at positions
``< t`` of every segment *early* and the others *late*.

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
``expert_choice``      each expert takes its top ``K * T / N`` tokens (per
                       ``router.expert_choice_block``; with
                       ``router.expert_choice_shuffle`` the measured block
                       is the micro-batch, shuffled by a permutation fixed
                       per context, then cut into Expert Choice blocks)
``expert_threshold``   score above the expert's threshold: the
                       ``K * T / N``-th largest score of the previous block
                       (``lagged``: causal) or of this one (``current``)
=====================  ===================================================

A token's logits are ``mu + scale * noise`` drawn from the counter RNG at
``(seed, context, stream, row)`` (:func:`block_logits`), so the same seed
gives the same numbers however the draws are chunked. Shape legend: D draws,
T tokens of a block, E experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import controllers, rng, routing
from ..config import Config
from ..exceptions import ConfigError
from ..traffic import popularity

__all__ = [
    "LeakageSetup",
    "leakage_setup",
    "block_logits",
    "CONTEXT_STREAM",
    "DRAW_STREAM",
    "PREVIOUS_STREAM",
]

#: Counter-RNG streams: early scores, late redraws, previous block.
CONTEXT_STREAM, DRAW_STREAM, PREVIOUS_STREAM = (rng.Stream.EXTRA + i for i in range(3))


@dataclass(frozen=True)
class LeakageSetup:
    """One block, its split and its router, read from a config.

    Attributes
    ----------
    router : {"token_choice", "capacity", "quantile", "expert_choice", "expert_threshold"}
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
    ec_block : int
        Expert Choice block inside the measured block (the block itself
        unless shuffled).
    shuffle : bool
        Expert Choice on a shuffled micro-batch.

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
    ec_block: int = 0
    shuffle: bool = False

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
            return "expert choice, shuffled" if self.shuffle else "expert choice"
        if self.router == "expert_threshold":
            return f"expert threshold, {'same-batch' if self.timing == 'current' else 'lagged'}"
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
    if r.router_type == "hash":
        raise ConfigError("router.router_type = 'hash': a token's experts depend on its own id "
                          "alone (no leakage to measure)")
    shuffle = r.router_type == "expert_choice" and r.expert_choice_shuffle
    ec_block = r.expert_choice_block or tokens_mb
    if r.router_type == "expert_choice":
        kind, block = "expert_choice", tokens_mb if shuffle else ec_block
    elif r.router_type == "expert_threshold":
        kind, block = "expert_threshold", tokens_mb
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
        cap = ec_block * r.topk // r.num_experts
    elif kind == "expert_threshold":
        cap = block
    else:
        cap = routing.capacity(block, r.topk, r.num_experts, r.capacity_factor)
    mu = popularity(t.skew, r.num_experts, linear_spread=t.linear_spread,
                    zipf_exponent=t.zipf_exponent)
    return LeakageSetup(router=kind, timing=timing, block=block, segments=segments,
                        segment_length=seg_len, position=int(position), capacity=cap,
                        mu_E=mu, config=cfg, ec_block=ec_block if kind == "expert_choice" else 0,
                        shuffle=shuffle)


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
