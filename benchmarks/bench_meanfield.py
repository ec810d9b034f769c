"""Mean-field surrogate at DeepSeek-V3 scale: steps per second on one core.

One MoE layer with T = 15360 sequences x 4096 tokens = 62,914,560 tokens per
step, N = 256 routed experts, K = 8, sigmoid gate, additive bias, the sign
controller (Loss-Free, u = 1e-3) on the global batch. The process is pinned
to one CPU and BLAS to one thread before NumPy is imported.

Prints the set-up cost (the first exact evaluation of the load map, its
Jacobian and the selection covariance), then the steady rate over
``--steps`` steps with uniform popularity (the controller's limit cycle
stays inside the linearisation tolerance, so no re-evaluation happens), then
the cost of a transient (linear popularity skew: the bias travels to its
equilibrium and rows are re-evaluated along the way). The last line is the
steady rate of the fastest 500-step chunk (on a shared machine, other
processes only ever slow a chunk down); the overall rate is printed above it.

Usage::

    python benchmarks/bench_meanfield.py [--steps 3000] [--transient-steps 30]
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


def deepseek_config(steps: int, skew: str = "uniform"):
    """The DeepSeek-V3-scale layer (15360 x 4096 tokens, N = 256, K = 8)."""
    return config_from_dict({
        "run": {"steps": steps, "engine": "meanfield", "record_displacement": False},
        "batch": {"num_sequences": 15360, "seq_length": 4096},
        "router": {"num_experts": 256, "topk": 8, "score_function": "sigmoid"},
        "traffic": {"skew": skew, **({"linear_spread": 0.5} if skew == "linear" else {})},
        "controller": {"type": "sign", "bias_update_rate": 1e-3},
    })


def run(cfg, steps: int, chunk: int = 500) -> tuple[float, list[float], int, np.ndarray]:
    """Set-up seconds, seconds per chunk of steps, re-evaluations, MaxVio_batch per step."""
    init, step = make_meanfield_simulator(cfg)
    state = init()
    t0 = time.perf_counter()
    state, out = step(state)  # first step: the exact evaluation at b = 0
    setup = time.perf_counter() - t0
    first_evaluations = state.evaluations
    maxvio = np.empty(steps)
    chunks = []
    for start in range(0, steps, chunk):
        t0 = time.perf_counter()
        for i in range(start, min(steps, start + chunk)):
            state, out = step(state)
            load = np.asarray(out.load_PRE, dtype=np.float64)[0, 0]
            maxvio[i] = (load.max() - load.mean()) / load.mean()
        chunks.append(time.perf_counter() - t0)
    return setup, chunks, state.evaluations - first_evaluations, maxvio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--transient-steps", type=int, default=30)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cfg = deepseek_config(args.steps)
    tokens = cfg.batch.tokens_per_step
    print(f"mean-field surrogate, T = {tokens:,} tokens/step (15360 x 4096), N = 256, K = 8, "
          f"sign u = 1e-3, one core")
    setup, chunks, evals, mv = run(cfg, args.steps)
    secs = sum(chunks)
    best = min(chunks) / min(500, args.steps)
    print(f"set-up (exact load map, Jacobian, covariance at N = 256): {setup:.2f} s")
    print(f"uniform popularity: {args.steps} steps in {secs:.2f} s ({args.steps / secs:.0f} "
          f"steps/s overall), re-evaluations: {evals}, MaxVio_batch over the last half: "
          f"{mv[args.steps // 2:].mean():.4f}")
    if args.transient_steps > 0:
        skew = deepseek_config(args.transient_steps, skew="linear")
        _, chunks2, evals2, mv2 = run(skew, args.transient_steps)
        secs2 = sum(chunks2)
        print(f"linear skew 0.5 (transient): {args.transient_steps} steps in {secs2:.1f} s with "
              f"{evals2} re-evaluations ({secs2 / max(evals2, 1):.2f} s each); MaxVio_batch "
              f"{mv2[0]:.3f} -> {mv2[-1]:.3f}")
    # The best 500-step chunk: other processes on a shared machine only slow chunks down.
    print(f"steps per second (uniform, steady, best 500-step chunk): {1.0 / best:.0f}")


if __name__ == "__main__":
    main()
