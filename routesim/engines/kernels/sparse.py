"""Exact token-choice routing in O(K) per token: sample only the experts above a threshold.

For popularity traffic the logits of one sequence are independent across experts:
``z_i = m_i + sigma * eps_i`` with ``m_i = mu_i + scale * sqrt(rho) * a_i`` (the
sequence's shared component ``a`` is per expert, so conditioning on it leaves
independent noise ``sigma = scale * sqrt(1 - rho)``), ``eps`` normal, logistic or
Gumbel. The selection score ``v_i`` (``g(z) + b``, ``g(z) * b`` with ``b > 0``, or
``z + b`` for a bias on the logits) is increasing in ``z_i``, so ``v_i > h`` if and only
if ``z_i > c_i(h)``, which happens with probability ``P_i(h) = S((c_i - m_i) / sigma)``
(``S`` the noise's survival function), independently across experts and tokens.

**Levels.** Per stream and sequence (per stream when ``rho = 0``) thresholds
``h_1 > ... > h_J`` in selection-score space are chosen so that about ``lambda_1 < K``
experts lie above ``h_1`` and ``lambda_J > K`` above ``h_J`` (expected counts; the
choice affects speed only). For each expert, the tokens with ``z_i > c_i(h_J)`` are
drawn (independent Bernoulli(``P_i(h_J)``) trials: token by token for a likely expert,
else a Binomial count per block and distinct positions), each with a survival value
``w`` uniform on ``(0, P_i(h_J))``, i.e. ``z = m + sigma * S^-1(w)``
distributed as the noise conditioned on exceeding ``c_i``; its band is the ``j`` with
``P_i(h_{j-1}) <= w < P_i(h_j)``. Per token the bands are counted from the top: the
members of the bands above the band where the count first reaches ``K`` are selected;
in that band, all are selected if the count lands exactly on ``K``, otherwise the
members' scores are computed (``S^-1`` of their ``w``) and the best ones taken. A
token with fewer than ``K`` experts above ``h_J`` (rare) keeps them all and completes
with the best of the other experts, whose survival values are drawn conditioned on
``z_i <= c_i(h_J)``; if enough of them lie above a completion level ``h_F < h_J``
(about ``2 lambda_J`` expected above it), only those are scored and ranked (every
expert above ``h_F`` outranks every one below), else all are.

**Exactness.** Given which experts exceed ``h_J`` (independent Bernoulli), their
logits are independent and conditioned on exceeding, the others conditioned on not;
this is the joint law of the dense logits. Every expert above a level outranks every
expert below it, so the top-K read off the levels is the dense top-K: the selected
sets have exactly the dense model's law (not its random stream). Ties (probability
zero but for a zero noise scale) go to the lower expert index, as in the dense path.

Draws: one SplitMix64 hash per candidate (its top 32 bits give the position, its low
32 bits ``w``), or per token for an expert drawn token by token (53 bits: the trial's
uniform, which is ``w`` for a hit), counter ``(sequence, block, expert, candidate or
token)`` under its own stream of :mod:`routesim.rng`; a completion draws ``(token, expert)`` on a second stream. A
sequence's numbers depend on its global index only, so chunking sequences or splitting
points does not change them.

Shape legend: Q = P * R streams, B sequences, L tokens per sequence, E experts,
J levels.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .numba_math import njit

__all__ = ["route_counts_sparse", "LAW_CODES", "GATE_CODES", "MODE_CODES", "LEVELS",
           "HIT_STREAM", "FILL_STREAM", "SCAN_ABOVE", "level_targets", "survival", "inverse_survival"]

LAW_CODES = {"normal": 0, "logistic": 1, "gumbel": 2}
GATE_CODES = {"sigmoid": 0, "sqrtsoftplus": 2}
MODE_CODES = {"additive": 0, "multiplicative": 1, "logit": 2}
LEVELS = 16
#: Probability above the lowest level from which an expert's candidates are drawn token by
#: token (a Bernoulli trial each) rather than by a Binomial count and positions.
SCAN_ABOVE = 0.3
#: Stream ids of the candidates and of the completions (``rng.Stream.EXTRA`` upwards).
HIT_STREAM = 8 + 30
FILL_STREAM = 8 + 31

_OPT = dict(error_model="numpy", cache=True)
_INL = dict(inline="always", error_model="numpy", cache=True)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S32, _S11 = (np.uint64(s) for s in (30, 27, 31, 32, 11))
_LO32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 4294967296.0
_INV53 = 1.0 / 9007199254740992.0
_EULER = 0.5772156649015329
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_REACH = 40.0  # standardised noise beyond which the survival is negligible for bracketing


@njit(**_INL)
def _mix(x):
    """SplitMix64 finaliser (as :func:`routesim.rng.hash_counter`)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


# ----------------------------------------------------------------------------
# The noise laws: survival function and its inverse (float64)
# ----------------------------------------------------------------------------
@njit(**_INL)
def _ndtri(p, refine):
    """Standard normal quantile: Acklam's rational approximation (relative error below
    1.2e-9), refined by one Halley step if ``refine`` (to double precision)."""
    plow = 0.02425
    if p < plow:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                 - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
               + 4.374664141464968e+00) * q + 2.938163982698783e+00)
             / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                  + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    elif p <= 1.0 - plow:
        q = p - 0.5
        r = q * q
        x = ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                 - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
               - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
             / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                   - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                 - 1.328068155288572e+01) * r + 1.0))
    else:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                  - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
                + 4.374664141464968e+00) * q + 2.938163982698783e+00)
              / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                   + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    if refine and abs(x) < 37.0:
        e = 0.5 * math.erfc(-x / _SQRT2) - p
        u = e * _SQRT2PI * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


@njit(**_INL)
def survival(x, law):
    """``P(eps > x)`` of the standard noise law (0 normal, 1 logistic, 2 Gumbel, mean 0)."""
    if law == 0:
        return 0.5 * math.erfc(x / _SQRT2)
    if law == 1:
        if x > 0.0:
            e = math.exp(-x)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(x))
    return -math.expm1(-math.exp(-(x + _EULER)))


@njit(**_INL)
def inverse_survival(w, law):
    """The ``x`` with ``P(eps > x) = w``, for ``0 < w < 1``."""
    if law == 0:
        if w < 0.5:
            return -_ndtri(w, False)
        return _ndtri(1.0 - w, False)
    if law == 1:
        return math.log1p(-w) - math.log(w)
    return -math.log(-math.log1p(-w)) - _EULER


# ----------------------------------------------------------------------------
# Selection scores and thresholds
# ----------------------------------------------------------------------------
@njit(**_INL)
def _score(z, b, gate, mode):
    """Selection score of logit ``z`` with bias ``b`` (float64)."""
    if mode == 2:
        return z + b
    if gate == 0:
        g = 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))
    else:
        g = math.sqrt(math.log1p(math.exp(-abs(z))) + max(z, 0.0))
    return g + b if mode == 0 else g * b


@njit(**_INL)
def _z_above(h, b, gate, mode):
    """The logit above which the selection score exceeds ``h`` (+-inf: never, always)."""
    if mode == 2:
        return h - b
    if mode == 0:
        y = h - b
    elif b > 0.0:
        y = h / b
    else:
        return np.inf  # a score g * b <= 0 never exceeds h >= 0
    if y <= 0.0:
        return -np.inf
    if gate == 0:
        if y >= 1.0:
            return np.inf
        return math.log(y) - math.log1p(-y)
    y2 = y * y
    return y2 if y2 > 40.0 else math.log(math.expm1(y2))


@njit(**_INL)
def _above(h, m, sigma, law, gate, mode, bias, i):
    """Probability that expert ``i``'s selection score exceeds ``h``."""
    c = _z_above(h, bias[i], gate, mode)
    if c == np.inf:
        return 0.0
    if c == -np.inf:
        return 1.0
    return survival((c - m[i]) / sigma, law)


@njit(**_OPT)
def _expected_above(h, m, sigma, law, gate, mode, bias):
    tot = 0.0
    for i in range(m.shape[0]):
        tot += _above(h, m, sigma, law, gate, mode, bias, i)
    return tot


@njit(**_OPT)
def _solve_level(target, lo, hi, m, sigma, law, gate, mode, bias, iters):
    """A level ``h`` in ``[lo, hi]`` whose expected count above is about ``target``."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _expected_above(mid, m, sigma, law, gate, mode, bias) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(**_OPT)
def levels_into(m, sigma, law, gate, mode, bias, lam_top, lam_bottom, iters, S_out):
    """Per level and expert the probability of scoring above the level, into ``S_out``.

    Rows ``j = 0 .. J - 1`` are the levels from the highest down (non-decreasing down
    the rows); row ``J`` (the last) is the completion level, below the lowest, with
    about ``2 lambda_J`` expected above it (1 when that is every expert). All zero
    when every token must be completed densely (zero noise scale).
    """
    n = m.shape[0]
    J = S_out.shape[0] - 1
    if not sigma > 0.0 or not lam_bottom > 0.0 or lam_bottom >= n:
        S_out[:, :] = 0.0
        return
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        a = _score(m[i] - _REACH * sigma, bias[i], gate, mode)
        c = _score(m[i] + _REACH * sigma, bias[i], gate, mode)
        lo = min(lo, a, c)
        hi = max(hi, a, c)
    if mode == 1:
        lo = max(lo, 0.0)
    lo = lo - 1e-9 * (1.0 + abs(lo))
    hi = hi + 1e-9 * (1.0 + abs(hi))
    h_bot = _solve_level(lam_bottom, lo, hi, m, sigma, law, gate, mode, bias, iters)
    h_top = _solve_level(lam_top, h_bot, hi, m, sigma, law, gate, mode, bias, iters)
    for j in range(J):
        h = h_top + (h_bot - h_top) * (j / (J - 1)) if J > 1 else h_bot
        for i in range(n):
            p = _above(h, m, sigma, law, gate, mode, bias, i)
            S_out[j, i] = max(p, S_out[j - 1, i]) if j > 0 else p
    if 2.0 * lam_bottom >= n:
        S_out[J, :] = 1.0
        return
    h_fill = _solve_level(2.0 * lam_bottom, lo, h_bot, m, sigma, law, gate, mode, bias, iters)
    for i in range(n):
        S_out[J, i] = max(_above(h_fill, m, sigma, law, gate, mode, bias, i), S_out[J - 1, i])


# ----------------------------------------------------------------------------
# One sequence
# ----------------------------------------------------------------------------
@njit(**_OPT)
def _pick(vals, ids, cnt, need, counts_row):
    """Select the ``need`` best of ``vals[:cnt]`` (equal scores: lower expert first)."""
    for _ in range(need):
        best = -1
        for a in range(cnt):
            if ids[a] < 0:
                continue
            if best < 0 or vals[a] > vals[best] or (vals[a] == vals[best] and ids[a] < ids[best]):
                best = a
        counts_row[ids[best]] += 1
        ids[best] = -1


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


_TSHIFT, _JSHIFT = np.int64(19), np.int64(14)
_IMASK, _JMASK = np.int64(16383), np.int64(31)
#: Largest expert count of the packed candidate keys (token 13 bits, level 5, expert 14).
MAX_EXPERTS = 16384
MAX_BLOCK = 8192


@njit(**_INL)
def _store(t, jb, i, w, J, cnt, hkey, hw, nh):
    hkey[nh] = (np.int64(t) << _TSHIFT) | (np.int64(jb) << _JSHIFT) | np.int64(i)
    hw[nh] = w
    cnt[t * J + jb] += 1


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
        got = 0
        while got < k:
            c += np.uint64(1)
            x = _mix(sub + c * _GOLD)
            t = _below(x >> _S32, nb)
            if t < 0 or owner[t] == i:
                continue
            owner[t] = i
            w = p * ((float(x & _LO32) + 0.5) * _INV32)
            _store(t, _band(w, ST, J, i), i, w, J, cnt, hkey, hw, nh)
            nh += 1
            got += 1
        return nh
    got = 0
    while got < nb - k:  # mark the misses
        c += np.uint64(1)
        x = _mix(sub + c * _GOLD)
        t = _below(x >> _S32, nb)
        if t < 0 or owner[t] == i:
            continue
        owner[t] = i
        got += 1
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
    y = np.empty(2 * x.shape[0] + extra, x.dtype)
    y[:x.shape[0]] = x
    return y


@njit(**_OPT)
def _growf(x, extra):
    y = np.empty(2 * x.shape[0] + extra, x.dtype)
    y[:x.shape[0]] = x
    return y


def block_tokens(seq_length: int, num_experts: int) -> int:
    """Tokens per block of a sequence: a power of two at least ``N``, in ``[2048, 8192]``.

    Candidates are drawn block by block (one Binomial count per block and expert, so
    large blocks for many experts; small blocks keep the candidates in cache).

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


@njit(**_OPT)
def _select_block(fbase, seq, L, b0, nb, k, m, sigma, law, gate, mode, bias, ST, counts_row,
                  nh, ws):
    """Count the selections of a block's tokens from its ``nh`` candidates (in ``ws``)."""
    cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw, vbuf, ibuf, mark, owner, take = ws
    n = m.shape[0]
    J = ST.shape[1] - 1
    # per token: the band where the count reaches K (J: never), what it still needs,
    # how many bands are taken whole, and the band to rank (-1: none; J: completion)
    for t in range(nb):
        cum = 0
        js = 0
        before = 0
        for jb in range(J):
            cum += cnt[t * J + jb]
            below = cum < k
            js += below
            before = cum if below else before
        need[t] = k - before
        exact = js < J and cnt[t * J + min(js, J - 1)] == k - before
        take[t] = js + 1 if exact else js
        jstar[t] = -1 if exact else js
    # selected candidates counted; those to rank (or to exclude) kept, by token
    nr = 0
    for a in range(nh):
        key = hkey[a]
        t = key >> _TSHIFT
        jb = (key >> _JSHIFT) & _JMASK
        counts_row[key & _IMASK] += jb < take[t]
        js = jstar[t]
        rkey[nr] = key
        rw[nr] = hw[a]
        nr += (jb == js) | (js == J)
    start[:nb + 1] = 0
    for a in range(nr):
        start[(rkey[a] >> _TSHIFT) + 1] += 1
    for t in range(nb):
        start[t + 1] += start[t]
    for a in range(nr):  # counting sort by token
        t = rkey[a] >> _TSHIFT
        skey[start[t]] = rkey[a]
        sw[start[t]] = rw[a]
        start[t] += 1
    a0 = 0
    for t in range(nb):
        a1 = start[t]
        js = jstar[t]
        if 0 <= js < J:  # too many in the band: rank its members by their scores
            cnt_b = 0
            for a in range(a0, a1):
                i = skey[a] & _IMASK
                z = m[i] + sigma * inverse_survival(sw[a], law)
                vbuf[cnt_b] = _score(z, bias[i], gate, mode)
                ibuf[cnt_b] = i
                cnt_b += 1
            _pick(vbuf, ibuf, cnt_b, need[t], counts_row)
        elif js == J:  # fewer than K above the lowest level: complete from below it
            for a in range(a0, a1):
                mark[skey[a] & _IMASK] = True
            tok = np.uint64(seq) * np.uint64(L) + np.uint64(b0 + t)
            cnt_b = 0
            above = 0
            for i in range(n):
                if mark[i]:
                    mark[i] = False
                    continue
                x = _mix(fbase + (tok * np.uint64(n) + np.uint64(i)) * _GOLD)
                u = (float(x >> _S11) + 0.5) * _INV53
                p = ST[i, J - 1]
                w = p + (1.0 - p) * u
                vbuf[cnt_b] = w
                ibuf[cnt_b] = i
                cnt_b += 1
                above += w < ST[i, J]
            # enough above the completion level: only they can be selected
            keep = 0
            for a in range(cnt_b):
                i = ibuf[a]
                if above < need[t] or vbuf[a] < ST[i, J]:
                    w = vbuf[a]
                    z = m[i] + sigma * inverse_survival(w, law) if sigma > 0.0 else m[i]
                    vbuf[keep] = _score(z, bias[i], gate, mode)
                    ibuf[keep] = i
                    keep += 1
            _pick(vbuf, ibuf, keep, need[t], counts_row)
        a0 = a1


@njit(**_OPT)
def route_sequence(hbase, fbase, seq, L, TB, k, m, sigma, law, gate, mode, bias, ST, counts_row,
                   ws, scan, mode_E, pm_E):
    """Route the ``L`` tokens of global sequence ``seq`` of one stream; adds to ``counts_row``.

    ``ST`` (E, J + 1), ``mode_E``, ``pm_E`` from :func:`_stream_tables` of the levels
    of :func:`levels_into`; ``ws`` from :func:`_workspace`; ``TB`` tokens per block
    (:func:`block_tokens`). Returns the workspace (grown if it had to).
    """
    cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw, vbuf, ibuf, mark, owner, take = ws
    n = m.shape[0]
    J = ST.shape[1] - 1
    nblocks = (L + TB - 1) // TB
    for blk in range(nblocks):
        b0 = blk * TB
        nb = min(TB, L - b0)
        bq = (np.uint64(seq) * np.uint64(nblocks) + np.uint64(blk)) * np.uint64(n)
        while True:
            cnt[:nb * J] = 0
            owner[:nb] = -1
            nh = _draw_block(hbase, bq, nb, TB, ST, owner, cnt, hkey, hw, scan, mode_E, pm_E)
            if nh >= 0:
                break
            # out of room: grow and draw the block again (the same numbers)
            hkey, hw = _grow(hkey, nb), _growf(hw, nb)
            rkey, rw, skey, sw = (_grow(rkey, nb), _growf(rw, nb), _grow(skey, nb),
                                  _growf(sw, nb))
        _select_block(fbase, seq, L, b0, nb, k, m, sigma, law, gate, mode, bias, ST,
                      counts_row, nh, (cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw,
                                       vbuf, ibuf, mark, owner, take))
    return (cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw, vbuf, ibuf, mark, owner, take)


@njit(nogil=True, **_OPT)
def _run_tasks(first, stop, hbases, fbases, seq0, nseq, L, TB, k, mu, scale, sr, sq, a_seq,
               use_rho, law, gate, mode, bias, S_Q, lam_top, lam_bottom, iters, counts, scan):
    """Route tasks ``first .. stop - 1`` (task = stream * nseq + sequence); releases the GIL."""
    n = mu.shape[1]
    J = S_Q.shape[1]
    ws = _workspace(TB, n, J, k)
    m = np.empty(n, np.float64)
    S = np.empty((J, n), np.float64)
    ST = np.empty((n, J), np.float64)
    mode_E = np.zeros(n, np.int64)
    pm_E = np.zeros(n, np.float64)
    q_table = -1
    for task in range(first, stop):
        q = task // nseq
        s = task % nseq
        if use_rho:
            for i in range(n):
                m[i] = mu[q, i] + scale[q] * sr[q] * a_seq[q, s, i]
            sigma = scale[q] * sq[q]
            levels_into(m, sigma, law, gate, mode, bias[q], lam_top, lam_bottom, iters, S)
            _stream_tables(S, TB, scan, ST, mode_E, pm_E)
            ws = route_sequence(hbases[q], fbases[q], seq0 + s, L, TB, k, m, sigma, law, gate,
                                mode, bias[q], ST, counts[q, s], ws, scan, mode_E, pm_E)
        else:
            if q != q_table:  # the stream's levels, hence its Binomials, are fixed
                _stream_tables(S_Q[q], TB, scan, ST, mode_E, pm_E)
                q_table = q
            ws = route_sequence(hbases[q], fbases[q], seq0 + s, L, TB, k, mu[q], scale[q], law,
                                gate, mode, bias[q], ST, counts[q, s], ws, scan, mode_E, pm_E)


@njit(nogil=True, **_OPT)
def _stream_levels(first, stop, mu, scale, law, gate, mode, bias, lam_top, lam_bottom, iters,
                   S_Q):
    for q in range(first, stop):
        levels_into(mu[q], scale[q], law, gate, mode, bias[q], lam_top, lam_bottom, iters,
                    S_Q[q])


_POOL: list = []


def _parallel(threads: int, n_tasks: int, fn, args: tuple) -> None:
    """Run ``fn(first, stop, *args)`` over ``n_tasks`` tasks split into ``threads`` ranges."""
    threads = max(1, min(threads, n_tasks))
    if threads == 1:
        fn(0, n_tasks, *args)
        return
    from concurrent.futures import ThreadPoolExecutor

    if not _POOL or _POOL[0]._max_workers < threads - 1 or _POOL[1] != os.getpid():
        _POOL[:] = [ThreadPoolExecutor(max_workers=threads - 1,
                                       thread_name_prefix="routesim-sparse"), os.getpid()]
    # more ranges than threads, so that an uneven range does not leave a core idle
    edges = np.linspace(0, n_tasks, min(n_tasks, 4 * threads) + 1).astype(np.int64)
    ranges = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    futures = [_POOL[0].submit(fn, a, b, *args) for a, b in ranges[1:]]
    fn(ranges[0][0], ranges[0][1], *args)
    for f in futures:
        f.result()


def level_targets(num_experts: int, topk: int) -> tuple[float, float]:
    """Expected counts above the highest and the lowest level, ``(lambda_1, lambda_J)``.

    ``lambda_J`` minimises ``lambda + (20 + N / 10) P(Poisson(lambda) < K)``, the
    expected candidates plus the cost of completing a token (measured, in candidates: a
    uniform per expert, exact scores only for those above the completion level; a
    Poisson law bounds the Poisson-binomial count's lower tail);
    ``lambda_1 = max(0.5, K - 2.5 sqrt(K))``.
    Either choice affects speed only.

    Parameters
    ----------
    num_experts : int
        ``N``.
    topk : int
        ``K``.

    Returns
    -------
    lambda_1, lambda_J : float

    Examples
    --------
    >>> lam_top, lam_bottom = level_targets(256, 8)
    >>> round(lam_top, 2), 8 < lam_bottom < 30
    (0.93, True)
    """
    n, k = num_experts, topk
    best, best_cost = float(n), float("inf")
    for lam in np.arange(k + 0.5, min(n, 20 * k + 40), 0.25):
        # P(Poisson(lam) <= k - 1) by its terms
        term, tail = math.exp(-lam), 0.0
        for j in range(k):
            tail += term
            term *= lam / (j + 1)
        cost = lam + (20.0 + 0.1 * n) * tail
        if cost < best_cost:
            best, best_cost = float(lam), cost
    return max(0.5, k - 2.5 * math.sqrt(k)), best


def _threads_default() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def route_counts_sparse(hit_bases_Q: np.ndarray, fill_bases_Q: np.ndarray, seq_start: int,
                        n_seqs: int, seq_length: int, mu_QE: np.ndarray, scale_Q: np.ndarray,
                        bias_QE: np.ndarray, topk: int, law: str, gate: str, mode: str,
                        rho_Q: np.ndarray | None = None, a_QBE: np.ndarray | None = None,
                        threads: int | None = None, iters: int = 16,
                        levels: tuple[float, float] | None = None,
                        scan_above: float = SCAN_ABOVE) -> np.ndarray:
    """Routed counts per (stream, sequence, expert) of whole sequences, O(K) per token.

    Parameters
    ----------
    hit_bases_Q, fill_bases_Q : uint64 arrays (Q,)
        ``rng.stream_base(keys, step, HIT_STREAM)`` and ``(..., FILL_STREAM)``.
    seq_start, n_seqs, seq_length : int
        Global index of the first sequence, sequences, tokens per sequence.
    mu_QE, bias_QE : arrays (Q, E)
        Popularity logits and bias.
    scale_Q : array (Q,)
        Noise scale.
    topk : int
    law : {"normal", "logistic", "gumbel"}
    gate : {"sigmoid", "sqrtsoftplus"}
        Ignored with ``mode = "logit"``.
    mode : {"additive", "multiplicative", "logit"}
        Selection on ``g(z) + b``, ``g(z) * b`` or ``z + b`` (logit bias; softmax
        selects like its logits).
    rho_Q : array (Q,), optional
        Within-sequence correlation (None or all zero: none).
    a_QBE : array (Q, B, E), optional
        The sequences' shared noise (same law as the token noise; needed when
        ``rho > 0``).
    threads : int, optional
        Threads (default Numba's count).
    iters : int
        Bisection steps per level (speed only: a level within ``2^-iters`` of the
        score range of its target does as well; the solve costs ``O(iters N)`` per
        stream, or per sequence when ``rho > 0``).
    levels : (float, float), optional
        Expected counts above the highest and the lowest level (default
        :func:`level_targets`; speed only; ``(0, 0)``: complete every token densely).
    scan_above : float
        Experts above the lowest level with at least this probability are drawn token
        by token, the others by a Binomial count and positions (speed only; above 1:
        never token by token).

    Returns
    -------
    counts_QBE : int64 array (Q, B, E)

    Examples
    --------
    Two sequences of 64 tokens, 16 experts, top-2: every token takes two experts, and a
    bias of 9 on experts 3 and 5 (above any sigmoid score) takes all of them:

    >>> import numpy as np, pytest
    >>> _ = pytest.importorskip("numba")
    >>> from routesim import rng
    >>> keys = rng.point_keys(0, [0], 1)
    >>> hb = rng.stream_base(np, keys, 0, HIT_STREAM).ravel()
    >>> fb = rng.stream_base(np, keys, 0, FILL_STREAM).ravel()
    >>> mu, scale = np.zeros((1, 16)), np.ones(1)
    >>> counts = route_counts_sparse(hb, fb, 0, 2, 64, mu, scale, np.zeros((1, 16)), 2,
    ...                              "normal", "sigmoid", "additive")
    >>> counts.shape, counts.sum(axis=-1).tolist()
    ((1, 2, 16), [[128, 128]])
    >>> bias = np.zeros((1, 16)); bias[0, [3, 5]] = 9.0
    >>> counts = route_counts_sparse(hb, fb, 0, 2, 64, mu, scale, bias, 2, "normal",
    ...                              "sigmoid", "additive")
    >>> counts[0, :, [3, 5]].tolist()
    [[64, 64], [64, 64]]
    """
    q_n, n = mu_QE.shape
    L, k = int(seq_length), int(topk)
    threads = threads or _threads_default()
    mu = np.ascontiguousarray(mu_QE, dtype=np.float64)
    bias = np.ascontiguousarray(bias_QE, dtype=np.float64)
    scale = np.ascontiguousarray(scale_Q, dtype=np.float64)
    use_rho = rho_Q is not None and bool(np.any(np.asarray(rho_Q) > 0))
    if use_rho:
        rho = np.asarray(rho_Q, dtype=np.float64)
        sr, sq = np.sqrt(rho), np.sqrt(1.0 - rho)
        a_seq = np.ascontiguousarray(a_QBE, dtype=np.float64)
    else:
        sr, sq = np.zeros(q_n), np.ones(q_n)
        a_seq = np.zeros((1, 1, n))
    lam_top, lam_bottom = levels if levels is not None else level_targets(n, k)
    if levels is None and lam_bottom >= 0.5 * n:  # few experts: no levels, every token completed densely
        lam_top = lam_bottom = 0.0
    J = LEVELS
    S_Q = np.zeros((q_n, J + 1, n), np.float64)
    codes = (LAW_CODES[law], GATE_CODES.get(gate, 0), MODE_CODES[mode])
    if not use_rho:
        _parallel(threads, q_n, _stream_levels,
                  (mu, scale, *codes, bias, lam_top, lam_bottom, iters, S_Q))
    counts = np.zeros((q_n, n_seqs, n), np.int64)
    args = (np.ascontiguousarray(hit_bases_Q, dtype=np.uint64),
            np.ascontiguousarray(fill_bases_Q, dtype=np.uint64), int(seq_start), int(n_seqs),
            L, block_tokens(L, n), k, mu, scale, sr, sq, a_seq, use_rho, *codes, bias, S_Q,
            lam_top, lam_bottom,
            iters, counts, float(scan_above))
    _parallel(threads, q_n * n_seqs, _run_tasks, args)
    return counts
