"""Exact-engine throughput against a straightforward PyTorch loop, in one run.

    python benchmarks/bench_engine.py                    # P=8 x 200 steps x T=4096 x N=64
    python benchmarks/bench_engine.py --steps 50 --kernel generic
    python benchmarks/bench_engine.py --backend cupy     # GPU (CuPy; PyTorch on CUDA)
    python benchmarks/bench_engine.py --memory           # T=65536, N=256, K=8, P=16
    python benchmarks/bench_engine.py --profile          # where the time goes
    python benchmarks/bench_engine.py --sparse           # sparse kernel: x today's, time vs N

Workload: 8 points (sign controller, rates logspace(1e-4, 1e-2, 8)), sigmoid
gate, K = 8, skewed (Zipf, exponent 1) popularity plus standard normal noise.
The engine runs all points as one array program; the PyTorch loop runs them
one after the other (randn + popularity, sigmoid, topk of s + b, bincount,
sign update) with the same popularity vector and the same statistical model.
Throughput is token-expert scores per second (points x steps x T x N over
wall time). The two alternate in ``--rounds`` rounds of steps (each keeps its
state), so that both meet the same load on a shared machine. The last line is
the ratio engine / PyTorch.

``--memory`` runs the large configuration and reports the peak resident
memory of the process (ru_maxrss), which must stay under 2 GiB.

``--sparse`` runs the large configuration (P=16, T=65536, N=256, K=8) with the
dense Numba kernel and with the sparse kernel (``run.kernel = "sparse"``),
alternating in rounds, prints both throughputs and their ratio, then the sparse
and dense kernels' time per token-stream for N = 64, 256, 1024, 4096 at K = 8
(P=4, T=16384), and last the ratio of the sparse engine to the PyTorch loop on
the default workload.
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
from routesim.engines.exact import make_simulator  # noqa: E402
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


class EngineRun:
    """The engine on the benchmark config, advanced a few steps at a time (timed)."""

    def __init__(self, cfg, sync=None):
        self.init, self.step = make_simulator(cfg)
        self.sync = sync or (lambda: None)
        self.step(self.init())  # compiles the kernels; not timed
        self.sync()
        self.state, self.seconds, self.out = self.init(), 0.0, None

    def advance(self, n_steps: int) -> None:
        t0 = time.perf_counter()
        for _ in range(n_steps):
            self.state, self.out = self.step(self.state)
        self.sync()
        self.seconds += time.perf_counter() - t0


class TorchRun:
    """The PyTorch loop, one configuration after the other, advanced a few steps at a time."""

    def __init__(self, points: int, tokens: int, experts: int, topk: int, device: str):
        import torch

        self.torch, self.device, self.topk = torch, device, topk
        self.mu = torch.tensor(popularity("zipf", experts, zipf_exponent=1.0),
                               dtype=torch.float32, device=device)
        self.rates = [float(r) for r in np.logspace(-4, -2, points)]
        self.bias = [torch.zeros(experts, device=device) for _ in self.rates]
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.z = torch.empty(tokens, experts, device=device)
        self.seconds = 0.0
        self._one(0, 2)  # warm-up
        self.bias[0].zero_()
        self._sync()

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _one(self, p: int, n_steps: int) -> None:
        torch, z, b, n = self.torch, self.z, self.bias[p], self.z.shape[1]
        for _ in range(n_steps):
            z.normal_(generator=self.gen)
            s = torch.sigmoid(z + self.mu)
            idx = torch.topk(s + b, self.topk, dim=-1).indices
            load = torch.bincount(idx.flatten(), minlength=n).float()
            b += self.rates[p] * torch.sign(load.mean() - load)

    def advance(self, n_steps: int) -> None:
        t0 = time.perf_counter()
        for p in range(len(self.rates)):
            self._one(p, n_steps)
        self._sync()
        self.seconds += time.perf_counter() - t0


def profile_numba(n: int = 64, k: int = 8, segments: int = 40, tokens: int = 4096) -> None:
    """Single-thread time per token of each stage of the Numba kernel.

    The stages are called as ``_kernel_numba.run_segment`` calls them
    (sigmoid gate, additive bias, Zipf popularity, bias 0), over ``segments``
    segments of fresh draws, on blocks of 256 tokens (the kernel uses 64) to
    keep the cost of the Python calls small (about 4 ns per token and stage).
    """
    from routesim.engines.kernels import numba as kn
    from routesim.engines.kernels import numba_math as nm
    from routesim import rng

    F, U = np.float32, np.uint64
    h, tb = (n + 1) // 2, 256
    n2 = 2 * h
    mu = np.zeros(n2, F)
    mu[:n] = popularity("zipf", n, zipf_exponent=1.0)
    bias = np.zeros(n2, F)
    arow = np.zeros(n2, F)
    keys = rng.point_keys(0, [0], 1)
    i32, f32, i64 = (lambda m: np.empty(m, np.int32)), (lambda m: np.empty(m, F)), \
        (lambda m: np.empty(m, np.int64))
    u1i, u2i, ea, eb = i32(tb * h), i32(tb * h), f32(tb * h), f32(tb * h)
    z, sb, vb = (np.empty((tb, n2), F) for _ in range(3))
    cz, cb, cs, cv, ci = f32(tb * n2), f32(tb * n2), f32(tb * n2), f32(tb * n2), i64(tb * n2)
    tend, rows = i64(tb), np.zeros(tb, np.int64)
    bufv, bufi, tv, ti, tv0, ti0 = f32(n2), i64(n2), f32(n2), i64(n2), f32(n2), i64(n2)
    key, key0, rk, rk0, zt = i64(max(64, n2)), i64(max(64, n2)), i64(64), i64(64), f32(n2)
    counts = np.zeros((1, n), np.int64)
    stages = dict.fromkeys(["hash (SplitMix64)", "Box-Muller (log, sqrt, sin/cos)",
                            "logits mu + scale * eps", "candidates (z > z_thr) + gate",
                            "exact top-K among candidates"], 0.0)
    names = list(stages)
    seg_time = 0.0
    for warm in (True, False):
        for seg in range(2 if warm else segments):
            base = U(rng.stream_base(np, keys, seg, rng.Stream.NOISE)[0, 0])
            t_seg = time.perf_counter()
            kn.run_segment(base, 0, tokens, tokens, 0, h, n, k, mu, F(1), F(0), F(1), arow,
                           bias, 0, False, False, True, counts)
            if not warm:
                seg_time += time.perf_counter() - t_seg
            # the same segment stage by stage (pilot: tau and thresholds, untimed)
            nm.hash_pairs(base, U(0), kn.PILOT_TOKENS * h, u1i, u2i)
            nm.bm_pairs(kn.PILOT_TOKENS * h, u1i, u2i, ea, eb)
            kn.logits(kn.PILOT_TOKENS, h, ea, eb, mu, F(1), F(0), F(1), arow, z)
            kn.dense_scores(kn.PILOT_TOKENS, h, n, z, 0, False, bias, sb, vb)
            tau = float(np.mean(np.sort(vb[:kn.PILOT_TOKENS, :n], axis=1)[:, -(k + kn._EXTRA)]))
            kn.expert_thresholds(tau, tau, False, n, bias, 0, False, zt)
            for t0 in range(kn.PILOT_TOKENS, tokens - tb + 1, tb):
                c = [time.perf_counter()]
                nm.hash_pairs(base, U(t0) * U(h), tb * h, u1i, u2i)
                c.append(time.perf_counter())
                nm.bm_pairs(tb * h, u1i, u2i, ea, eb)
                c.append(time.perf_counter())
                kn.logits(tb, h, ea, eb, mu, F(1), F(0), F(1), arow, z)
                c.append(time.perf_counter())
                m = kn.compact(tb, n2, z, zt, cz, ci, tend)
                kn.gate_all(m, 0, False, bias, ci, cz, cb, cs, cv)
                c.append(time.perf_counter())
                kn._select_block(tb, k, h, n, n2, tend, cv, cs, ci, F(tau), F(tau), False, True,
                                 z, sb, vb, 0, False, bias, rows, counts, key, key0, rk, rk0,
                                 bufv, bufi, tv, ti, tv0, ti0)
                c.append(time.perf_counter())
                if not warm:
                    for i, name in enumerate(names):
                        stages[name] += c[i + 1] - c[i]
    blocks = segments * len(range(kn.PILOT_TOKENS, tokens - tb + 1, tb))
    print(f"Numba kernel profile, one thread, N={n}, K={k} (ns per token):")
    total = sum(stages.values())
    for name, sec in stages.items():
        print(f"  {name:34s} {1e9 * sec / (blocks * tb):6.1f}  ({100 * sec / total:4.1f} %)")
    print(f"  {'sum of stages':34s} {1e9 * total / (blocks * tb):6.1f}")
    per_tok = 1e9 * seg_time / (segments * tokens)
    print(f"  {'whole run_segment (with pilot)':34s} {per_tok:6.1f}  "
          f"= {n / per_tok * 1e3:.0f} M scores/s per core")


def profile_torch(tokens: int = 4096, n: int = 64, k: int = 8, reps: int = 200) -> None:
    """Time per token of each operation of the PyTorch loop (its threads as set)."""
    import torch

    mu = torch.tensor(popularity("zipf", n, zipf_exponent=1.0), dtype=torch.float32)
    z = torch.empty(tokens, n)
    b = torch.zeros(n)
    ops = dict.fromkeys(["normal_", "add popularity + sigmoid", "topk of s + b", "bincount",
                         "sign update"], 0.0)
    for rep in range(reps + 5):
        c = [time.perf_counter()]
        z.normal_()
        c.append(time.perf_counter())
        s = torch.sigmoid(z + mu)
        c.append(time.perf_counter())
        idx = torch.topk(s + b, k, dim=-1).indices
        c.append(time.perf_counter())
        load = torch.bincount(idx.flatten(), minlength=n).float()
        c.append(time.perf_counter())
        b += 1e-3 * torch.sign(load.mean() - load)
        c.append(time.perf_counter())
        if rep >= 5:
            for i, name in enumerate(ops):
                ops[name] += c[i + 1] - c[i]
    total = sum(ops.values())
    print(f"PyTorch loop profile, {torch.get_num_threads()} threads (ns per token):")
    for name, sec in ops.items():
        print(f"  {name:34s} {1e9 * sec / (reps * tokens):6.1f}  ({100 * sec / total:4.1f} %)")
    print(f"  {'total':34s} {1e9 * total / (reps * tokens):6.1f}  "
          f"= {n * reps * tokens / total / 1e6:.0f} M scores/s")


def sparse_report(steps: int, rounds: int, no_torch: bool) -> None:
    """Sparse kernel against the dense Numba kernel, same run; time per token against N."""
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    points, seqs, L, n, k = 16, 16, 4096, 256, 8
    tokens = seqs * L
    runs = {kern: EngineRun(bench_config(points, steps, seqs, L, n, k, "numpy", kern))
            for kern in ("numba", "sparse")}
    for r in range(rounds):
        n_steps = steps // rounds + (1 if r < steps % rounds else 0)
        for run in runs.values():
            run.advance(n_steps)
    scores = points * steps * tokens * n
    rate = {kern: scores / run.seconds for kern, run in runs.items()}
    print(f"workload: P={points} x {steps} steps x T={tokens} x N={n}, K={k}, sigmoid, sign "
          f"controller, Zipf popularity")
    for kern, run in runs.items():
        print(f"  kernel {kern:7s}: {run.seconds:.3f} s, {rate[kern] / 1e6:.1f} M token-expert "
              f"scores/s")
    print(f"ratio sparse/numba: {rate['sparse'] / rate['numba']:.2f}")
    print(f"load average after: {load_average()}")
    print("time per token and stream (ns), K=8, P=4, T=16384, 3 steps:")
    print(f"  {'N':>6s} {'numba':>9s} {'sparse':>9s} {'ratio':>7s}")
    for n in (64, 256, 1024, 4096):
        ns = {}
        for kern in ("numba", "sparse"):
            run = EngineRun(bench_config(4, 3, 4, 4096, n, k, "numpy", kern))
            run.advance(3)
            ns[kern] = 1e9 * run.seconds / (4 * 3 * 16384)
        print(f"  {n:6d} {ns['numba']:9.1f} {ns['sparse']:9.1f} {ns['numba'] / ns['sparse']:7.2f}")
    print(f"load average after: {load_average()}")
    if not no_torch:
        main(["--kernel", "sparse", "--steps", "100", "--rounds", "5"])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--kernel", choices=["auto", "generic", "numba", "cuda", "sparse"],
                    default="auto")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps (default 200; 3 with --memory)")
    ap.add_argument("--points", type=int, default=None, help="points (default 8; 16 with --memory)")
    ap.add_argument("--memory", action="store_true",
                    help="T=65536 (16 x 4096), N=256, K=8, P=16: report peak resident memory")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    ap.add_argument("--rounds", type=int, default=10,
                    help="alternate engine and PyTorch in this many rounds of steps")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of both the engine (Numba) and PyTorch (default: all)")
    ap.add_argument("--sparse", action="store_true",
                    help="sparse kernel against the dense one (P=16, T=65536, N=256, K=8), "
                         "time per token against N, then its ratio to PyTorch")
    ap.add_argument("--profile", action="store_true",
                    help="per-stage time of the Numba kernel and of the PyTorch loop")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)  # read when Numba is imported
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    if args.sparse:
        sparse_report(args.steps or 6, min(args.rounds, args.steps or 6), args.no_torch)
        return 0
    if args.profile:
        print(f"load average (1, 5, 15 min): {load_average()}")
        profile_numba()
        if not args.no_torch:
            try:
                profile_torch()
            except ImportError:
                print("PyTorch loop profile: skipped (torch not installed)")
        print(f"load average after: {load_average()}")
        return 0
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
    engine = EngineRun(cfg, sync)
    device = "cuda" if args.backend == "cupy" else "cpu"
    torch_run = None
    if not (args.no_torch or args.memory):
        try:
            torch_run = TorchRun(points, tokens, n, k, device)
        except ImportError:
            pass
    # Alternate the two in rounds, so that both see the same machine (load) over time.
    rounds = max(1, min(args.rounds, steps))
    for r in range(rounds):
        n_steps = steps // rounds + (1 if r < steps % rounds else 0)
        engine.advance(n_steps)
        if torch_run is not None:
            torch_run.advance(n_steps)
    seconds, load = engine.seconds, to_numpy(engine.out.load_PRE)
    rate = scores / seconds
    assert np.all(load.sum(-1) == tokens * k), "every token must take K experts"
    print(f"engine: {seconds:.3f} s, {rate / 1e6:.1f} M token-expert scores/s")
    if args.memory:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
        print(f"load average after: {load_average()}")
        verdict = "under" if peak < 2048 else "OVER"
        print(f"peak resident memory: {peak:.0f} MiB ({verdict} the 2048 MiB limit)")
        return 0 if peak < 2048 else 1
    t_torch = None if torch_run is None else torch_run.seconds
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
