"""The expected-load quadrature: the NumPy pass against the compiled (Numba) pass.

For N = 16, 64, 256 (K = 2, 8, 8; Zipf popularity, exponent 1, at a small
random bias), the time of one point's

* ``load_map`` (the map alone, 32 and 96 nodes), and
* ``load_map_and_jacobians(with_mu=True, with_covariance=True)`` (the
  mean-field surrogate's exact evaluation, 64 nodes),

through each pass (``routesim.theory._quadrature.COMPILED_FROM = None``
forces NumPy), the largest relative difference between the two results and
the ratio. Best of ``--repeat`` calls after one warm-up call (the first call
of the compiled pass loads or compiles it).

Usage::

    python benchmarks/bench_load_map.py [--repeat 3] [--threads 1]
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
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    import numpy as np

    from routesim.theory import _quadrature
    from routesim.theory.expected_load import load_map, load_map_and_jacobians
    from routesim.traffic import popularity

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


if __name__ == "__main__":
    raise SystemExit(main())
