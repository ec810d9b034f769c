"""Figure: leakage of Expert Choice routing against the sparsity K/N.

N = 16 experts, K from 1 to 6 (R = K/N from 1/16 to 3/8), blocks of 64 tokens
(two sequences of 32 split at position 16). Lines: the Loss-Free paper's
bound ``K log2((1 - R)/R)`` bits per token and the exact capacity of an
Expert Choice block, ``log2 C(T, KT/N)^N / T``. Points: the measured entropy
of the early tokens' Expert Choice routing when the late tokens are redrawn
(per-expert Miller-Madow estimate, bits per token of the block, bootstrap
95 % interval), and the same measurement for causal token choice with the
bias of the previous block (triangles at the bottom: it measures 0).
Writes ``leakage.{pdf,png}`` and its numbers.

    python figures/fig_leakage.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

from _common import Timer, fmt, setup
from routesim.config import config_from_dict
from routesim.leakage import measure_leakage
from routesim.plot import leakage_plot
from routesim.theory import leakage_bound, leakage_exact

N, SEQS, LENGTH, SPLIT = 16, 2, 32, 16


def config(k: int, router_type: str):
    router = {"num_experts": N, "topk": k, "score_function": "sigmoid"}
    if router_type == "expert_choice":
        router["router_type"] = "expert_choice"
    return config_from_dict({"run": {"steps": 1},
                             "batch": {"num_sequences": SEQS, "seq_length": LENGTH},
                             "router": router})


def measure(k: int, draws: int, contexts: int, resamples: int) -> dict:
    ec = measure_leakage(config(k, "expert_choice"), SPLIT, draws, 0, method="per_expert",
                         contexts=contexts, n_resamples=resamples)
    tc = measure_leakage(config(k, "token_choice"), SPLIT, draws, 0, timing="lagged",
                         contexts=contexts, n_resamples=resamples)
    t = SEQS * LENGTH
    return {"ec": ec.per_token, "ec_lo": ec.ci[0] / t, "ec_hi": ec.ci[1] / t,
            "tc": tc.per_token}


def main(argv: list[str] | None = None) -> int:
    ctx = setup("leakage", __doc__, argv)
    with Timer(ctx.name):
        ks = [1, 2, 4, 6]
        draws, contexts, resamples = (300, 1, 100) if ctx.quick else (2000, 4, 500)
        meas = [ctx.cached("leakage", {"k": k, "draws": draws, "contexts": contexts,
                                       "resamples": resamples},
                           lambda k=k: measure(k, draws, contexts, resamples)) for k in ks]
        fine = np.arange(1, 8)
        ratio = fine / N
        bound = np.array([leakage_bound(N, int(k)) for k in fine])
        exact = np.array([float(leakage_exact(SEQS * LENGTH, N, int(k))) for k in fine])
        r = np.array(ks) / N
        res = leakage_plot(ratio, bound, exact,
                           measured=(r, [m["ec"] for m in meas], [m["ec_lo"] for m in meas],
                                     [m["ec_hi"] for m in meas]),
                           causal=(r, [m["tc"] for m in meas]),
                           exact_label=f"exact capacity, block of {SEQS * LENGTH}")
        res.axes.set_xticks(r, [f"{k}/{N}" for k in ks])
        for p in ctx.save(res.figure):
            print(p)
        for k, m in zip(ks, meas):
            print(f"K={k}: bound {leakage_bound(N, k):.3f}  exact "
                  f"{float(leakage_exact(SEQS * LENGTH, N, k)):.3f}  measured EC {m['ec']:.4f} "
                  f"[{m['ec_lo']:.4f}, {m['ec_hi']:.4f}]  causal TC {m['tc']:.4f}")
        two = meas[ks.index(2)]
        ctx.numbers({
            "LeakN": str(N), "LeakKs": ", ".join(str(k) for k in ks), "LeakBlock": str(SEQS * LENGTH), "LeakDraws": str(draws),
            "LeakBoundTwo": fmt(leakage_bound(N, 2), 3),
            "LeakExactTwo": fmt(float(leakage_exact(SEQS * LENGTH, N, 2)), 3),
            "LeakMeasuredTwo": fmt(two["ec"], 2),
            "LeakCausalMax": fmt(max(m["tc"] for m in meas), 2),
            "LeakNineLayers": fmt(9 * leakage_bound(N, 2), 3), "LeakLayers": "9", "LeakK": "2",
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
