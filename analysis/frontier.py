"""The balance/leakage frontier: Expert Choice, shuffled EC, Expert Threshold, token choice.

N = 16 experts, K = 2, sigmoid gate, Zipf popularity (exponent 1), unit
normal noise; micro-batches of 2 sequences x 32 tokens. For each router the
script measures

* **balance** with the exact engine (``--steps`` steps of 8 sequences, the
  second half): the mean per-step MaxVio of the routed loads, its mean over
  the micro-batches that expert-parallel ranks see (``maxvio_compute`` at one
  micro-batch), and the share of tokens no expert takes;
* **leakage** with :func:`routesim.measure_leakage`: the entropy of the early
  tokens' routing (positions < 16 of every sequence, or the first half of an
  Expert Choice block inside a sequence) over redraws of the late tokens,
  per-expert sum (exact for Expert Choice and Expert Threshold, an upper
  bound for token choice), in bits per token of the measured block.

Routers: token choice with the lagged sign bias (Loss-Free, ``u`` = 1e-3 and
1e-2, one update per micro-batch: causal); Expert Choice on the micro-batch
(64 tokens) and on half-sequence blocks (16 tokens); Expert Choice on 16-token
blocks of a shuffled micro-batch; Expert Threshold with EMA weights 0.9 and
0.5 (lagged thresholds: causal) and, for the leakage column only, with a
same-batch threshold.

Usage::

    python analysis/frontier.py [--steps 200] [--draws 1000] [--contexts 2] [--seed 0]
                                [--figure PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from routesim import simulate
from routesim.config import config_from_dict
from routesim.leakage.measure import measure_leakage

N, K, SEQS_MB, LENGTH = 16, 2, 2, 32

ROUTERS = [
    # label, router, controller, leakage timing, simulate?
    ("token choice, lagged sign u=1e-3", {}, {"type": "sign", "bias_update_rate": 1e-3,
                                              "window": "micro_batch"}, "lagged", True),
    ("token choice, lagged sign u=1e-2", {}, {"type": "sign", "bias_update_rate": 1e-2,
                                              "window": "micro_batch"}, "lagged", True),
    ("token choice, no bias", {}, {"type": "none"}, "lagged", True),
    ("expert choice, block 64", {"router_type": "expert_choice"}, {"type": "none"}, "lagged",
     True),
    ("expert choice, block 16", {"router_type": "expert_choice", "expert_choice_block": 16},
     {"type": "none"}, "lagged", True),
    ("shuffled EC, block 16", {"router_type": "expert_choice", "expert_choice_block": 16,
                               "expert_choice_shuffle": True}, {"type": "none"}, "lagged", True),
    ("expert threshold, ema 0.9", {"router_type": "expert_threshold", "threshold_ema": 0.9},
     {"type": "none"}, "lagged", True),
    ("expert threshold, ema 0.5", {"router_type": "expert_threshold", "threshold_ema": 0.5},
     {"type": "none"}, "lagged", True),
    ("expert threshold, same-batch", {"router_type": "expert_threshold"}, {"type": "none"},
     "current", False),
]


def config(router: dict, controller: dict, steps: int, seqs: int):
    """N = 16, K = 2, sigmoid gate, Zipf popularity; micro-batches of 2 x 32 tokens."""
    return config_from_dict({
        "run": {"steps": steps},
        "batch": {"num_sequences": seqs, "seq_length": LENGTH, "micro_batch_size": SEQS_MB,
                  "computation_batch_sizes": [SEQS_MB]},
        "router": {"num_experts": N, "topk": K, "score_function": "sigmoid", **router},
        "traffic": {"skew": "zipf", "zipf_exponent": 1.0},
        "controller": controller,
    })


def frontier(steps: int, draws: int, contexts: int, seed: int) -> list[dict]:
    """One row per router: balance from the engine, leakage from the measurement."""
    rows = []
    for label, router, controller, timing, sim in ROUTERS:
        row = {"label": label}
        if sim:
            ds = simulate(config(router, controller, steps, 8), progress=False)
            late = ds.isel(step=slice(steps // 2, None))
            row["maxvio"] = float(late["maxvio_batch"].mean())
            row["maxvio_mb"] = float(late["maxvio_compute"].mean())
            row["unrouted"] = float(late["unrouted_share"].mean())
        cfg = config(router, controller, 1, SEQS_MB)
        block = router.get("expert_choice_block") if not router.get(
            "expert_choice_shuffle") else None
        position = block // 2 if block and block < LENGTH else LENGTH // 2
        res = measure_leakage(cfg, position, draws, seed, timing=timing, contexts=contexts,
                              method="per_expert", n_resamples=200)
        row.update(bits=res.bits, ci=res.ci, per_token=res.per_token, block=res.block)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    """The frontier as one table."""
    head = (f"{'router':34s} {'MaxVio/step':>11s} {'MaxVio/mb':>9s} {'unrouted':>8s} | "
            f"{'block':>5s} {'leak bits/block [95% CI]':>28s} {'bits/token':>10s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        bal = (f"{r['maxvio']:11.4f} {r['maxvio_mb']:9.4f} {r['unrouted']:8.4f}"
               if "maxvio" in r else f"{'-':>11s} {'-':>9s} {'-':>8s}")
        lo, hi = r["ci"]
        print(f"{r['label']:34s} {bal} | {r['block']:5d} {r['bits']:9.2f} "
              f"[{lo:7.2f}, {hi:7.2f}] {r['per_token']:10.4f}")


def plot(rows: list[dict], path: str) -> None:
    """Leakage per token against MaxVio per micro-batch, one marker per router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        if "maxvio" not in r:
            continue
        ax.scatter(r["maxvio_mb"], r["per_token"], s=30)
        ax.annotate(r["label"], (r["maxvio_mb"], r["per_token"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("MaxVio per micro-batch (64 tokens)")
    ax.set_ylabel("leakage, bits per token")
    ax.set_title(f"balance / leakage frontier: N={N}, K={K}, Zipf(1) popularity")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    """Print the frontier table (and save the figure with ``--figure``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--contexts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = frontier(args.steps, args.draws, args.contexts, args.seed)
    print_table(rows)
    if args.figure:
        plot(rows, args.figure)
        print(f"\nfigure: {args.figure}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
