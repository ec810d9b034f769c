"""The sparse kernel alone: nanoseconds per token by experts and sequence length.

``route_counts_sparse`` (no engine around it) on ``--streams`` streams of T = 65536
tokens each, K = 8, Zipf popularity (exponent 1), zero bias, normal noise, sigmoid
gate, on ``--threads`` threads (default one: the figure is then a thread's time per
token). Sequences of 256 tokens are drawn in blocks of 256, sequences of 4096 in
blocks of 2048, so the pair of lengths shows what a block costs beside its tokens.
``--rho`` gives the sequences a shared component (each sequence then has its own
probabilities of exceeding the levels). Best of ``--repeat`` calls after a warm-up
call.

Usage::

    python benchmarks/bench_sparse_kernel.py [--repeat 3] [--threads 1] [--streams 4] [--rho 0]
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rho", type=float, default=0.0,
                        help="within-sequence correlation (default 0: none)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.rho < 1.0:
        parser.error(f"--rho {args.rho}: must be in [0, 1)")
    for name in ("repeat", "threads", "streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    import numpy as np

    from routesim import rng
    from routesim.engines.kernels import sparse
    from routesim.traffic import popularity

    q, tokens = args.streams, 65536
    keys = rng.point_keys(0, list(range(q)), 1)
    hit = rng.stream_base(np, keys, 0, sparse.HIT_STREAM).ravel()
    fill = rng.stream_base(np, keys, 0, sparse.FILL_STREAM).ravel()
    print(f"sparse kernel alone, {q} streams x {tokens} tokens, K = 8, rho = {args.rho}, "
          f"{args.threads} thread(s), best of {args.repeat} "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'N':>5} {'tokens/sequence':>16} {'ns per token':>13}")
    for n in (64, 256):
        mu = np.broadcast_to(popularity("zipf", n, zipf_exponent=1.0), (q, n)).copy()
        scale, bias = np.ones(q), np.zeros((q, n))
        for length in (256, 4096):
            shared = np.random.default_rng(0).standard_normal((q, tokens // length, n))

            def call(seqs: int) -> None:
                sparse.route_counts_sparse(hit, fill, 0, seqs, length, mu, scale, bias, 8,
                                           "normal", "sigmoid", "additive",
                                           rho_Q=np.full(q, args.rho), a_QBE=shared[:, :seqs],
                                           threads=args.threads)
            call(2)
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                call(tokens // length)
                best = min(best, time.perf_counter() - t0)
            print(f"{n:5d} {length:16d} {best / (q * tokens) * 1e9:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
