"""Exact-engine throughput against a straightforward PyTorch loop, in one run.

    python benchmarks/bench_engine.py                    # P=8 x 200 steps x T=4096 x N=64
    python benchmarks/bench_engine.py --steps 50 --kernel generic
    python benchmarks/bench_engine.py --backend cupy     # GPU (CuPy; PyTorch on CUDA)
    python benchmarks/bench_engine.py --memory           # T=65536, N=256, K=8, P=16

Workload: 8 points (sign controller, rates logspace(1e-4, 1e-2, 8)), sigmoid
gate, K = 8, skewed (Zipf, exponent 1) popularity plus standard normal noise.
The engine runs all points as one array program; the PyTorch loop runs them
one after the other (randn + popularity, sigmoid, topk of s + b, bincount,
sign update) with the same popularity vector and the same statistical model.
Throughput is token-expert scores per second (points x steps x T x N over
wall time). The last line is the ratio engine / PyTorch.

``--memory`` runs the large configuration and reports the peak resident
memory of the process (ru_maxrss), which must stay under 2 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from routesim import config_from_dict  # noqa: E402
from routesim._backend import to_numpy  # noqa: E402
from routesim.engine import make_simulator  # noqa: E402
from routesim.traffic import popularity  # noqa: E402

RATES = [float(x) for x in np.logspace(-4, -2, 8)]


def bench_config(points: int, steps: int, sequences: int, seq_length: int, experts: int,
                 topk: int, backend: str, kernel: str):
    """The benchmark's config: ``points`` sign-controller rates over a log grid."""
    rates = [float(x) for x in np.logspace(-4, -2, points)]
    return config_from_dict({
        "run": {"steps": steps, "seed": 0, "backend": backend, "kernel": kernel,
                "record_displacement": False},
        "batch": {"num_sequences": sequences, "seq_length": seq_length},
        "router": {"num_experts": experts, "topk": topk, "score_function": "sigmoid"},
        "traffic": {"skew": "zipf", "zipf_exponent": 1.0},
        "controller": {"type": "sign", "window": "global_batch"},
        "sweep": {"controller.bias_update_rate": rates},
    })


def run_engine(cfg, sync=None) -> tuple[float, np.ndarray]:
    """Seconds for ``run.steps`` steps (after one warm-up step) and the final loads."""
    init, step = make_simulator(cfg)
    state, out = step(init())  # compiles kernels; not timed
    if sync:
        sync()
    state = init()
    t0 = time.perf_counter()
    for _ in range(cfg.run.steps):
        state, out = step(state)
    if sync:
        sync()
    return time.perf_counter() - t0, to_numpy(out.load_PRE)


def run_torch(points: int, steps: int, tokens: int, experts: int, topk: int, device: str):
    """The PyTorch loop over configurations; returns seconds (or None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    mu = torch.tensor(popularity("zipf", experts, zipf_exponent=1.0), dtype=torch.float32,
                      device=device)
    rates = np.logspace(-4, -2, points)
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.empty(tokens, experts, device=device)

    def one(rate: float, n_steps: int) -> None:
        b = torch.zeros(experts, device=device)
        for _ in range(n_steps):
            z.normal_(generator=gen)
            s = torch.sigmoid(z + mu)
            idx = torch.topk(s + b, topk, dim=-1).indices
            load = torch.bincount(idx.flatten(), minlength=experts).float()
            b += rate * torch.sign(load.mean() - load)

    one(rates[0], 2)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for rate in rates:
        one(float(rate), steps)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--kernel", choices=["auto", "generic", "numba", "cuda"], default="auto")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps (default 200; 3 with --memory)")
    ap.add_argument("--points", type=int, default=None, help="points (default 8; 16 with --memory)")
    ap.add_argument("--memory", action="store_true",
                    help="T=65536 (16 x 4096), N=256, K=8, P=16: report peak resident memory")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    args = ap.parse_args(argv)
    if args.memory:
        points, steps = args.points or 16, args.steps or 3
        seqs, L, n, k = 16, 4096, 256, 8
    else:
        points, steps = args.points or 8, args.steps or 200
        seqs, L, n, k = 1, 4096, 64, 8
    tokens = seqs * L
    sync = None
    if args.backend == "cupy":
        import cupy

        sync = cupy.cuda.Device().synchronize
        print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    else:
        try:
            import numba
            print(f"numba threads: {numba.get_num_threads()}")
        except ImportError:
            print("numba: not installed (generic kernel)")
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    cfg = bench_config(points, steps, seqs, L, n, k, args.backend, args.kernel)
    print(f"workload: P={points} points x {steps} steps x T={tokens} tokens x N={n} experts, "
          f"K={k}, sigmoid, sign controller, Zipf popularity; backend={args.backend}, "
          f"kernel={args.kernel}")
    scores = points * steps * tokens * n
    seconds, load = run_engine(cfg, sync)
    rate = scores / seconds
    assert np.all(load.sum(-1) == tokens * k), "every token must take K experts"
    print(f"engine: {seconds:.3f} s, {rate / 1e6:.1f} M token-expert scores/s")
    if args.memory:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
        print(f"load average after: {load_average()}")
        verdict = "under" if peak < 2048 else "OVER"
        print(f"peak resident memory: {peak:.0f} MiB ({verdict} the 2048 MiB limit)")
        return 0 if peak < 2048 else 1
    device = "cuda" if args.backend == "cupy" else "cpu"
    t_torch = None if args.no_torch else run_torch(points, steps, tokens, n, k, device)
    print(f"load average after: {load_average()}")
    if t_torch is None:
        print("PyTorch loop: skipped (torch not installed or --no-torch)")
        print("ratio engine/pytorch: n/a")
        return 0
    import torch

    torch_rate = scores / t_torch
    print(f"pytorch loop ({device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads): {t_torch:.3f} s, {torch_rate / 1e6:.1f} M token-expert scores/s")
    print(f"ratio engine/pytorch: {rate / torch_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
