"""Config section ``[router]``: gate, selection and capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..exceptions import ConfigError
from ._checks import DATACLASS, check_types, positive, require

__all__ = ["RouterConfig"]


@dataclass(**DATACLASS)
class RouterConfig:
    """Gate, selection and capacity.

    Attributes
    ----------
    num_experts : int >= 2
        ``N``, routed experts.
    topk : int in [1, num_experts)
        ``K``, experts per token (token choice).
    score_function : {"softmax", "sigmoid", "sqrtsoftplus"}
        Gate applied to the logits.
    pre_softmax : bool
        Softmax only. False (Megatron's default): the weights are the softmax
        over the K chosen logits and sum to 1 per token; True (Megatron
        ``moe_router_pre_softmax``): the full-softmax probabilities of the
        chosen experts. Selection is the same either way.
    bias_mode : {"additive", "multiplicative"}
        Selection on ``s + b`` (bias starts at 0) or ``s * b`` (starts at 1).
    num_groups, group_topk : int or None
        Group-limited top-K (DeepSeek-V3): keep the ``group_topk`` best of
        ``num_groups`` groups, scored by the sum of their top
        ``topk // group_topk`` scores; the others are masked with -inf.
    topk_scaling_factor : float > 0 or None
        Multiplies the gate weights (DeepSeek-V3: 2.5).
    capacity_factor : float > 0 or None
        Capacity ``ceil((T * K / N) * C)`` per micro-batch, in Megatron's
        floating-point order; None or inf = dropless.
    token_drop_policy : {"probs", "position"}
        Which tokens an over-full expert keeps: the highest gate weights, or
        the first in Megatron's [sequence position, batch] order.
    router_type : {"token_choice", "expert_choice", "expert_threshold", "hash"}
        ``expert_choice``: each expert takes its top ``K * T / N`` tokens of a
        block of ``expert_choice_block`` tokens. ``hash``: each token carries
        a token id drawn from a Zipf law, and a fixed table sends each id to
        ``K`` experts (DeepSeek-V4's first layers; :mod:`routesim.routing.hash`);
        no logits, gate or bias act. ``expert_threshold``: each expert takes
        the tokens whose score is above its threshold, an EMA of its
        ``K * T / N``-th largest score over past micro-batches (causal; a
        token gets 0 to ``N`` experts; :mod:`routesim.routing.expert_threshold`).
    expert_choice_block : int > 0 or None
        Block size for Expert Choice (None = one micro-batch).
    expert_choice_shuffle : bool
        Expert Choice: shuffle the micro-batch's tokens (a random
        permutation independent of their content) before cutting it into
        blocks, so that each block mixes every sequence; needs a block
        smaller than the micro-batch.
    threshold_ema : float in [0, 1)
        Expert Threshold: EMA weight of the past threshold,
        ``tau = ema * tau + (1 - ema) * estimate`` after each micro-batch.
        The first micro-batch routes with the estimate of a calibration
        micro-batch drawn before the run.
    zero_experts : int >= 0
        ``Z``: the last ``Z`` of the ``num_experts`` experts are
        zero-computation (identity) experts (LongCat-Flash); a token that
        picks one computes fewer FFN experts. The ``zero_budget`` controller
        steers the mean number of FFN experts per token to
        ``controller.params.ffn_budget``.
    hash_vocab_size : int > 0
        ``V``, token ids of hash routing.
    hash_zipf_exponent : float >= 0
        Token frequencies of hash routing, ``f_v`` proportional to
        ``(v + 1) ** -a``: an id with ``f_v > K / N`` cannot be balanced.

    Examples
    --------
    >>> RouterConfig(num_experts=8, topk=2).dropless
    True
    >>> RouterConfig(num_experts=8, topk=2, capacity_factor=1.25).dropless
    False
    >>> RouterConfig(num_experts=8, topk=8)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: router.topk = 8: must be an integer in [1, router.num_experts) = [1, 8)
    """

    num_experts: int = 64
    topk: int = 8
    score_function: Literal["softmax", "sigmoid", "sqrtsoftplus"] = "sigmoid"
    pre_softmax: bool = False
    bias_mode: Literal["additive", "multiplicative"] = "additive"
    num_groups: int | None = None
    group_topk: int | None = None
    topk_scaling_factor: float | None = None
    capacity_factor: float | None = None
    token_drop_policy: Literal["probs", "position"] = "probs"
    router_type: Literal["token_choice", "expert_choice", "expert_threshold",
                         "hash"] = "token_choice"
    expert_choice_block: int | None = None
    expert_choice_shuffle: bool = False
    threshold_ema: float = 0.9
    zero_experts: int = 0
    hash_vocab_size: int = 32768
    hash_zipf_exponent: float = 1.0

    def __post_init__(self) -> None:
        check_types(self, "router")
        require(self.num_experts >= 2, "router.num_experts", self.num_experts,
                 "must be an integer >= 2")
        require(1 <= self.topk < self.num_experts, "router.topk", self.topk,
                 f"must be an integer in [1, router.num_experts) = [1, {self.num_experts})")
        if (self.num_groups is None) != (self.group_topk is None):
            raise ConfigError(
                f"router.num_groups = {self.num_groups!r}, router.group_topk = "
                f"{self.group_topk!r}: set both or neither")
        if self.num_groups is not None:
            g, gk = self.num_groups, self.group_topk
            require(g >= 1 and self.num_experts % g == 0, "router.num_groups", g,
                     f"must divide router.num_experts ({self.num_experts})")
            require(1 <= gk <= g, "router.group_topk", gk,
                     f"must be in [1, router.num_groups] = [1, {g}]")
            require(self.topk % gk == 0, "router.group_topk", gk,
                     f"must divide router.topk ({self.topk})")
            require(gk * (self.num_experts // g) >= self.topk, "router.group_topk", gk,
                     f"keeps {gk * (self.num_experts // g)} experts, fewer than "
                     f"router.topk ({self.topk})")
            require(self.topk // gk <= self.num_experts // g, "router.group_topk", gk,
                     "topk // group_topk must not exceed the experts per group")
        require(not self.pre_softmax or self.score_function == "softmax",
                 "router.pre_softmax", self.pre_softmax,
                 f"applies only to score_function = 'softmax' (not "
                 f"{self.score_function!r}); remove it")
        positive(self, "router", "topk_scaling_factor")
        if self.capacity_factor is not None:
            require(self.capacity_factor > 0, "router.capacity_factor", self.capacity_factor,
                     "must be > 0 (omit it, or use inf, for dropless routing)")
        require(0.0 <= self.threshold_ema < 1.0, "router.threshold_ema", self.threshold_ema,
                 "must be in [0, 1)")
        require(0 <= self.zero_experts < self.num_experts, "router.zero_experts",
                 self.zero_experts, f"must be an integer in [0, router.num_experts) = "
                 f"[0, {self.num_experts})")
        require(self.hash_vocab_size >= 1, "router.hash_vocab_size", self.hash_vocab_size,
                 "must be an integer >= 1")
        positive(self, "router", "hash_zipf_exponent", allow_zero=True)
        if self.expert_choice_block is not None:
            require(self.expert_choice_block >= 1, "router.expert_choice_block",
                     self.expert_choice_block, "must be an integer >= 1")

    @property
    def dropless(self) -> bool:
        """True when no token can be dropped."""
        return self.capacity_factor is None or math.isinf(self.capacity_factor)
