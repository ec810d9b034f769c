"""CUDA kernel (CuPy) for token-choice routing of popularity traffic.

One thread per (stream, token): it draws the token's noise from the same
counter-based hash as :mod:`routesim.rng` (Box-Muller in float32, pairs
``(j, j + E/2)``), forms logits, scores and selection scores in the order the
array code uses, keeps the top-K in registers and counts into a per-block
shared histogram. Experts are visited in pair order (0, H, 1, H + 1, ...),
so the insertion compares ``(value, -index)``: among equal selection scores
the lower expert index wins, as in :func:`routesim.routing.select_topk`. Compiled once
per (E, K, gate, bias mode, displacement) with ``--fmad=false`` so that the
arithmetic rounds like the NumPy path; CUDA's ``logf``/``sincosf``/``expf``
differ from NumPy's by an ulp or two, so selections agree except at
near-ties.

CuPy is imported only when a router is built, so this module imports
anywhere.

Shape legend: Q = P * R streams, B sequences, E experts (padded to 2H), K top-k.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ... import rng
from ..._backend import cuda_kernel, to_numpy

__all__ = ["make_cuda_router", "CUDA_SOURCE"]

_BLOCK = 256

CUDA_SOURCE = r"""
#define H_ ((N_ + 1) / 2)
#define NEG_INF __int_as_float(0xff800000)
extern "C" __global__ void route_tokens(
    const unsigned long long* __restrict__ bases, const float* __restrict__ mu,
    const float* __restrict__ bias, const float* __restrict__ scale,
    const float* __restrict__ sr, const float* __restrict__ sq,
    const float* __restrict__ aseq, const int use_rho,
    const long long token_start, const int n_tok, const int L, const int nseq,
    const int smax, unsigned int* __restrict__ counts,
    unsigned long long* __restrict__ disp)
{
    extern __shared__ unsigned int hist[];
    const int q = blockIdx.y;
    const int first = blockIdx.x * blockDim.x;
    const long long seq_base = token_start / L;
    const int seq0 = (int)((token_start + first) / L - seq_base);
    for (int i = threadIdx.x; i < smax * N_; i += blockDim.x) hist[i] = 0u;
    __syncthreads();
    const int t = first + threadIdx.x;
    unsigned long long my_disp = 0ull;
    if (t < n_tok) {
        const long long row = token_start + t;
        const int seq = (int)(row / L - seq_base);
        const unsigned long long base = bases[q];
        const float* m = mu + (long long)q * 2 * H_;
        const float* b = bias + (long long)q * 2 * H_;
        const float* a = aseq + (use_rho ? ((long long)q * nseq + seq) * 2 * H_ : 0);
        const float sc = scale[q], r_a = sr[q], r_e = sq[q];
        const unsigned long long idx0 = (unsigned long long)row * (unsigned long long)(H_);
        float tv[K_], ts[K_], t0[K_];
        int ti[K_], t0i[K_];
#pragma unroll
        for (int i = 0; i < K_; ++i) {
            tv[i] = NEG_INF; ts[i] = 0.f; t0[i] = NEG_INF; ti[i] = 0; t0i[i] = 0;
        }
        float zmax = NEG_INF, tot = 0.f;
        for (int pass = (GATE_ == 1 ? 0 : 2); pass < 3; ++pass) {
            for (int j = 0; j < H_; ++j) {
                unsigned long long x = base + (idx0 + (unsigned long long)j) * 0x9E3779B97F4A7C15ull;
                x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ull;
                x ^= x >> 27; x *= 0x94D049BB133111EBull;
                x ^= x >> 31;
                const float u1 = ((float)(unsigned int)(x >> 40) + 0.5f) * (1.0f / 16777216.0f);
                const float u2 = ((float)(unsigned int)((x >> 8) & 0xFFFFFFull) + 0.5f)
                                 * (1.0f / 16777216.0f);
                const float rad = sqrtf(-2.0f * logf(u1));
                float sn, cs;
                sincosf(6.2831854820251465f * u2, &sn, &cs);
#pragma unroll
                for (int side = 0; side < 2; ++side) {
                    const int e = j + side * H_;
                    if (e >= N_) continue;
                    const float eps = side == 0 ? rad * cs : rad * sn;
                    const float z = m[e] + sc * (r_a * a[use_rho ? e : 0] + r_e * eps);
                    if (pass == 0) { zmax = fmaxf(zmax, z); continue; }
                    if (pass == 1) { tot += expf(z - zmax); continue; }
                    float s;
                    if (GATE_ == 0) s = 1.0f / (1.0f + expf(-z));
                    else if (GATE_ == 1) s = expf(z - zmax) / tot;
                    else s = sqrtf(fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z))));
                    float v = MULT_ ? s * b[e] : s + b[e];
                    // ties: the lower expert index ranks first (visit order is not index order)
                    if (v > tv[K_ - 1] || (v == tv[K_ - 1] && e < ti[K_ - 1])) {
                        int vi = e; float vs = s;
#pragma unroll
                        for (int i = 0; i < K_; ++i) {
                            if (v > tv[i] || (v == tv[i] && vi < ti[i])) {
                                float fv = tv[i]; tv[i] = v; v = fv;
                                int fi = ti[i]; ti[i] = vi; vi = fi;
                                float fs = ts[i]; ts[i] = vs; vs = fs;
                            }
                        }
                    }
                    if (DISP_ && (s > t0[K_ - 1] || (s == t0[K_ - 1] && e < t0i[K_ - 1]))) {
                        float w = s; int wi = e;
#pragma unroll
                        for (int i = 0; i < K_; ++i) {
                            if (w > t0[i] || (w == t0[i] && wi < t0i[i])) {
                                float f = t0[i]; t0[i] = w; w = f;
                                int fi = t0i[i]; t0i[i] = wi; wi = fi;
                            }
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < K_; ++i) {
            const int ls = seq - seq0;
            if (ls < smax) atomicAdd(&hist[ls * N_ + ti[i]], 1u);
            else atomicAdd(&counts[((long long)q * nseq + seq) * N_ + ti[i]], 1u);
            // displaced: outside the unbiased top-K under the same tie rule
            if (DISP_) my_disp += (ts[i] < t0[K_ - 1]
                                   || (ts[i] == t0[K_ - 1] && ti[i] > t0i[K_ - 1])) ? 1ull : 0ull;
        }
    }
    if (DISP_) {
        for (int off = 16; off > 0; off >>= 1)
            my_disp += __shfl_down_sync(0xffffffffu, my_disp, off);
        if ((threadIdx.x & 31) == 0 && my_disp) atomicAdd(&disp[q], my_disp);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < smax * N_; i += blockDim.x) {
        const int seq = seq0 + i / N_;
        if (hist[i] && seq < nseq)
            atomicAdd(&counts[((long long)q * nseq + seq) * N_ + i % N_], hist[i]);
    }
}
"""

_GATES = {"sigmoid": 0, "softmax": 1, "sqrtsoftplus": 2}


@functools.cache
def _compiled(n: int, k: int, gate: int, mult: bool, disp: bool) -> Any:
    defs = f"#define N_ {n}\n#define K_ {k}\n#define GATE_ {gate}\n#define MULT_ {int(mult)}\n" \
           f"#define DISP_ {int(disp)}\n"
    return cuda_kernel(defs + CUDA_SOURCE, "route_tokens", ("--std=c++14", "--fmad=false"))


def make_cuda_router(xp: Any, keys_PR: Any, seq_length: int, num_experts: int, topk: int,
                     gate: str, multiplicative: bool, want_displacement: bool,
                     scale_Q: np.ndarray, rho_Q: np.ndarray | None,
                     seq_noise: Callable[[int, int, int], Any]) -> Callable:
    """A router ``(tstate, bias_PRE, step, token_start, n_seqs) -> (counts, displaced)``.

    Parameters
    ----------
    xp : namespace
        CuPy.
    keys_PR : uint64 array (P, R)
    seq_length, num_experts, topk : int
    gate : {"sigmoid", "softmax", "sqrtsoftplus"}
    multiplicative : bool
    want_displacement : bool
    scale_Q : float32 array (Q,)
        Noise scale per stream.
    rho_Q : float32 array (Q,) or None
        Within-sequence correlation (None: none).
    seq_noise : callable (step, token_start, n_seqs) -> array (P, R, B, E)
        Per-sequence noise of a chunk (used when ``rho_Q`` is given).

    Returns
    -------
    callable

    Examples
    --------
    The kernel runs only on a GPU, so the example is not run here
    (``tests/test_gpu.py`` checks it against the NumPy engine, and its host
    glue with a host launch). The engine builds it through
    :func:`routesim.engines.kernels.make_router` on the CuPy backend:

    >>> import cupy as cp  # doctest: +SKIP
    >>> from routesim import Config, rng, traffic  # doctest: +SKIP
    >>> from routesim.engines.kernels import make_router  # doctest: +SKIP
    >>> cfg = Config().replace(**{"run.backend": "cupy", "router.num_experts": 4,
    ...                           "router.topk": 2, "batch.num_sequences": 2,
    ...                           "batch.seq_length": 8})  # doctest: +SKIP
    >>> keys = cp.asarray(rng.point_keys(0, [0], 1))  # doctest: +SKIP
    >>> tparams = traffic.make_traffic_params(cfg.points())  # doctest: +SKIP
    >>> route = make_router(cfg.points(), cp, keys, tparams)  # doctest: +SKIP
    >>> tstate = traffic.init_traffic(cp, tparams, keys)  # doctest: +SKIP
    >>> bias = cp.asarray([[[0, 0, 9, 9]]], dtype=cp.float32)  # doctest: +SKIP
    >>> counts, _ = route(tstate, bias, 0, 0, 2)  # doctest: +SKIP
    >>> counts.tolist()  # doctest: +SKIP
    [[[[0, 0, 8, 8], [0, 0, 8, 8]]]]
    """
    keys_host = to_numpy(keys_PR)
    p, r = keys_host.shape
    q_n, n, L = p * r, num_experts, seq_length
    h = (n + 1) // 2
    fn = _compiled(n, topk, _GATES[gate], bool(multiplicative), bool(want_displacement))
    scale = xp.asarray(scale_Q, dtype=xp.float32)
    if rho_Q is not None:
        rho = np.asarray(rho_Q, dtype=np.float32)
        sr, sq = xp.asarray(np.sqrt(rho)), xp.asarray(np.sqrt(np.float32(1.0) - rho))
    else:
        sr, sq = xp.zeros(q_n, dtype=xp.float32), xp.ones(q_n, dtype=xp.float32)
    dummy = xp.zeros(1, dtype=xp.float32)

    def padded(x: Any, fill: float) -> Any:
        out = xp.full(tuple(x.shape[:-1]) + (2 * h,), fill, dtype=xp.float32)
        out[..., :n] = x
        return out

    def route(tstate: Any, bias_PRE: Any, step: int, token_start: int, n_seqs: int):
        n_tok = n_seqs * L
        bases = xp.asarray(rng.stream_base(np, keys_host, step, rng.Stream.NOISE).reshape(-1))
        mu = padded(xp.reshape(tstate.mu_PRE.astype(xp.float32), (q_n, n)), 0.0)
        bias = padded(xp.reshape(bias_PRE.astype(xp.float32), (q_n, n)),
                      0.0 if multiplicative else -np.inf)
        use_rho = rho_Q is not None
        a = (padded(xp.reshape(seq_noise(step, token_start, n_seqs), (q_n, n_seqs, n)), 0.0)
             if use_rho else dummy)
        counts = xp.zeros((q_n, n_seqs, n), dtype=xp.uint32)
        disp = xp.zeros(q_n, dtype=xp.uint64)
        smax = min(n_seqs, _BLOCK // L + 2)
        if smax * n * 4 > 48 * 1024:
            smax = 0
        grid = ((n_tok + _BLOCK - 1) // _BLOCK, q_n)
        fn(grid, (_BLOCK,), (bases, mu, bias, scale, sr, sq, a, np.int32(use_rho),
                             np.int64(token_start), np.int32(n_tok), np.int32(L),
                             np.int32(n_seqs), np.int32(smax), counts, disp),
           shared_mem=smax * n * 4)
        routed = xp.reshape(counts.astype(xp.int64), (p, r, n_seqs, n))
        d = xp.reshape(disp.astype(xp.float64), (p, r)) if want_displacement else None
        return routed, d

    return route
