"""Compiled CPU kernel (Numba) for token-choice routing of popularity traffic.

It computes the same numbers as the array code of :mod:`routesim.engines.exact`
(logits from :func:`routesim.rng.standard_normal`, gate, biased top-K,
counts per sequence) without materialising the (P, R, T, E) arrays, and it
evaluates the gate exactly only where the selection needs it.

**Thresholded selection.** With a monotone gate (sigmoid, sqrt-softplus),
expert ``i``'s selection score is an increasing function of its logit. For a
score level ``tau`` chosen per segment of tokens, each expert gets the logit
``z_thr_i`` below which it cannot score above ``tau`` (inverse gate, with
margins far above float32 rounding). Per token, the noise and logits of all
experts are computed (vectorised: hash, Box-Muller, ``mu + scale * eps``),
but only the experts with ``z > z_thr`` (about K + 6 of them) get the gate,
the bias and the ranking. If at least K of them score above ``tau``, every
other expert scores at most ``tau`` and their top-K is the top-K of all
experts; otherwise the token is scored in full. The selection is therefore
exactly that of the dense computation. Softmax couples the experts: it is
scored in full, with the same ``tau`` prefilter on the scores.

``tau`` comes from a pilot: the first tokens of a segment are scored in full
and ``tau`` is the mean of their (K + 6)-th largest score. It only affects
speed, never the result. The top-K among candidates is found by rank
counting on unique integer keys (no data-dependent branches).

Ties: among equal selection scores the lower expert index wins, as in
:func:`routesim.routing.select_topk` (integer keys order by ``(score,
-expert)``; the insertion sort is strict and visits experts in index order).
Displacement uses the same rule for the unbiased top-K.

The float32 functions of :mod:`routesim.engines.kernels.numba_math` (Cephes-style ``log``,
``exp``, ``sin``/``cos``) agree with NumPy's to about one unit in the last
place; where they round alike, selections equal the array path's, exact ties
included.

Shape legend: Q = P * R streams, B sequences, E experts (padded to 2 * H,
H expert pairs), K top-k, T tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .threads import default_threads, run_tasks
from .numba_math import (FASTMATH, ONE, ZERO, bm_pairs, expf, gate1, hash_pairs, njit,
                          order_key)

try:  # Numba is optional (the ``fast`` extra): without it this module imports, unusable.
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover - exercised only where Numba is absent
    trailing_zeros = None

__all__ = ["route_counts", "GATE_CODES", "PILOT_TOKENS", "MIN_FILTER_TOKENS"]

GATE_CODES = {"sigmoid": 0, "softmax": 1, "sqrtsoftplus": 2}
PILOT_TOKENS = 16
MIN_FILTER_TOKENS = 512
_EXTRA = 6          # tau = mean (K + _EXTRA)-th largest score of the pilot
_TB = 64            # tokens per block

F = np.float32
U = np.uint64
_INF32 = F(np.inf)
_BIG32 = F(3.0e38)
_KEY_MIN = np.int64(-(2**63))
_INL = dict(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
_OPT = dict(fastmath=FASTMATH, error_model="numpy", cache=True)


# ----------------------------------------------------------------------------
# Dense scoring of tokens
# ----------------------------------------------------------------------------
@njit(**_OPT)
def dense_scores(nt, h, n, z, gate, mult, bias, s_out, v_out):
    """Scores ``s`` and selection scores ``v`` of every expert for ``nt`` tokens.

    ``z`` holds the logits (nt, 2H); experts ``>= n`` (padding of odd E)
    get ``s = v = -inf``.
    """
    n2 = 2 * h
    for t in range(nt):
        if gate == 1:
            zmax = -_INF32
            for i in range(n):
                zmax = max(zmax, z[t, i])
            tot = ZERO
            for i in range(n):
                ex = expf(z[t, i] - zmax)
                s_out[t, i] = ex
                tot += ex
            for i in range(n):
                s_out[t, i] = s_out[t, i] / tot
        elif gate == 0:
            for i in range(n2):
                s_out[t, i] = ONE / (ONE + expf(-z[t, i]))
        else:
            for i in range(n2):
                s_out[t, i] = gate1(z[t, i], 2)
        if mult:
            for i in range(n2):
                v_out[t, i] = s_out[t, i] * bias[i]
        else:
            for i in range(n2):
                v_out[t, i] = s_out[t, i] + bias[i]
        for i in range(n, n2):
            v_out[t, i] = -_INF32
            s_out[t, i] = -_INF32


@njit(**_OPT)
def topk_insert(vals, ids, cnt, k, tv, ti):
    """The k largest of ``vals[:cnt]`` into ``tv``/``ti`` (descending); cnt >= k."""
    m = 0
    for a in range(cnt):
        x = vals[a]
        if m < k:
            p = m
            m += 1
        elif x > tv[k - 1]:
            p = k - 1
        else:
            continue
        while p > 0 and tv[p - 1] < x:
            tv[p] = tv[p - 1]
            ti[p] = ti[p - 1]
            p -= 1
        tv[p] = x
        ti[p] = ids[a]


@njit(**_OPT)
def ranks(key, cnt, width, r):
    """``r[a]`` = how many of ``key[:width]`` exceed ``key[a]``, for ``a < cnt``."""
    for a in range(cnt):
        ka = key[a]
        acc = 0
        for j in range(width):
            acc += key[j] > ka
        r[a] = acc


@njit(**_OPT)
def count_token(srow, vrow, n2, k, want_disp, counts_row, buf_v, buf_i, tv, ti, tv0, ti0):
    """Select the top-k of one fully scored token; returns displaced selections."""
    for i in range(n2):
        buf_v[i] = vrow[i]
        buf_i[i] = i
    topk_insert(buf_v, buf_i, n2, k, tv, ti)
    for a in range(k):
        counts_row[ti[a]] += 1
    if not want_disp:
        return 0
    for i in range(n2):
        buf_v[i] = srow[i]
    topk_insert(buf_v, buf_i, n2, k, tv0, ti0)
    d = 0
    for a in range(k):  # outside the unbiased top-K; equal scores: the lower index ranks first
        d += (srow[ti[a]] < tv0[k - 1]) | ((srow[ti[a]] == tv0[k - 1]) & (ti[a] > ti0[k - 1]))
    return d


# ----------------------------------------------------------------------------
# Thresholds, one segment of tokens, and the parallel driver
# ----------------------------------------------------------------------------
@njit(**_OPT)
def z_threshold(y, gate):
    """Logit at or below which a monotone gate stays <= ``y`` (conservative).

    -inf: any logit may pass; +inf: none can.
    """
    y = y - 1e-5 * (1.0 + abs(y))
    if y <= 0.0:
        return -np.inf
    if gate == 0:
        if y >= 1.0:
            return np.inf
        zt = math.log(y / (1.0 - y))
    else:
        zt = math.log(math.expm1(y * y)) if y * y < 30.0 else y * y
    return zt - 1e-6 * (1.0 + abs(zt))


@njit(**_OPT)
def expert_thresholds(tau, tau0, want_disp, n, bias, gate, mult, zt):
    """Per expert: logit level below which it cannot score above ``tau`` (nor ``tau0``)."""
    for e in range(zt.shape[0]):
        if e >= n:
            zt[e] = np.inf
            continue
        b = float(bias[e])
        if not mult:
            t = z_threshold(tau - b, gate)
        elif b > 0.0:
            t = z_threshold(tau / b, gate)
        else:
            t = np.inf if tau > 0.0 else -np.inf
        if want_disp:
            t = min(t, z_threshold(tau0, gate))
        zt[e] = F(t)


@njit(**_OPT)
def logits(nt, h, ea, eb, mu, scale, sr, sq, arow, z_out):
    """Logits of every expert for ``nt`` tokens from the pair noise."""
    for t in range(nt):
        for j in range(h):
            z_out[t, j] = mu[j] + scale * (sr * arow[j] + sq * ea[t * h + j])
            z_out[t, j + h] = mu[j + h] + scale * (sr * arow[j + h] + sq * eb[t * h + j])


@njit(**_OPT)
def gate_all(m, gate, mult, bias, ci, cz, cb, cs, cv):
    """Scores and selection scores of ``m`` candidates (monotone gates)."""
    for c in range(m):
        cb[c] = bias[ci[c]]
    if gate == 0:
        for c in range(m):
            cs[c] = ONE / (ONE + expf(-cz[c]))
    else:
        for c in range(m):
            cs[c] = gate1(cz[c], gate)
    if mult:
        for c in range(m):
            cv[c] = cs[c] * cb[c]
    else:
        for c in range(m):
            cv[c] = cs[c] + cb[c]


@njit(**_OPT)
def compact(nt, n2, key, thr, val, ci, tend):
    """Per token, the experts with ``key > thr`` (ids and keys, token after token)."""
    m = 0
    nw = (n2 + 63) // 64
    for tt in range(nt):
        for w in range(nw):
            lo = w * 64
            mask = U(0)
            for i in range(lo, min(n2, lo + 64)):
                mask |= U(key[tt, i] > thr[i]) << U(i - lo)
            while mask:
                i = lo + trailing_zeros(mask)
                mask &= mask - U(1)
                val[m] = key[tt, i]
                ci[m] = i
                m += 1
        tend[tt] = m
    return m


@njit(**_OPT)
def _pilot(nt, h, n, k, want_disp, s_blk, v_blk, rows_seq, counts2, buf_v, buf_i, tv, ti, sel):
    """Count fully scored tokens; returns (sum of (K+6)-th scores, same unbiased, displaced)."""
    n2 = 2 * h
    k2 = min(k + _EXTRA, n)
    tau = 0.0
    tau0 = 0.0
    disp = 0
    for t in range(nt):
        for i in range(n2):
            buf_v[i] = v_blk[t, i]
            buf_i[i] = i
        topk_insert(buf_v, buf_i, n2, k2, tv, ti)
        for a in range(k):
            counts2[rows_seq[t], ti[a]] += 1
            sel[a] = ti[a]
        tau += tv[k2 - 1]
        if want_disp:
            for i in range(n2):
                buf_v[i] = s_blk[t, i]
            topk_insert(buf_v, buf_i, n2, k2, tv, ti)
            for a in range(k):
                sa = s_blk[t, sel[a]]
                disp += (sa < tv[k - 1]) | ((sa == tv[k - 1]) & (sel[a] > ti[k - 1]))
            tau0 += tv[k2 - 1]
    return tau, tau0, disp


@njit(**_OPT)
def _select_block(nt, k, h, n, n2, tend, cv, cs, ci, tau32, tau032, want_disp, zmode, z_blk,
                  s_blk, v_blk, gate, mult, bias, rows_seq, counts2, key, key0, rk, rk0, buf_v,
                  buf_i, tv, ti, tv0, ti0):
    """Exact top-K of each token of a block among its candidates; returns displaced."""
    disp = 0
    c0 = 0
    for tt in range(nt):
        c1 = tend[tt]
        cnt = 0
        cnt0 = 0
        for c in range(c0, c1):  # keys order by (score, -expert): the lower index wins ties
            key[cnt] = order_key(cv[c], ci[c])
            buf_i[cnt] = c
            cnt += cv[c] > tau32
        if want_disp:
            for c in range(c0, c1):
                key0[cnt0] = order_key(cs[c], ci[c])
                cnt0 += cs[c] > tau032
        c0 = c1
        row = counts2[rows_seq[tt]]
        if cnt < k or cnt > 64 or (want_disp and (cnt0 < k or cnt0 > 64)):
            # too few (or many) above tau: score this token in full
            if zmode:
                dense_scores(1, h, n, z_blk[tt:tt + 1], gate, mult, bias, s_blk, v_blk)
                disp += count_token(s_blk[0], v_blk[0], n2, k, want_disp, row, buf_v,
                                    buf_i, tv, ti, tv0, ti0)
            else:
                disp += count_token(s_blk[tt], v_blk[tt], n2, k, want_disp, row, buf_v,
                                    buf_i, tv, ti, tv0, ti0)
            continue
        # exact top-K by rank (branch-free): keys are unique
        width = 16 if cnt <= 16 else (32 if cnt <= 32 else 64)
        for a in range(cnt, width):
            key[a] = _KEY_MIN
        ranks(key, cnt, width, rk)
        for a in range(cnt):
            row[ci[buf_i[a]]] += rk[a] < k
        if want_disp:
            width = 16 if cnt0 <= 16 else (32 if cnt0 <= 32 else 64)
            for a in range(cnt0, width):
                key0[a] = _KEY_MIN
            ranks(key0, cnt0, width, rk0)
            kth = _KEY_MIN
            for a in range(cnt0):
                kth = key0[a] if rk0[a] == k - 1 else kth
            for a in range(cnt):  # (score, expert) below the K-th unbiased one: displaced
                c = buf_i[a]
                disp += (rk[a] < k) & (order_key(cs[c], ci[c]) < kth)
    return disp


@njit(**_OPT)
def run_segment(base, r0, r1, L, seq_base, h, n, k, mu, scale, sr, sq, arow, bias, gate, mult,
                want_disp, filtered, counts2):
    """Route tokens ``r0 .. r1 - 1`` of one stream; returns displaced selections.

    ``filtered``: prefilter on logits (monotone gates), else on scores.
    """
    n2 = 2 * h
    tb = _TB
    u1i = np.empty(tb * h, np.int32)
    u2i = np.empty(tb * h, np.int32)
    ea = np.empty(tb * h, np.float32)
    eb = np.empty(tb * h, np.float32)
    z_blk = np.empty((tb, n2), np.float32)
    s_blk = np.empty((tb, n2), np.float32)
    v_blk = np.empty((tb, n2), np.float32)
    m_max = tb * n2
    cz = np.empty(m_max, np.float32)
    cb = np.empty(m_max, np.float32)
    cs = np.empty(m_max, np.float32)
    cv = np.empty(m_max, np.float32)
    ci = np.empty(m_max, np.int64)
    tend = np.empty(tb, np.int64)
    rows_seq = np.empty(tb, np.int64)
    buf_v = np.empty(n2, np.float32)
    buf_i = np.empty(n2, np.int64)
    tv = np.empty(n2, np.float32)
    ti = np.empty(n2, np.int64)
    tv0 = np.empty(n2, np.float32)
    ti0 = np.empty(n2, np.int64)
    sel = np.empty(k, np.int64)
    zt = np.empty(n2, np.float32)
    key = np.empty(max(64, n2), np.int64)
    key0 = np.empty(max(64, n2), np.int64)
    rk = np.empty(64, np.int64)
    rk0 = np.empty(64, np.int64)
    zeros = np.zeros(n2, np.float32)
    disp = 0
    t = r0
    tau32 = -_BIG32
    tau032 = -_BIG32
    use_pilot = (r1 - r0) >= 4 * PILOT_TOKENS
    while t < r1:
        nt = min(tb, r1 - t)
        if use_pilot and t == r0:
            nt = PILOT_TOKENS
        for tt in range(nt):
            rows_seq[tt] = (t + tt) // L - seq_base
        hash_pairs(base, U(t) * U(h), nt * h, u1i, u2i)
        bm_pairs(nt * h, u1i, u2i, ea, eb)
        logits(nt, h, ea, eb, mu, scale, sr, sq, arow, z_blk)
        if use_pilot and t == r0:
            dense_scores(nt, h, n, z_blk, gate, mult, bias, s_blk, v_blk)
            tau, tau0, disp = _pilot(nt, h, n, k, want_disp, s_blk, v_blk, rows_seq, counts2,
                                     buf_v, buf_i, tv, ti, sel)
            tau32 = F(tau / nt)
            tau032 = F(tau0 / nt)
            if filtered:
                expert_thresholds(tau / nt, tau0 / nt, want_disp, n, bias, gate, mult, zt)
            t += nt
            continue
        if filtered and use_pilot:
            m = compact(nt, n2, z_blk, zt, cz, ci, tend)
            gate_all(m, gate, mult, bias, ci, cz, cb, cs, cv)
        else:
            dense_scores(nt, h, n, z_blk, gate, mult, bias, s_blk, v_blk)
            for tt in range(nt):
                for i in range(n2):
                    kv = v_blk[tt, i] - tau32
                    z_blk[tt, i] = max(kv, s_blk[tt, i] - tau032) if want_disp else kv
            m = compact(nt, n2, z_blk, zeros, cz, ci, tend)
            c0 = 0
            for tt in range(nt):
                for c in range(c0, tend[tt]):
                    cv[c] = v_blk[tt, ci[c]]
                    cs[c] = s_blk[tt, ci[c]]
                c0 = tend[tt]
        zmode = filtered and use_pilot
        disp += _select_block(nt, k, h, n, n2, tend, cv, cs, ci, tau32, tau032, want_disp,
                              zmode, z_blk, s_blk, v_blk, gate, mult, bias,
                              rows_seq, counts2, key, key0, rk, rk0, buf_v, buf_i, tv, ti, tv0,
                              ti0)
        t += nt
    return disp


@njit(nogil=True, **_OPT)
def _route_tasks(first, stop, bases, task_q, task_a, task_b, task_sub, L, seq_base, h, n, k,
                 mu, scale, sr, sq, a_seq, use_rho, bias, gate, mult, want_disp, filtered,
                 counts, disp):
    """Run tasks ``first .. stop - 1`` (releases the GIL)."""
    for i in range(first, stop):
        q = task_q[i]
        counts2 = counts[q, :, task_sub[i], :]
        d = 0
        r = task_a[i]
        while r < task_b[i]:
            # with per-sequence noise, a segment ends at the sequence's end
            seg_end = min(task_b[i], (r // L + 1) * L) if use_rho else task_b[i]
            arow = a_seq[q, r // L - seq_base] if use_rho else a_seq[0, 0]
            filt = filtered and (seg_end - r) >= MIN_FILTER_TOKENS
            d += run_segment(bases[q], r, seg_end, L, seq_base, h, n, k, mu[q], scale[q],
                             sr[q], sq[q], arow, bias[q], gate, mult, want_disp, filt, counts2)
            r = seg_end
        disp[i] = d


def _plan(num_streams: int, token_start: int, n_tok: int, seq_length: int, threads: int,
          min_task: int) -> tuple[Any, ...]:
    """Tasks (stream, first row, end row, sub-chunk) covering every token once."""
    L = seq_length
    nseq = n_tok // L
    target = max(min_task, -(-num_streams * n_tok // (8 * threads)))
    q_, a_, b_, s_ = [], [], [], []
    if target >= L:
        per = max(1, target // L)
        for q in range(num_streams):
            for s0 in range(0, nseq, per):
                q_.append(q)
                a_.append(token_start + s0 * L)
                b_.append(token_start + min(nseq, s0 + per) * L)
                s_.append(0)
        nsub = 1
    else:
        nsub = -(-L // target)
        width = -(-L // nsub)
        for q in range(num_streams):
            for s in range(nseq):
                for j in range(nsub):
                    a = s * L + j * width
                    if a >= (s + 1) * L:
                        continue
                    q_.append(q)
                    a_.append(token_start + a)
                    b_.append(token_start + min((s + 1) * L, a + width))
                    s_.append(j)
    arr = [np.asarray(x, dtype=np.int64) for x in (q_, a_, b_, s_)]
    return (*arr, nsub)


def route_counts(bases_Q: np.ndarray, token_start: int, n_tok: int, seq_length: int,
                 mu_QE: np.ndarray, scale_Q: np.ndarray, bias_QE: np.ndarray, topk: int,
                 gate: str, multiplicative: bool, want_displacement: bool,
                 rho_Q: np.ndarray | None = None, a_QBE: np.ndarray | None = None,
                 filtered: bool = True, threads: int | None = None,
                 min_task: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Routed counts per (stream, sequence, expert) of a chunk of whole sequences.

    Parameters
    ----------
    bases_Q : uint64 array (Q,)
        ``rng.stream_base(keys, step, Stream.NOISE)`` of each stream.
    token_start, n_tok, seq_length : int
        The chunk ``[token_start, token_start + n_tok)`` (global token rows,
        whole sequences of ``seq_length``).
    mu_QE, bias_QE : float32 arrays (Q, E)
        Popularity logits and (selection) bias.
    scale_Q : float32 array (Q,)
        Noise scale.
    topk : int
    gate : {"sigmoid", "softmax", "sqrtsoftplus"}
    multiplicative : bool
        Selection on ``s * b`` instead of ``s + b``.
    want_displacement : bool
        Also count selections outside the unbiased top-K.
    rho_Q : float32 array (Q,), optional
        Within-sequence correlation ``rho`` (None or all zero: none).
    a_QBE : float32 array (Q, B, E), optional
        Per-sequence noise of the chunk's sequences (needed when ``rho > 0``).
    filtered : bool
        Use thresholded selection where it applies (never changes results).
    threads : int, optional
        Numba threads (default: all).
    min_task : int
        Fewest tokens per parallel task (pilot and thresholds are per task).

    Returns
    -------
    counts_QBE : int64 array (Q, B, E)
    displaced_Q : int64 array (Q,)

    Examples
    --------
    One stream, two sequences of 8 tokens, 4 experts, top-2 with the sigmoid
    gate: a bias of 9 on experts 2 and 3 outweighs any score in (0, 1); with
    no bias every sequence still routes 8 x 2 selections and none is displaced:

    >>> import numpy as np, pytest
    >>> _ = pytest.importorskip("numba")  # the ``fast`` extra
    >>> from routesim import rng
    >>> bases_Q = rng.stream_base(np, rng.point_keys(0, [0], 1), 0, rng.Stream.NOISE).ravel()
    >>> mu_QE, scale_Q = np.zeros((1, 4), np.float32), np.ones(1, np.float32)
    >>> counts, displaced = route_counts(bases_Q, 0, 16, 8, mu_QE, scale_Q,
    ...                                  np.float32([[0, 0, 9, 9]]), 2, "sigmoid", False, True)
    >>> counts.tolist()
    [[[0, 0, 8, 8], [0, 0, 8, 8]]]
    >>> counts, displaced = route_counts(bases_Q, 0, 16, 8, mu_QE, scale_Q,
    ...                                  np.zeros((1, 4), np.float32), 2, "sigmoid", False, True)
    >>> counts.sum(axis=-1).tolist(), displaced.tolist()
    ([[16, 16]], [0])
    """
    q_n, n = mu_QE.shape
    h = (n + 1) // 2
    L = seq_length
    nseq = n_tok // L
    threads = threads or default_threads()

    def padded(x: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(x.shape[:-1] + (2 * h,), fill, dtype=np.float32)
        out[..., :n] = x
        return out

    mu = padded(mu_QE, 0.0)
    bias = padded(bias_QE, 0.0 if multiplicative else -np.inf)
    scale = np.ascontiguousarray(scale_Q, dtype=np.float32)
    use_rho = rho_Q is not None and bool(np.any(rho_Q > 0))
    if use_rho:
        rho = np.asarray(rho_Q, dtype=np.float32)
        sr = np.sqrt(rho)
        sq = np.sqrt(np.float32(1.0) - rho)
        if a_QBE is None:
            raise ValueError("a_QBE (the per-sequence noise) is needed when rho > 0")
        a_seq = padded(a_QBE, 0.0)
    else:
        sr = np.zeros(q_n, np.float32)
        sq = np.ones(q_n, np.float32)
        a_seq = np.zeros((1, 1, 2 * h), np.float32)
    code = GATE_CODES[gate]
    filt = (filtered and code != 1 and bool(np.all(scale > 0)) and n >= 16
            and topk + _EXTRA < n)
    tq, ta, tb, ts, nsub = _plan(q_n, token_start, n_tok, L, threads, min_task)
    counts = np.zeros((q_n, nseq, nsub, n), dtype=np.int64)
    disp = np.zeros(tq.shape[0], dtype=np.int64)
    args = (np.ascontiguousarray(bases_Q, dtype=np.uint64), tq, ta, tb, ts, L, token_start // L,
            h, n, topk, mu, scale, sr, sq, a_seq, use_rho, bias, code, bool(multiplicative),
            bool(want_displacement), filt, counts, disp)
    run_tasks(threads, len(tq), _route_tasks, args)
    return counts.sum(axis=2), np.bincount(tq, weights=disp, minlength=q_n).astype(np.int64)
