"""The expected-load quadrature: the NumPy pass against the compiled (Numba) pass.

For N = 16, 64, 256 (K = 2, 8, 8; Zipf popularity, exponent 1, at a small
random bias), the time of one point's

* ``load_map`` (the map alone, 32 and 96 nodes), and
* ``load_map_and_jacobians(with_mu=True, with_covariance=True)`` (the
  mean-field surrogate's exact evaluation, 48 and 64 nodes),

through each pass (``routesim.theory._quadrature.COMPILED_FROM = None``
forces NumPy), the largest relative difference between the two results and
the ratio. Best of ``--repeat`` calls after one warm-up call (the first call
of the compiled pass loads or compiles it).

``--accuracy`` prints instead how far 32, 48 and 64 nodes are from 192 (the
largest error of p, J_bias, J_mu and the covariance, each relative to its
largest entry) for the surrogate's cases: N = 256 with a linear skew of 0.5 and
with Zipf 1, N = 64 with Zipf 1.5 (K = 8), and N = 4, K = 2.

Usage::

    python benchmarks/bench_load_map.py [--repeat 3] [--threads 1] [--accuracy]
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="Numba threads of the compiled pass (default: all cores)")
    parser.add_argument("--accuracy", action="store_true",
                        help="error against 192 nodes instead of timings")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    import numpy as np

    from routesim.theory import _quadrature
    from routesim.theory.expected_load import load_map, load_map_and_jacobians
    from routesim.traffic import popularity

    if args.accuracy:
        return accuracy()

    def best(fn):
        fn()
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    rows = []
    rng = np.random.default_rng(0)
    for n, k in ((16, 2), (64, 8), (256, 8)):
        mu = popularity("zipf", n, zipf_exponent=1.0)
        bias = 0.02 * rng.standard_normal(n)
        jobs = {
            "load_map (32 nodes)": lambda: (load_map(mu, bias, topk=k, nodes=32),),
            "load_map (96 nodes)": lambda: (load_map(mu, bias, topk=k, nodes=96),),
            "map+jacobians+cov (48)": lambda: load_map_and_jacobians(
                mu, bias, topk=k, with_mu=True, with_covariance=True, nodes=48),
            "map+jacobians+cov (64)": lambda: load_map_and_jacobians(
                mu, bias, topk=k, with_mu=True, with_covariance=True, nodes=64),
        }
        for name, fn in jobs.items():
            _quadrature.COMPILED_FROM = None
            t_np, out_np = best(fn)
            _quadrature.COMPILED_FROM = 0
            t_c, out_c = best(fn)
            diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
                       for a, b in zip(out_np, out_c) if a is not None)
            rows.append((n, k, name, t_np, t_c, diff))
    load = os.getloadavg()[0]
    print(f"expected-load quadrature, one point, best of {args.repeat} (load average {load:.2f})")
    print(f"{'N':>4} {'K':>2} {'what':24} {'NumPy s':>9} {'compiled s':>11} {'max rel diff':>12} "
          f"{'ratio':>6}")
    for n, k, name, t_np, t_c, diff in rows:
        print(f"{n:4d} {k:2d} {name:24} {t_np:9.4f} {t_c:11.4f} {diff:12.1e} {t_np / t_c:6.1f}")
    return 0


def accuracy() -> int:
    """Errors of 32, 48 and 64 nodes against 192 (map, both Jacobians, covariance)."""
    import numpy as np

    from routesim.theory.expected_load import load_map_and_jacobians
    from routesim.traffic import popularity

    rng = np.random.default_rng(0)
    cases = [("linear skew 0.5", np.linspace(0.25, -0.25, 256), 8),
             ("Zipf 1", popularity("zipf", 256, zipf_exponent=1.0), 8),
             ("Zipf 1.5", popularity("zipf", 64, zipf_exponent=1.5), 8),
             ("linear skew 1", np.linspace(0.5, -0.5, 4), 2)]
    print("largest error against 192 nodes, relative to the largest entry: "
          "p, J_bias, J_mu, cov")
    for name, mu, k in cases:
        bias = 0.02 * rng.standard_normal(mu.size)
        ref = load_map_and_jacobians(mu, bias, topk=k, nodes=192, with_covariance=True)
        line = []
        for nodes in (32, 48, 64):
            out = load_map_and_jacobians(mu, bias, topk=k, nodes=nodes, with_covariance=True)
            errs = [float(np.max(np.abs(o - r)) / np.max(np.abs(r))) for o, r in zip(out, ref)]
            line.append(f"{nodes}: " + " ".join(f"{e:.1e}" for e in errs))
        print(f"N={mu.size:<4d} K={k} {name:16s} " + "   ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
