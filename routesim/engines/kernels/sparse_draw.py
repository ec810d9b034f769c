"""Candidates of the sparse kernel: the experts above the lowest level, block by block.

Part of :mod:`routesim.engines.kernels.sparse` (its docstring gives the method). For each
expert of a block of tokens, the tokens where its score exceeds the lowest level are drawn
as independent Bernoulli trials (token by token for a likely expert, else a Binomial count
and distinct positions), each with its survival value ``w`` and its level band, and stored
as packed keys ``(token, band, expert)``.

Shape legend: E experts, J levels, TB tokens per block.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_math import njit

__all__ = ["MAX_EXPERTS", "MAX_BLOCK", "block_tokens"]

_OPT = dict(error_model="numpy", cache=True)
_INL = dict(inline="always", error_model="numpy", cache=True)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S32, _S11 = (np.uint64(s) for s in (30, 27, 31, 32, 11))
_LO32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 4294967296.0
_INV53 = 1.0 / 9007199254740992.0
_TSHIFT, _JSHIFT = np.int64(19), np.int64(14)
_IMASK, _JMASK = np.int64(16383), np.int64(31)
#: Largest expert count of the packed candidate keys (token 13 bits, level 5, expert 14).
MAX_EXPERTS = 16384
MAX_BLOCK = 8192


@njit(**_INL)
def _mix(x):
    """SplitMix64 finaliser (as :func:`routesim.rng.hash_counter`)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


@njit(**_INL)
def _below(x, bound):
    """Lemire's unbiased integer in ``[0, bound)`` from the 32-bit ``x`` (-1: reject)."""
    mm = x * np.uint64(bound)
    lo = mm & _LO32
    if lo < np.uint64(bound):
        if lo < (np.uint64(4294967296) - np.uint64(bound)) % np.uint64(bound):
            return np.int64(-1)
    return np.int64(mm >> _S32)


@njit(**_INL)
def _mode_mass(nb, p):
    """The mode of Binomial(``nb``, ``p``) and its probability."""
    mode = min(nb, int(math.floor((nb + 1) * p)))
    if mode == 0:
        return mode, math.exp(nb * math.log1p(-p))
    return mode, math.exp(math.lgamma(nb + 1.0) - math.lgamma(mode + 1.0)
                          - math.lgamma(nb - mode + 1.0) + mode * math.log(p)
                          + (nb - mode) * math.log1p(-p))


@njit(**_OPT)
def _stream_tables(S, TB, scan, ST, mode_E, pm_E):
    """``ST = S.T`` (experts by levels) and :func:`_mode_mass` of every expert drawn by
    a Binomial count, for blocks of ``TB``.

    The levels are fixed for a stream (for a sequence when ``rho > 0``), so these are
    computed once for it, not once per sequence or block.
    """
    J = S.shape[0] - 1
    for i in range(S.shape[1]):
        for j in range(J + 1):
            ST[i, j] = S[j, i]
        p = S[J - 1, i]
        if 0.0 < p < scan:
            mode_E[i], pm_E[i] = _mode_mass(TB, min(p, 1.0 - p))


@njit(**_INL)
def _binomial(u, nb, p, mode, pm):
    """Binomial(``nb``, ``p``) from a uniform ``u`` by inversion from the mode outwards.

    ``mode`` and its probability ``pm`` from :func:`_mode_mass`. The outcomes are
    visited in the order mode, mode - 1, mode + 1, mode - 2, ... (inversion under any
    fixed order of the outcomes is exact), so about 1.6 standard deviations of steps.
    """
    q = 1.0 - p
    u -= pm
    if u <= 0.0:
        return mode
    lo_k, lo_p = mode, pm
    hi_k, hi_p = mode, pm
    r = p / q
    while True:
        if lo_k > 0:
            lo_p *= lo_k / (r * (nb - lo_k + 1))
            lo_k -= 1
            u -= lo_p
            if u <= 0.0:
                return lo_k
        if hi_k < nb:
            hi_p *= r * (nb - hi_k) / (hi_k + 1)
            hi_k += 1
            u -= hi_p
            if u <= 0.0:
                return hi_k
        if lo_k == 0 and hi_k == nb:
            return mode  # rounding left u above the total mass: a zero-width event


@njit(**_INL)
def _band(w, ST, J, i):
    """The first level ``j`` with ``w < ST[i, j]`` (rows non-decreasing; counted, branch-free)."""
    jb = 0
    for j in range(J - 1):
        jb += w >= ST[i, j]
    return jb


@njit(**_INL)
def _store(t, jb, i, w, J, cnt, hkey, hw, nh):
    hkey[nh] = (np.int64(t) << _TSHIFT) | (np.int64(jb) << _JSHIFT) | np.int64(i)
    hw[nh] = w
    cnt[t * J + jb] += 1


@njit(**_INL)
def _fresh_position(sub, c, nb, owner, i):
    """The next counter ``c`` whose hash ``x`` gives a position ``t`` not yet taken by
    expert ``i`` (repeats and Lemire's rejections skipped); ``t`` is marked taken."""
    while True:
        c += np.uint64(1)
        x = _mix(sub + c * _GOLD)
        t = _below(x >> _S32, nb)
        if t >= 0 and owner[t] != i:
            owner[t] = i
            return c, x, t


@njit(**_INL)
def _expert_hits(sub, i, p, nb, ST, J, owner, cnt, hkey, hw, nh, scan, mode, pm):
    """The tokens of a block of ``nb`` where expert ``i`` exceeds the lowest level.

    Independent Bernoulli(``p``) trials, each hit with its survival value ``w`` uniform
    on ``(0, p)``. For ``p >= scan`` every token is visited: a uniform ``u`` per token
    (53 bits), a hit when ``u < p``, with ``w = u`` (appended branch-free, the bands
    computed for the hits only). Below, a Binomial count, then that many distinct
    uniform positions (repeats rejected), each with its ``w``; ``mode`` and ``pm``
    are :func:`_mode_mass` of ``(nb, min(p, 1 - p))``. Returns the new number of
    candidates.
    """
    if p >= scan:
        nh0 = nh
        for t in range(nb):
            x = _mix(sub + np.uint64(t + 2) * _GOLD)
            w = (float(x >> _S11) + 0.5) * _INV53
            hkey[nh] = t
            hw[nh] = w
            nh += w < p
        for a in range(nh0, nh):
            _store(hkey[a], _band(hw[a], ST, J, i), i, hw[a], J, cnt, hkey, hw, a)
        return nh
    c = np.uint64(1)
    x = _mix(sub + c * _GOLD)
    u = (float(x >> _S11) + 0.5) * _INV53
    k = _binomial(u, nb, p, mode, pm) if p <= 0.5 else nb - _binomial(u, nb, 1.0 - p, mode, pm)
    if p <= 0.5:
        for _ in range(k):
            c, x, t = _fresh_position(sub, c, nb, owner, i)
            w = p * ((float(x & _LO32) + 0.5) * _INV32)
            _store(t, _band(w, ST, J, i), i, w, J, cnt, hkey, hw, nh)
            nh += 1
        return nh
    for _ in range(nb - k):  # mark the misses
        c, x, t = _fresh_position(sub, c, nb, owner, i)
    for t in range(nb):
        if owner[t] == i:
            continue
        c += np.uint64(1)
        x = _mix(sub + c * _GOLD)
        w = p * ((float(x >> _S11) + 0.5) * _INV53)
        _store(t, _band(w, ST, J, i), i, w, J, cnt, hkey, hw, nh)
        nh += 1
    return nh


@njit(**_OPT)
def _grow(x, extra):
    """``x`` in an array of twice its length plus ``extra`` (any dtype)."""
    y = np.empty(2 * x.shape[0] + extra, x.dtype)
    y[:x.shape[0]] = x
    return y


def block_tokens(seq_length: int, num_experts: int) -> int:
    """Tokens per block of a sequence: a power of two at least ``N``, in ``[2048, 8192]``.

    Candidates are drawn block by block (one Binomial count per block and expert, so
    large blocks for many experts; small blocks keep the candidates in cache).

    Parameters
    ----------
    seq_length : int
        Tokens per sequence.
    num_experts : int
        ``N``.

    Returns
    -------
    int

    Examples
    --------
    >>> block_tokens(4096, 256), block_tokens(4096, 4096), block_tokens(300, 64)
    (2048, 4096, 300)
    """
    tb = 2048
    while tb < num_experts and tb < MAX_BLOCK:
        tb *= 2
    return min(tb, seq_length)


@njit(**_OPT)
def _workspace(TB, n, J, k):
    cap = max(1024, TB * (2 * k + 16))
    return (np.empty(TB * J, np.int32), np.empty(TB, np.int64), np.empty(TB, np.int64),
            np.empty(TB + 1, np.int64), np.empty(cap, np.int64), np.empty(cap, np.float64),
            np.empty(cap, np.int64), np.empty(cap, np.float64), np.empty(cap, np.int64),
            np.empty(cap, np.float64), np.empty(n, np.float64), np.empty(n, np.int64),
            np.zeros(n, np.bool_), np.empty(TB, np.int64), np.empty(TB, np.int64))


@njit(**_OPT)
def _draw_block(hbase, bq, nb, TB, ST, owner, cnt, hkey, hw, scan, mode_E, pm_E):
    """Every expert's candidates in a block of ``nb`` tokens; -1 if ``hkey`` is too short.

    Kept apart from :func:`route_sequence`, whose work arrays may be reallocated:
    arrays that are reassigned inside a loop cost reference counting on every turn.
    """
    J = ST.shape[1] - 1
    nh = 0
    for i in range(ST.shape[0]):
        p = ST[i, J - 1]
        if p <= 0.0:
            continue
        if nh + nb > hkey.shape[0]:  # room for this expert taking every token
            return -1
        if nb == TB or p >= scan:
            b_mode, b_pm = mode_E[i], pm_E[i]
        else:  # a shorter last block
            b_mode, b_pm = _mode_mass(nb, min(p, 1.0 - p))
        nh = _expert_hits(_mix(hbase + (bq + np.uint64(i)) * _GOLD), i, p, nb, ST, J, owner,
                          cnt, hkey, hw, nh, scan, b_mode, b_pm)
    return nh
