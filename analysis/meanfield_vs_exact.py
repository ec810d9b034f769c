"""Mean-field surrogate against the exact engine at T = 65536 tokens per step.

For each scenario, both engines run the same config (only ``run.engine``
differs) and the script prints, per engine, the mean and standard deviation
of MaxVio_batch after the burn-in (replicas pooled) and the controller's
settling step (first step at which the 5-step trailing mean of the
replica-mean MaxVio_batch is within 10 % of the way from the exact
engine's steady level to its initial value), then the relative differences
and a verdict: the surrogate is trusted on a scenario when all three agree
within 10 %.

Usage::

    python analysis/meanfield_vs_exact.py [--steps 600] [--replicas 4]
        [--backend numpy] [--kernel auto] [--jobs 1] [--only NAME ...]

Every scenario: 256 sequences of 256 tokens, N = 64 experts, K = 8 (sigmoid
gate unless named), popularity skewed so that the controller has a
transient to settle; in ``sign/linear/drift`` the popularity also drifts (a
random walk of 5e-3 per step and expert), so the controller keeps tracking it. The exact engine dominates the cost: under a minute per
scenario on one core with normal noise, about 8 minutes with logistic or
Gumbel noise (the array path), a minute with ``--kernel sparse`` (the exact
O(K)-per-token kernel, which draws every noise law). ``--jobs`` runs the
simulations in parallel.
"""

from __future__ import annotations

import argparse
import sys
import time

from routesim import simulate
from routesim.config import config_from_dict
from routesim.engines.meanfield import compare_engines
from routesim.sweep import worker_pool

TOLERANCE = 0.10

SCENARIOS = {
    "sign/linear": {
        "traffic": {"skew": "linear", "linear_spread": 0.5},
        "controller": {"type": "sign", "bias_update_rate": 1e-3},
    },
    "sign/seq-corr": {
        "traffic": {"skew": "linear", "linear_spread": 0.5, "seq_correlation": 0.05},
        "controller": {"type": "sign", "bias_update_rate": 2e-3},
    },
    "proportional/zipf/logistic": {
        "traffic": {"skew": "zipf", "zipf_exponent": 0.5, "noise": "logistic"},
        "controller": {"type": "proportional", "bias_update_rate": 4e-3},
    },
    "sign_centred/micro-batch": {
        "batch": {"micro_batch_size": 64},
        "traffic": {"skew": "linear", "linear_spread": 0.5},
        "controller": {"type": "sign_centred", "bias_update_rate": 5e-4,
                       "window": "micro_batch"},
    },
    "sign/linear/drift": {
        "traffic": {"skew": "linear", "linear_spread": 0.5, "drift": "random_walk",
                    "drift_std": 5e-3},
        "controller": {"type": "sign", "bias_update_rate": 1e-3},
    },
    "ema/sqrtsoftplus/gumbel": {
        "router": {"score_function": "sqrtsoftplus"},
        "traffic": {"skew": "linear", "linear_spread": 0.5, "noise": "gumbel"},
        "controller": {"type": "ema", "bias_update_rate": 0.3, "momentum": 0.9},
    },
}


def scenario_config(name: str, engine: str, steps: int, replicas: int, backend: str,
                    kernel: str = "auto"):
    """The config of a scenario for one engine (``kernel``: the exact engine's)."""
    spec = SCENARIOS[name]
    run = {"steps": steps, "replicas": replicas, "engine": engine, "backend": backend,
           "record_displacement": False, "seed": 7}
    if engine == "exact":
        run["kernel"] = kernel
    data = {
        "run": run,
        "batch": {"num_sequences": 256, "seq_length": 256, **spec.get("batch", {})},
        "router": {"num_experts": 64, "topk": 8, **spec.get("router", {})},
        "traffic": spec["traffic"],
        "controller": spec["controller"],
    }
    return config_from_dict(data)


def run_one(args: tuple[str, str, int, int, str, str]) -> tuple[str, str, object, float]:
    """Simulate one (scenario, engine); returns the Dataset and the wall time."""
    name, engine, steps, replicas, backend, kernel = args
    backend = backend if engine == "exact" else "numpy"
    t0 = time.perf_counter()
    ds = simulate(scenario_config(name, engine, steps, replicas, backend, kernel),
                  progress=False)
    return name, engine, ds, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--backend", default="numpy", help="backend of the exact engine")
    parser.add_argument("--kernel", default="auto", choices=("auto", "numba", "sparse", "generic"),
                        help="kernel of the exact engine (run.kernel)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    tasks = [(n, e, args.steps, args.replicas, args.backend, args.kernel)
             for n in names for e in ("exact", "meanfield")]
    if args.jobs > 1:
        with worker_pool(args.jobs) as pool:  # workers stop with this process
            results = list(pool.map(run_one, tasks))
    else:
        results = [run_one(t) for t in tasks]
    out = {(n, e): (ds, wall) for n, e, ds, wall in results}
    burn_in = args.steps // 2
    print(f"T = 65536 tokens/step, N = 64, K = 8; {args.steps} steps x {args.replicas} "
          f"replicas; steady state = steps >= {burn_in}; exact engine: kernel "
          f"{args.kernel}")
    header = (f"{'scenario':28s} {'statistic':14s} {'exact':>10s} {'meanfield':>10s} "
              f"{'rel.diff':>9s}")
    print(header)
    print("-" * len(header))
    all_ok = True
    for name in names:
        (ex, t_ex), (mf, t_mf) = out[(name, "exact")], out[(name, "meanfield")]
        stats = compare_engines(ex, mf, burn_in=burn_in)
        for stat, (a, b) in stats.items():
            rel = (b - a) / a if a else float("inf")
            ok = abs(rel) <= TOLERANCE
            all_ok &= ok
            digits = 0 if stat == "settling_step" else 4
            print(f"{name:28s} {stat:14s} {a:10.{digits}f} {b:10.{digits}f} {rel:+9.1%}"
                  f"{'' if ok else '  <-- outside 10%'}")
        print(f"{'':28s} {'wall time (s)':14s} {t_ex:10.1f} {t_mf:10.1f}   "
              f"(load-map evaluations: {int(mf['meanfield_evaluations'].sum())})")
    verdict = "PASS" if all_ok else "FAIL"
    print(f"verdict: {verdict}: mean and std of MaxVio_batch and the settling step agree "
          f"within {TOLERANCE:.0%} on {'all' if all_ok else 'not all'} {len(names)} scenarios")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
