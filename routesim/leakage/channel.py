"""Constructive leakage channels: late scores chosen to carry a message, read
back from the early tokens' routing.

:mod:`routesim.leakage` measures what *random* late tokens write into the
early routing. Here an encoder sets the late tokens' logits on purpose and a
decoder sees only the early tokens' assignments (which experts took them):

``channel_expert_choice``
    Expert Choice, one digit per expert: the encoder gives ``c - k_i`` late
    tokens a logit far above every early one in expert ``i``'s column and the
    rest one far below, so expert ``i`` takes exactly its ``k_i`` best early
    tokens; the decoder counts them. Digits run over ``[max(0, c - n_late),
    min(n_early, c)]``, so a message is
    :func:`routesim.theory.leakage_split` bits per block, the most any
    encoder can send through one split (the early routing has no more
    outcomes).
``channel_codebook``
    Any router: a random codebook of late-score patterns, decoded by table
    lookup. Keeping one codeword per distinct early routing gives a
    zero-error code of ``log2(distinct)`` bits; a causal router gives one
    routing whatever the codeword, so 0 bits.

Shape legend: M messages, T tokens of a block, E experts, K top-k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config
from ..exceptions import ConfigError
from .measure import CHUNK_ELEMENTS, lagged_bias, outcome_labels, route_block
from .setup import CONTEXT_STREAM, LeakageSetup, block_logits, leakage_setup
from ..theory.leakage import leakage_split

__all__ = [
    "ChannelResult",
    "digit_range",
    "encode_expert_choice",
    "decode_expert_choice",
    "channel_expert_choice",
    "channel_codebook",
]


@dataclass(frozen=True)
class ChannelResult:
    """Bits an encoder of the late scores sent to a decoder of the early routing.

    Attributes
    ----------
    label : str
        Router description.
    block, position : int
        Block size and split position.
    messages : int
        Messages sent (codewords tried, for the codebook channel).
    bits : float
        Message size in bits per block.
    errors : int
        Messages decoded wrongly.
    recovered : float
        Bits per block surely received: Fano's lower bound on the mutual
        information, ``bits - H2(Pe) - Pe * bits``, for the error rate ``Pe``
        (``bits`` when no message failed).
    saturated : bool
        Codebook channel: every codeword gave a distinct routing, so a larger
        codebook could send more.

    Examples
    --------
    >>> res = ChannelResult(label="expert choice", block=8, position=4, messages=10,
    ...                     bits=4.0, errors=0, recovered=4.0)
    >>> res.per_token
    0.5
    """

    label: str
    block: int
    position: int
    messages: int
    bits: float
    errors: int
    recovered: float
    saturated: bool = False

    @property
    def per_token(self) -> float:
        """Recovered bits per token of the block."""
        return self.recovered / self.block


def _fano(bits: float, errors: int, messages: int) -> float:
    pe = errors / messages
    if pe == 0.0:
        return bits
    h2 = 0.0 if pe == 1.0 else -pe * math.log2(pe) - (1 - pe) * math.log2(1 - pe)
    return max(0.0, bits - h2 - pe * bits)


def _check_messages(messages: Any) -> None:
    if not (isinstance(messages, (int, np.integer)) and messages >= 1):
        raise ConfigError(f"messages = {messages!r}: must be an integer >= 1")


def digit_range(setup: LeakageSetup) -> tuple[int, int]:
    """Smallest and largest number of early tokens an expert can be made to take.

    Parameters
    ----------
    setup : LeakageSetup
        The block and router of the channel.

    Returns
    -------
    low, high : int

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2, router_type="expert_choice"))
    >>> digit_range(leakage_setup(cfg, 6))   # c = 4 of 8; 6 early, 2 late tokens
    (2, 4)
    """
    n_early = int(setup.early_index.size)
    n_late = setup.block - n_early
    return max(0, setup.capacity - n_late), min(n_early, setup.capacity)


def encode_expert_choice(setup: LeakageSetup, early_logits: Any, digits_ME: Any) -> Any:
    """Logits of whole blocks whose late tokens carry the digits.

    Parameters
    ----------
    setup : LeakageSetup
        An Expert Choice block with an elementwise gate.
    early_logits : array (n_early, E)
        The early tokens' logits (not chosen by the encoder).
    digits_ME : int array (M, E)
        Early tokens each expert must take, within :func:`digit_range`.

    Returns
    -------
    ndarray (M, T, E)
        Early logits as given; in expert ``i``'s column the first
        ``c - k_i`` late tokens (block order) at ``max|early| + 10``, the
        others at minus that.

    Examples
    --------
    Capacity 4 of 8 tokens, 6 early and 2 late: to make the experts take
    (2, 3, 4, 2) early tokens, their late columns hold 2, 1, 0 and 2 high
    logits.

    >>> import numpy as np
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2, router_type="expert_choice"))
    >>> setup = leakage_setup(cfg, 6)
    >>> z = encode_expert_choice(setup, np.zeros((6, 4)), np.array([[2, 3, 4, 2]]))
    >>> z.shape, z[0, 6:].tolist()
    ((1, 8, 4), [[10.0, 10.0, -10.0, 10.0], [10.0, -10.0, -10.0, 10.0]])
    """
    digits = np.asarray(digits_ME)
    early, late = setup.early_index, setup.late_index
    level = float(np.max(np.abs(early_logits))) + 10.0
    high = np.arange(late.size)[None, :, None] < (setup.capacity - digits)[:, None, :]
    z = np.empty((digits.shape[0], setup.block, digits.shape[1]))
    z[:, early] = early_logits
    z[:, late] = np.where(high, level, -level)
    return z


def decode_expert_choice(setup: LeakageSetup, mask_MTE: Any) -> Any:
    """Digits read from the routing: early tokens each expert took, int (M, E).

    Parameters
    ----------
    setup : LeakageSetup
        The block (which tokens are early).
    mask_MTE : bool array (M, T, E)
        Assignments of the blocks; only the early rows are read.

    Returns
    -------
    int array (M, E)

    Examples
    --------
    The digits survive a pass through the Expert Choice router:

    >>> import numpy as np
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> from routesim.leakage.measure import route_block
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2, router_type="expert_choice"))
    >>> setup = leakage_setup(cfg, 6)
    >>> early = np.random.default_rng(0).normal(size=(6, 4))
    >>> digits = np.array([[2, 3, 4, 2], [4, 4, 2, 3]])
    >>> mask = route_block(setup, encode_expert_choice(setup, early, digits), np.zeros(4))
    >>> decode_expert_choice(setup, mask).tolist()
    [[2, 3, 4, 2], [4, 4, 2, 3]]
    """
    return np.sum(np.asarray(mask_MTE)[:, setup.early_index], axis=1)


def channel_expert_choice(config: Config, position: int, messages: int, seed: int
                          ) -> ChannelResult:
    """Send random messages through Expert Choice, one digit per expert.

    Parameters
    ----------
    config : Config
        An Expert Choice config with an elementwise gate (``sigmoid`` or
        ``sqrtsoftplus``); see :func:`routesim.leakage.leakage_setup`.
    position : int
        Split position inside each segment of the block.
    messages : int > 0
        Messages sent, with uniform digits.
    seed : int >= 0
        Seeds the early scores (as context 0 of
        :func:`routesim.leakage.measure_leakage`) and the messages.

    Returns
    -------
    ChannelResult

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2, router_type="expert_choice"))
    >>> res = channel_expert_choice(cfg, 4, 50, 0)
    >>> round(res.recovered, 3), res.errors     # 4 * log2(5): digits 0..4
    (9.288, 0)
    """
    setup = leakage_setup(config, position)
    r = setup.config.router
    if setup.router != "expert_choice":
        raise ConfigError(f"router.router_type = {r.router_type!r}: this channel needs "
                          "'expert_choice' (channel_codebook works on any router)")
    if r.score_function == "softmax":
        raise ConfigError("router.score_function = 'softmax': the digit encoder needs an "
                          "elementwise gate ('sigmoid' or 'sqrtsoftplus')")
    _check_messages(messages)
    e = r.num_experts
    lo, hi = digit_range(setup)
    ctx = block_logits(setup, seed, 0, CONTEXT_STREAM, np.arange(setup.early_index.size))
    digits = np.random.default_rng([seed, 2]).integers(lo, hi + 1, size=(messages, e))
    chunk = max(1, CHUNK_ELEMENTS // (setup.block * e))
    errors = 0
    for m0 in range(0, messages, chunk):
        part = digits[m0:m0 + chunk]
        mask = route_block(setup, encode_expert_choice(setup, ctx, part), np.zeros(e))
        errors += int(np.sum(np.any(decode_expert_choice(setup, mask) != part, axis=1)))
    n_early = int(setup.early_index.size)
    bits = leakage_split(n_early, setup.block - n_early, e, r.topk)
    return ChannelResult(label=setup.label, block=setup.block, position=setup.position,
                         messages=messages, bits=bits, errors=errors,
                         recovered=_fano(bits, errors, messages))


def channel_codebook(config: Config, position: int, messages: int, seed: int, *,
                     timing: str = "lagged") -> ChannelResult:
    """Zero-error code from a random codebook of late-score patterns, on any router.

    Codeword ``m`` gives every late token ``K`` random distinct experts: a
    logit far above the early ones on the first, a quarter of that below
    zero on the other ``K - 1`` (chosen by token choice, with a small gate
    weight), far below zero on the rest.

    Parameters
    ----------
    config : Config
        See :func:`routesim.leakage.leakage_setup`.
    position : int
        Split position inside each segment of the block.
    messages : int > 0
        Codewords tried.
    seed : int >= 0
        Seeds the early scores (as context 0 of
        :func:`routesim.leakage.measure_leakage`), the lagged bias and the
        codebook.
    timing : {"lagged", "current"}
        As in :func:`routesim.leakage.measure_leakage`.

    Returns
    -------
    ChannelResult
        ``bits`` is log2 of the distinct early routings the codewords gave.

    Examples
    --------
    >>> from routesim.config import Config, BatchConfig, RouterConfig
    >>> cfg = Config(batch=BatchConfig(num_sequences=1, seq_length=8),
    ...              router=RouterConfig(num_experts=4, topk=2))
    >>> channel_codebook(cfg, 4, 100, 0).bits     # lagged bias: causal
    0.0
    """
    setup = leakage_setup(config, position, timing)
    _check_messages(messages)
    r = setup.config.router
    early, late = setup.early_index, setup.late_index
    e, k = r.num_experts, r.topk
    ctx = block_logits(setup, seed, 0, CONTEXT_STREAM, np.arange(early.size))
    bias = lagged_bias(setup, seed, 0)
    level = float(np.max(np.abs(ctx))) + 10.0
    gen = np.random.default_rng([seed, 3])
    chunk = max(1, CHUNK_ELEMENTS // (setup.block * e))
    packed = []
    for m0 in range(0, messages, chunk):
        m = min(chunk, messages - m0)
        choice = np.argsort(gen.random((m, late.size, e)), axis=-1)[..., :k]
        z_late = np.full((m, late.size, e), -level)
        np.put_along_axis(z_late, choice[..., 1:], -level / 4.0, axis=-1)
        np.put_along_axis(z_late, choice[..., :1], level, axis=-1)
        z = np.empty((m, setup.block, e))
        z[:, early] = ctx
        z[:, late] = z_late
        out = route_block(setup, z, bias)[:, early]
        packed.append(np.packbits(out.reshape(m, -1), axis=1))
    distinct = int(outcome_labels(packed).max()) + 1
    bits = math.log2(distinct)
    return ChannelResult(label=setup.label, block=setup.block, position=setup.position,
                         messages=messages, bits=bits, errors=0, recovered=bits,
                         saturated=distinct == messages)
