"""Token-choice routing of one block of tokens, from logits to counts.

:func:`route_block` is the router that the exact engine and the leakage
measurement both call. It reads in one direction:

1. scores ``s = gate(z)``;
2. selection scores ``s + b`` / ``s * b``, or ``z + b`` for the points whose
   bias sits on the logits (quantile balancing);
3. top-K, group-limited when the router has groups;
4. weights from the unbiased ``s`` (the bias only picks experts);
5. capacity dropping, when the capacity is below the block's tokens;
6. counts per (sequence, expert), routed and kept.

Shape legend: P points, R replicas, B sequences, L positions, T tokens
(``T = B * L``, sequence-major), E experts, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .._backend import one_hot
from ..config import RouterConfig
from ..gates import gate
from .capacity import drop_to_capacity
from .count import counts_per_sequence, displaced_share, mask_counts_per_sequence
from .select import gate_weights, quantile_dual_estimate, select_topk, selection_scores

__all__ = ["RoutedBlock", "route_block"]


@dataclass(frozen=True)
class RoutedBlock:
    """The routing of one block.

    Attributes
    ----------
    idx_PRTK : int array (P, R, T, K)
        Chosen experts of each token.
    routed_PRBE : int array (P, R, B, E)
        Tokens per (sequence, expert) before dropping.
    kept_PRBE : int array (P, R, B, E)
        The same after capacity dropping (``routed_PRBE`` when none).
    kept_PRTE : bool array (P, R, T, E) or None
        Kept assignments; None when nothing can be dropped (then
        :meth:`assignments` is the one-hot of ``idx_PRTK``).
    displaced_PR : array (P, R) or None
        Selections outside the unbiased top-K (a count), when asked for.
    estimate_PRE : array (P, R, E) or None
        Quantile dual estimate of the block, when asked for.

    Examples
    --------
    >>> import numpy as np
    >>> out = RoutedBlock(idx_PRTK=np.array([[[[1], [0]]]]), routed_PRBE=None,
    ...                   kept_PRBE=None)
    >>> out.assignments(np, 2)[0, 0].tolist()   # nothing dropped: one-hot of the choice
    [[False, True], [True, False]]
    """

    idx_PRTK: Any
    routed_PRBE: Any
    kept_PRBE: Any
    kept_PRTE: Any = None
    displaced_PR: Any = None
    estimate_PRE: Any = None

    def assignments(self, xp: ModuleType, num_experts: int) -> Any:
        """Kept assignment mask, bool array (P, R, T, E)."""
        if self.kept_PRTE is not None:
            return self.kept_PRTE
        return one_hot(xp, self.idx_PRTK, num_experts)


def route_block(xp: ModuleType, z_PRTE: Any, bias_PRE: Any, router: RouterConfig, *,
                num_sequences: int, seq_length: int, capacity: int | None = None,
                logit_bias_P: Any = None, displaced: bool = False,
                quantile_estimate: bool = False, target_share_PE: Any = None) -> RoutedBlock:
    """Route a block of tokens: gate, selection, top-K, weights, dropping, counts.

    Parameters
    ----------
    xp : namespace
    z_PRTE : array (P, R, T, E)
        Router logits, tokens sequence-major (``T = num_sequences * seq_length``).
    bias_PRE : array (P, R, E)
        Expert bias (selection only; cast to the logits' dtype).
    router : RouterConfig
        Gate, bias mode, top-K, groups, weights and drop policy.
    num_sequences, seq_length : int
        Block layout ``T = B * L`` (for counts and ``position`` dropping).
    capacity : int or None
        Tokens per expert; None, or ``>= T``, routes dropless.
    logit_bias_P : bool array (P,) or None
        Points whose bias is added to the logits (``z + b``, quantile
        balancing) instead of the scores; None for none.
    displaced : bool
        Also count the selections outside the unbiased top-K.
    quantile_estimate : bool
        Also return the block's quantile dual estimate
        (:func:`routesim.routing.select.quantile_dual_estimate`).
    target_share_PE : array (P, E) or None
        Target load shares of the quantile estimate (None: uniform).

    Returns
    -------
    RoutedBlock

    Examples
    --------
    Two tokens (one sequence), three experts, top-1: the bias on expert 2
    takes the second token, and a capacity of one drops the weaker of the
    two tokens that chose expert 0:

    >>> import numpy as np
    >>> from routesim.config import RouterConfig
    >>> r = RouterConfig(num_experts=3, topk=1)
    >>> z = np.array([[[[2.0, 0.0, 0.0], [1.0, 0.0, 0.5]]]])
    >>> out = route_block(np, z, np.zeros((1, 1, 3)), r, num_sequences=1, seq_length=2)
    >>> out.routed_PRBE.tolist()
    [[[[2, 0, 0]]]]
    >>> b = np.array([[[0.0, 0.0, 0.2]]])
    >>> route_block(np, z, b, r, num_sequences=1, seq_length=2).routed_PRBE.tolist()
    [[[[1, 0, 1]]]]
    >>> kept = route_block(np, z, np.zeros((1, 1, 3)), r, num_sequences=1, seq_length=2,
    ...                    capacity=1)
    >>> kept.kept_PRBE.tolist(), kept.assignments(np, 3)[0, 0].tolist()
    ([[[[1, 0, 0]]]], [[True, False, False], [False, False, False]])
    """
    k, n = router.topk, router.num_experts
    n_tok = z_PRTE.shape[2]
    s = gate(xp, router.score_function, z_PRTE)
    sel = selection_scores(xp, s, xp.astype(bias_PRE, s.dtype), router.bias_mode)
    if logit_bias_P is not None:
        on_logits = z_PRTE + xp.astype(bias_PRE, z_PRTE.dtype)[:, :, None, :]
        sel = xp.where(xp.reshape(xp.asarray(logit_bias_P), (-1, 1, 1, 1)), on_logits, sel)
    idx = select_topk(xp, sel, k, router.num_groups, router.group_topk)
    routed = counts_per_sequence(xp, idx, num_sequences, seq_length, n)
    kept, keep = routed, None
    if capacity is not None and capacity < n_tok:
        w = gate_weights(xp, s, idx, router.score_function, k, router.topk_scaling_factor,
                         router.pre_softmax)
        # weights spread over the expert axis (0 where not chosen)
        w_full = xp.sum(xp.where(idx[..., None] == xp.arange(n), w[..., None], 0.0), axis=-2)
        keep = drop_to_capacity(xp, one_hot(xp, idx, n), w_full, capacity,
                                router.token_drop_policy, num_sequences, seq_length)
        kept = mask_counts_per_sequence(xp, keep, num_sequences, seq_length)
    moved = None
    if displaced:
        plain = select_topk(xp, s, k, router.num_groups, router.group_topk)
        moved = displaced_share(xp, idx, plain) * (n_tok * k)
    estimate = None
    if quantile_estimate:
        estimate = quantile_dual_estimate(xp, z_PRTE, xp.astype(bias_PRE, z_PRTE.dtype), k,
                                          target_share_PE)
    return RoutedBlock(idx_PRTK=idx, routed_PRBE=routed, kept_PRBE=kept, kept_PRTE=keep,
                       displaced_PR=moved, estimate_PRE=estimate)
