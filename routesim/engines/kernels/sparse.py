"""Exact token-choice routing in O(K) per token: sample only the experts above a threshold.

For popularity traffic the logits of one sequence are independent across experts:
``z_i = m_i + sigma * eps_i`` with ``m_i = mu_i + scale * sqrt(rho) * a_i`` (the
sequence's shared component ``a`` is per expert, so conditioning on it leaves
independent noise ``sigma = scale * sqrt(1 - rho)``), ``eps`` normal, logistic or
Gumbel. The selection score ``v_i`` (``g(z) + b``, ``g(z) * b`` with ``b > 0``, or
``z + b`` for a bias on the logits) is increasing in ``z_i``, so ``v_i > h`` if and only
if ``z_i > c_i(h)``, which happens with probability ``P_i(h) = S((c_i - m_i) / sigma)``
(``S`` the noise's survival function), independently across experts and tokens.

**Levels.** Per stream, thresholds ``h_1 > ... > h_J`` in selection-score space are
chosen so that about ``lambda_1 < K`` experts lie above ``h_1`` and ``lambda_J > K``
above ``h_J`` (expected counts under the stream's law, ``m = mu``, ``sigma = scale``;
the choice affects speed only, so with ``rho > 0`` the sequences share their stream's
levels and only their probabilities ``P_i(h)`` of exceeding them are per sequence). For each expert, the tokens with ``z_i > c_i(h_J)`` are
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

The kernel is three modules: :mod:`.sparse_levels` (the noise laws, selection scores and
levels), :mod:`.sparse_draw` (a block's candidates) and this one (the selections, tasks
and threads).

Shape legend: Q = P * R streams, B sequences, L tokens per sequence, E experts,
J levels.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_math import njit
from .threads import default_threads, run_tasks
from .sparse_draw import (_GOLD, _IMASK, _INV53, _JMASK, _JSHIFT, _S11, _TSHIFT, _draw_block,
                          _grow, _mix, _stream_tables, _workspace, block_tokens)
from .sparse_levels import (GATE_CODES, LAW_CODES, MODE_CODES, _score, inverse_survival,
                            level_heights, rows_from_thresholds, survival,
                            thresholds_into)

__all__ = ["route_counts_sparse", "LAW_CODES", "GATE_CODES", "MODE_CODES", "LEVELS",
           "MIN_LEVELS", "level_count",
           "HIT_STREAM", "FILL_STREAM", "SCAN_ABOVE", "level_targets", "survival",
           "inverse_survival"]

LEVELS = 16
#: Fewest levels, for short sequences with ``rho > 0`` (whose rows cost ``N`` survival
#: functions per level and sequence).
MIN_LEVELS = 6
#: Probability above the lowest level from which an expert's candidates are drawn token by
#: token (a Bernoulli trial each) rather than by a Binomial count and positions.
SCAN_ABOVE = 0.3
#: Stream ids of the candidates and of the completions (``rng.Stream.EXTRA`` upwards).
HIT_STREAM = 8 + 30
FILL_STREAM = 8 + 31

_OPT = dict(error_model="numpy", cache=True)


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
    of :func:`.sparse_levels.rows_from_thresholds`; ``ws`` from :func:`_workspace`; ``TB`` tokens per block
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
            hkey, hw = _grow(hkey, nb), _grow(hw, nb)
            rkey, rw, skey, sw = _grow(rkey, nb), _grow(rw, nb), _grow(skey, nb), _grow(sw, nb)
        _select_block(fbase, seq, L, b0, nb, k, m, sigma, law, gate, mode, bias, ST,
                      counts_row, nh, (cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw,
                                       vbuf, ibuf, mark, owner, take))
    return (cnt, jstar, need, start, hkey, hw, rkey, rw, skey, sw, vbuf, ibuf, mark, owner, take)


@njit(nogil=True, **_OPT)
def _run_tasks(first, stop, hbases, fbases, seq0, nseq, L, TB, k, mu, scale, sr, sq, a_seq,
               use_rho, law, gate, mode, bias, S_Q, C_Q, counts, scan):
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
            # the stream's levels, the sequence's probabilities of exceeding them
            for i in range(n):
                m[i] = mu[q, i] + scale[q] * sr[q] * a_seq[q, s, i]
            sigma = scale[q] * sq[q]
            rows_from_thresholds(C_Q[q], m, sigma, law, S)
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
                   use_rho, S_Q, C_Q):
    """Each stream's levels: the logits above which each expert exceeds them (``C_Q``)
    and, without a shared component, its rows (``S_Q``; with ``rho > 0`` each sequence
    computes its own from ``C_Q``)."""
    H = np.empty(S_Q.shape[1], np.float64)
    for q in range(first, stop):
        level_heights(mu[q], scale[q], law, gate, mode, bias[q], lam_top, lam_bottom, iters, H)
        thresholds_into(H, bias[q], gate, mode, C_Q[q])
        if not use_rho:
            rows_from_thresholds(C_Q[q], mu[q], scale[q], law, S_Q[q])


def level_count(seq_length: int, per_sequence: bool) -> int:
    """Levels of a stream: :data:`LEVELS`, fewer for short sequences with ``rho > 0``.

    With a per-sequence shared component every sequence computes its probabilities of
    exceeding the levels (``N`` survival functions per level), which costs more than
    the finer bands save on short sequences: ``L // 128`` levels, from
    :data:`MIN_LEVELS` to :data:`LEVELS` (measured at N = 256, K = 8; speed only).

    Parameters
    ----------
    seq_length : int
        Tokens per sequence.
    per_sequence : bool
        Whether the sequences have rows of their own (``rho > 0``).

    Returns
    -------
    int

    Examples
    --------
    >>> level_count(256, False), level_count(256, True), level_count(1024, True)
    (16, 6, 8)
    """
    if not per_sequence:
        return LEVELS
    return min(LEVELS, max(MIN_LEVELS, seq_length // 128))


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
        stream).
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
    threads = threads or default_threads()
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
    J = level_count(L, use_rho)
    S_Q = np.zeros((q_n, J + 1, n), np.float64)
    C_Q = np.zeros((q_n, J + 1, n), np.float64)
    codes = (LAW_CODES[law], GATE_CODES.get(gate, 0), MODE_CODES[mode])
    # levels per stream from its own law (with rho > 0 the sequences' common law: speed
    # only, as the levels are); each sequence's rows at them when rho > 0
    run_tasks(threads, q_n, _stream_levels,
              (mu, scale, *codes, bias, lam_top, lam_bottom, iters, use_rho, S_Q, C_Q))
    counts = np.zeros((q_n, n_seqs, n), np.int64)
    args = (np.ascontiguousarray(hit_bases_Q, dtype=np.uint64),
            np.ascontiguousarray(fill_bases_Q, dtype=np.uint64), int(seq_start), int(n_seqs),
            L, block_tokens(L, n), k, mu, scale, sr, sq, a_seq, use_rho, *codes, bias, S_Q,
            C_Q, counts, float(scan_above))
    run_tasks(threads, q_n * n_seqs, _run_tasks, args)
    return counts
