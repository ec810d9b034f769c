"""Figure: the mean-field surrogate against the exact engine on the same config.

The sign law (u = 1e-3) on linearly skewed traffic (N = 64, K = 8, spread
0.5, 65536 tokens per step; ``--quick``: N = 32, K = 4, 1024 tokens, u = 2e-3): the exact engine draws every token, the mean-field engine draws the
loads from ``T K p(b)`` plus Gaussian fluctuations with the covariance of
top-K selection. Left: MaxVio_batch against step for both engines (mean of
the replicas, band: their range). Right: the steady mean and standard
deviation of MaxVio_batch and the settling step, surrogate over exact.
Writes ``meanfield_vs_exact.{pdf,png}`` and its numbers.

    python figures/fig_meanfield_vs_exact.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

from _common import Timer, fmt, fmt_rate, setup
from routesim import config_from_dict
from routesim.engines.meanfield import compare_engines
from routesim.plot import figure_size, timeseries_plot


def config(quick: bool, engine: str):
    return config_from_dict({
        "run": {"steps": 120 if quick else 600, "replicas": 2 if quick else 4, "seed": 7,
                "engine": engine, "record_displacement": False},
        "batch": {"num_sequences": 8 if quick else 256, "seq_length": 128 if quick else 256},
        "router": {"num_experts": 32 if quick else 64, "topk": 4 if quick else 8},
        "traffic": {"skew": "linear", "linear_spread": 0.5},
        "controller": {"type": "sign", "bias_update_rate": 2e-3 if quick else 1e-3},
    })


def main(argv: list[str] | None = None) -> int:
    ctx = setup("meanfield_vs_exact", __doc__, argv)
    with Timer(ctx.name):
        ex = ctx.simulate(config(ctx.quick, "exact"))
        mf = ctx.simulate(config(ctx.quick, "meanfield"))
        steps = ex.sizes["step"]
        stats = compare_engines(ex, mf, burn_in=steps // 2)
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=figure_size(2, 0.36),
                                          layout="constrained",
                                          gridspec_kw={"width_ratios": [2, 1]})
        both = xr.concat([ex["maxvio_batch"], mf["maxvio_batch"]], dim="point")
        both = both.to_dataset().assign_coords(label=("point", ["exact", "mean field"]),
                                               step=ex["step"].values)
        ts = timeseries_plot(both, "maxvio_batch", ax=left, smooth=5, log=True)
        left.set_ylabel(r"MaxVio$_\mathrm{batch}$ (5-step mean)")
        names = list(stats)
        rel = [stats[k][1] / stats[k][0] for k in names]
        right.plot(np.arange(len(names)), rel, "o", color="C2", ms=6, label="mean field / exact")
        right.axhspan(0.9, 1.1, color="0.85", lw=0, label=r"$\pm$10 %")
        right.axhline(1.0, color="0.3", lw=0.8)
        right.set_xticks(np.arange(len(names)), [k.replace("_", " ") for k in names])
        right.set_ylabel("mean field / exact")
        right.set_ylim(min(0.75, min(rel) * 0.95), max(1.25, max(rel) * 1.05))
        right.set_xlim(-0.5, len(names) - 0.5)
        right.legend(loc="lower center", frameon=True)
        right.grid(axis="x", visible=False)
        for p in ctx.save(fig):
            print(p)
        print(ts.band)
        for k in names:
            print(f"{k:<14} exact {stats[k][0]:.4f}  meanfield {stats[k][1]:.4f}")
        cfg = config(ctx.quick, "exact")
        worst = max(abs(r - 1) for r in rel)
        ctx.numbers({
            "MfTokens": str(cfg.batch.num_sequences * cfg.batch.seq_length),
            "MfSteps": str(steps), "MfExperts": str(cfg.router.num_experts),
            "MfTopk": str(cfg.router.topk), "MfRate": fmt_rate(cfg.controller.bias_update_rate), "MfWorst": f"{100 * worst:.0f}",
            "MfExactMean": fmt(stats[names[0]][0], 3), "MfFieldMean": fmt(stats[names[0]][1], 3),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
