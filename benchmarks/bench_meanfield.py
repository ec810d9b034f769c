"""Mean-field surrogate at DeepSeek-V3 scale: steps per second on one core.

One MoE layer with T = 15360 sequences x 4096 tokens = 62,914,560 tokens per
step, N = 256 routed experts, K = 8, sigmoid gate, additive bias, the sign
controller (Loss-Free, u = 1e-3) on the global batch. The process is pinned
to one CPU and BLAS to one thread before NumPy is imported.

Three scenarios, each run for ``--steps`` steps from a zero bias:

* ``uniform``: uniform popularity (the controller's limit cycle stays inside
  the tolerance: no re-evaluation);
* ``linear``: linear popularity skew 0.5 (a transient of a few hundred steps
  in which the bias travels to its equilibrium and rows are re-evaluated,
  then the limit cycle);
* ``drift``: the same skew plus a random walk of the popularity logits
  (``--drift-std`` per step and expert), which the controller keeps tracking.

For each: the set-up (the first exact evaluation of the load map, both
Jacobians and the selection covariance), the overall rate (every step after
the first, re-evaluations included), the re-evaluations, and the steady rate
of the fastest ``--chunk``-step chunk (on a shared machine, other processes
only ever slow a chunk down).

Usage::

    python benchmarks/bench_meanfield.py [--steps 3000] [--chunk 500]
        [--drift-std 1e-3] [--only uniform linear drift]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from routesim.config import config_from_dict  # noqa: E402
from routesim.engines.meanfield import make_meanfield_simulator  # noqa: E402

SCENARIOS = ("uniform", "linear", "drift")


def deepseek_config(steps: int, scenario: str = "uniform", drift_std: float = 1e-3):
    """The DeepSeek-V3-scale layer (15360 x 4096 tokens, N = 256, K = 8)."""
    traffic: dict = {"skew": "uniform"}
    if scenario in ("linear", "drift"):
        traffic = {"skew": "linear", "linear_spread": 0.5}
    if scenario == "drift":
        traffic.update(drift="random_walk", drift_std=drift_std)
    return config_from_dict({
        "run": {"steps": steps, "engine": "meanfield", "record_displacement": False},
        "batch": {"num_sequences": 15360, "seq_length": 4096},
        "router": {"num_experts": 256, "topk": 8, "score_function": "sigmoid"},
        "traffic": traffic,
        "controller": {"type": "sign", "bias_update_rate": 1e-3},
    })


def run(cfg, steps: int, chunk: int) -> tuple[float, list[float], list[int], np.ndarray]:
    """Set-up seconds, seconds and re-evaluations per chunk, MaxVio_batch per step."""
    init, step = make_meanfield_simulator(cfg)
    state = init()
    t0 = time.perf_counter()
    state, out = step(state)  # first step: the exact evaluation at b = 0
    setup = time.perf_counter() - t0
    maxvio = np.empty(steps)
    chunks, evals = [], []
    for start in range(0, steps, chunk):
        before = state.evaluations
        t0 = time.perf_counter()
        for i in range(start, min(steps, start + chunk)):
            state, out = step(state)
            load = np.asarray(out.load_PRE, dtype=np.float64)[0, 0]
            maxvio[i] = (load.max() - load.mean()) / load.mean()
        chunks.append(time.perf_counter() - t0)
        evals.append(state.evaluations - before)
    return setup, chunks, evals, maxvio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--drift-std", type=float, default=1e-3)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"mean-field surrogate, T = 62,914,560 tokens/step (15360 x 4096), N = 256, K = 8, "
          f"sign u = 1e-3, one core; {args.steps} steps; drift: random walk "
          f"{args.drift_std:g}/step")
    print(f"{'scenario':9s} {'set-up s':>8s} {'overall steps/s':>16s} {'re-evals':>9s} "
          f"{'best chunk steps/s':>19s} {'MaxVio (2nd half)':>18s}")
    for name in args.only:
        cfg = deepseek_config(args.steps, name, args.drift_std)
        setup, chunks, evals, mv = run(cfg, args.steps, args.chunk)
        full = [c for c, n in zip(chunks, range(0, args.steps, args.chunk))
                if n + args.chunk <= args.steps] or chunks
        best = min(full) / min(args.chunk, args.steps)
        print(f"{name:9s} {setup:8.2f} {args.steps / sum(chunks):16.1f} {sum(evals):9d} "
              f"{1.0 / best:19.0f} {mv[args.steps // 2:].mean():18.4f}", flush=True)


if __name__ == "__main__":
    main()
