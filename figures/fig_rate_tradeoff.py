"""Figure: the sign rule's update-rate trade-off (the shape of Loss-Free Fig. 4).

The sign law on drifting Zipf traffic (N = 64, K = 6; random-walk drift of
the popularity) at rates from 1e-4 to 3e-2. Left: MaxVio_batch against step
for three rates (mean of the replicas, band: their range). Right: the steady
MaxVio_batch and MaxVio_global (last quarter of the run) against the rate,
with 95 % intervals over replicas: a small rate tracks the drift too slowly,
a large one oscillates. Writes ``rate_tradeoff.{pdf,png}`` and its numbers.

    python figures/fig_rate_tradeoff.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

from _common import Timer, fmt, fmt_rate, setup
from routesim import config_from_dict
from routesim.plot import figure_size, steady_values, sweep_plot, timeseries_plot

RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def config(quick: bool):
    return config_from_dict({
        "run": {"steps": 150 if quick else 500, "replicas": 3, "seed": 1,
                "record_displacement": False, "global_window": 30 if quick else 100},
        "batch": {"num_sequences": 4 if quick else 16, "seq_length": 128 if quick else 256},
        "router": {"num_experts": 32 if quick else 64, "topk": 4 if quick else 6},
        "traffic": {"skew": "zipf", "zipf_exponent": 0.5, "drift": "random_walk",
                    "drift_std": 0.005},
        "controller": {"type": "sign"},
        "sweep": {"controller.bias_update_rate": RATES},
    })


def main(argv: list[str] | None = None) -> int:
    ctx = setup("rate_tradeoff", __doc__, argv)
    with Timer(ctx.name):
        cfg = config(ctx.quick)
        ds = ctx.simulate(cfg)
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=figure_size(2, 0.36),
                                          layout="constrained")
        three = ds.isel(point=[0, 2, 4])
        three = three.assign_coords(label=("point", [
            f"u = {u:g}" for u in three["controller.bias_update_rate"].values]))
        ts = timeseries_plot(three, "maxvio_batch", ax=left, smooth=10, log=True)
        left.set_ylabel(r"MaxVio$_\mathrm{batch}$ (10-step mean)")
        window = cfg.run.steps // 4
        sw = sweep_plot(ds, "maxvio_batch", "controller.bias_update_rate", ax=right,
                        window=window, logx=True, logy=True, legend=False)
        sg = sweep_plot(ds, "maxvio_global", "controller.bias_update_rate", ax=right,
                        window=window, logx=True, logy=True, legend=False)
        handles = [next(iter(r.lines.values()))[0] for r in (sw, sg)]
        right.legend(handles, [r"MaxVio$_\mathrm{batch}$",
                               rf"MaxVio$_\mathrm{{global}}$ ({cfg.run.global_window} steps)"])
        right.set_xlabel("bias update rate u")
        right.set_ylabel(f"steady value (last {window} steps)")
        for p in ctx.save(fig):
            print(p)
        batch = steady_values(ds, "maxvio_batch", window).mean("replica").values
        glob = steady_values(ds, "maxvio_global", window).mean("replica").values
        best = int(np.argmin(glob))
        print(ts.band, "|", sw.band)
        for u, b, g in zip(RATES, batch, glob):
            print(f"u = {u:<7g} MaxVio_batch {b:.4f}  MaxVio_global {g:.4f}")
        ctx.numbers({
            "RateExperts": str(cfg.router.num_experts), "RateTopk": str(cfg.router.topk),
            "RateTokens": str(cfg.batch.num_sequences * cfg.batch.seq_length),
            "RateSteps": str(cfg.run.steps), "RateReplicas": str(cfg.run.replicas),
            "RateWindow": str(window),
            "RateLowBatch": fmt(batch[0]), "RateMidBatch": fmt(batch[2]),
            "RateHighBatch": fmt(batch[4]), "RateTopBatch": fmt(batch[-1]),
            "RateBest": fmt_rate(RATES[best]), "RateBestGlobal": fmt(glob[best]),
            "RateLowGlobal": fmt(glob[0]), "RateTopGlobal": fmt(glob[-1]),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
