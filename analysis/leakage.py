"""Information leakage of balancing mechanisms: capacities beside measured bits.

For N = 16 experts and K = 2 (the Loss-Free paper's example, R = 1/8), the
script prints

1. the analytic capacities: the paper's bound ``K log2((1 - R) / R)`` per
   layer and over 9 layers, the exact count ``log2(C(T, KT/N)^N) / T`` at
   several block sizes and its limit ``N H2(R)``;
2. one table of routers: block size, N, K, bound, exact capacity of an
   Expert Choice block of that size (bits per token), the split capacity
   (bits per block an encoder can write into the early tokens' routing,
   Expert Choice only), the measured leakage with its bootstrap interval
   (bits per block and per token), and the bits a constructive channel
   recovered (per block and per token);
3. the Expert Choice routing shape from the exact engine: share of tokens
   with no expert and mean experts per token, beside the large-block limits
   ``(1 - R)^N`` and ``K``.

Token-choice routers route a micro-batch of 2 sequences x 32 tokens split at
position 16 (the first 16 tokens of each sequence are early); Expert Choice
blocks are 64 tokens (same layout), a quarter sequence (512 of 2048), a
sequence (2048) and four sequences (8192), split in the middle of each
sequence or sub-sequence block (blocks above 512 tokens use fewer draws
and contexts, to keep the default run near a minute). The measured value is the mean over
``contexts`` draws of the early scores of the entropy of the early tokens'
routing over ``draws`` redraws of the late tokens (Miller-Madow). ``joint``
takes the whole early routing as the outcome; ``per-expert`` sums the
experts' columns (exact for Expert Choice with a sigmoid gate, an upper
bound for token choice). ``>=`` marks an undersampled joint estimate
(coverage < 0.9): a lower bound.

Usage::

    python analysis/leakage.py [--draws 2000] [--contexts 4] [--seed 0] [--resamples 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from routesim import simulate
from routesim.config import config_from_dict
from routesim.leakage.measure import leakage_setup, measure_leakage
from routesim.leakage.channel import channel_codebook, channel_expert_choice
from routesim.theory import leakage_bound, leakage_exact, leakage_limit, leakage_split

N, K = 16, 2


def config(seqs: int, length: int, router: dict | None = None,
           controller: dict | None = None):
    """A one-point config: N = 16, K = 2, sigmoid gate, uniform popularity."""
    return config_from_dict({
        "run": {"steps": 1},
        "batch": {"num_sequences": seqs, "seq_length": length},
        "router": {"num_experts": N, "topk": K, "score_function": "sigmoid", **(router or {})},
        "controller": controller or {},
    })


#: (config, position, timing, methods, constructive channel)
ROWS = [
    (config(2, 32), 16, "lagged", ("joint",), "codebook"),
    (config(2, 32), 16, "current", ("joint", "per_expert"), "codebook"),
    (config(2, 32, controller={"bias_update_rate": 1e-2}), 16, "current",
     ("joint", "per_expert"), "codebook"),
    (config(2, 32, {"capacity_factor": 1.0}), 16, "lagged", ("joint", "per_expert"),
     "codebook"),
    (config(2, 32, {"capacity_factor": 1.0, "token_drop_policy": "position"}), 16, "lagged",
     ("joint",), "codebook"),
    (config(2, 32, controller={"type": "quantile"}), 16, "lagged", ("joint",), "codebook"),
    (config(2, 32, controller={"type": "quantile"}), 16, "current", ("joint", "per_expert"),
     "codebook"),
    (config(2, 32, {"router_type": "expert_choice"}), 16, "lagged", ("per_expert",),
     "digits"),
    (config(1, 2048, {"router_type": "expert_choice", "expert_choice_block": 512}), 256,
     "lagged", ("per_expert",), "digits"),
    (config(1, 2048, {"router_type": "expert_choice"}), 1024, "lagged", ("per_expert",),
     "digits"),
    (config(4, 2048, {"router_type": "expert_choice"}), 1024, "lagged", ("per_expert",),
     "digits"),
]


def capacities() -> None:
    """Print the analytic capacities."""
    bound = leakage_bound(N, K)
    print(f"N = {N}, K = {K}, R = {K / N:g}")
    print(f"  bound K log2((1-R)/R)      = {bound:.3f} bits/token per layer; "
          f"9 layers: {9 * bound:.1f} bits (> 50: {9 * bound > 50})")
    print(f"  elementary K log2(N/K)     = {K * np.log2(N / K):.3f} (= exact at T = N/K)")
    blocks = np.array([8, 64, 512, 2048, 8192, 65536])
    exact = leakage_exact(blocks, N, K)
    print("  exact log2(C(T,KT/N)^N)/T  = " + ", ".join(
        f"T={t}: {x:.3f}" for t, x in zip(blocks, exact)))
    print(f"  limit N H2(R)              = {leakage_limit(N, K):.3f}; exact - bound grows "
          f"from {exact[0] - bound:.3f} to {exact[-1] - bound:.3f} bits/token")


def leakage_table(draws: int, contexts: int, seed: int, n_resamples: int) -> None:
    """Print the router table."""
    head = (f"{'router':<42} {'block':>5} {'N':>3} {'K':>2} {'bound':>6} {'exact':>6} "
            f"{'split':>6} | {'measured bits/block [95% CI]':>31} {'method':<10} "
            f"{'/token':>7} | {'constructive':>12} {'/token':>7}")
    print(head)
    print("-" * len(head))
    bound = leakage_bound(N, K)
    for cfg, pos, timing, methods, channel in ROWS:
        setup = leakage_setup(cfg, pos, timing)
        label = setup.label
        if setup.router == "token_choice":
            label += f" u={cfg.controller.bias_update_rate:.0e}"
        t, n_early = setup.block, int(setup.early_index.size)
        split = (f"{leakage_split(n_early, t - n_early, N, K):6.1f}"
                 if setup.router == "expert_choice" else f"{'-':>6}")
        if channel == "digits":
            ch = channel_expert_choice(cfg, pos, 200, seed)
        else:
            ch = channel_codebook(cfg, pos, 4000, seed, timing=timing)
        scale = max(1, t // 512)  # large blocks: fewer draws and contexts (time)
        for i, method in enumerate(methods):
            res = measure_leakage(cfg, pos, max(500, draws // scale), seed, timing=timing,
                                  contexts=max(1, contexts // scale), method=method,
                                  n_resamples=n_resamples)
            mark = ">=" if method == "joint" and res.undersampled else "  "
            meas = f"{mark}{res.bits:7.2f} [{res.ci[0]:7.2f}, {res.ci[1]:7.2f}]"
            left = (f"{label:<42} {t:>5} {N:>3} {K:>2} {bound:6.2f} "
                    f"{leakage_exact(t, N, K):6.2f} {split}" if i == 0 else " " * 76)
            sat = "+" if ch.saturated else " "
            right = (f"{ch.recovered:11.1f}{sat} {ch.per_token:7.4f}" if i == 0 else "")
            print(f"{left} | {meas:>31} {method.replace('_', '-'):<10} "
                  f"{res.per_token:7.4f} | {right}")


def expert_choice_shape(seed: int) -> None:
    """Print the unrouted share and experts per token of Expert Choice (exact engine)."""
    r = K / N
    print(f"Expert Choice routing shape (exact engine, 1 step, 2 replicas; large-block "
          f"limits: no expert {(1 - r) ** N:.4f}, experts per token {K})")
    for seqs, length, block in ((16, 64, 16), (16, 64, 64), (4, 2048, 512), (4, 2048, 2048),
                                (4, 2048, 8192)):
        cfg = config_from_dict({
            "run": {"steps": 1, "replicas": 2, "seed": seed},
            "batch": {"num_sequences": seqs, "seq_length": length},
            "router": {"num_experts": N, "topk": K, "score_function": "sigmoid",
                       "router_type": "expert_choice", "expert_choice_block": block}})
        ds = simulate(cfg, progress=False)
        hist = ds["experts_per_token"].sum(("step", "point", "replica")).values
        mean = float((hist * np.arange(hist.size)).sum() / hist.sum())
        print(f"  block {block:>5}: no expert {float(ds['unrouted_share'].mean()):.4f}, "
              f"experts per token {mean:.3f} (max {int(np.flatnonzero(hist).max())}), "
              f"load max/min {int(ds['expert_load'].max())}/{int(ds['expert_load'].min())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=2000,
                        help="redraws of the late tokens per context (T > 512: "
                             "divided by T/512, at least 500)")
    parser.add_argument("--contexts", type=int, default=4,
                        help="draws of the early scores (T > 512: divided by T/512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    capacities()
    print()
    leakage_table(args.draws, args.contexts, args.seed, args.resamples)
    print()
    expert_choice_shape(args.seed)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
