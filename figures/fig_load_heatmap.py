"""Figure: what the sign controller does to each expert, loads and biases over steps.

The quickstart's traffic (N = 64, K = 6, Zipf exponent 0.8, 4096 tokens per
step) under the sign law (u = 1e-3). Top: each expert's load relative to the
mean, ``c_i / mean(c) - 1``, over steps (one replica; experts ordered by
popularity, most popular at the bottom). Bottom: each expert's bias minus
the mean bias: the popular experts are pushed down, the rare ones up,
until the loads even out. Writes ``load_heatmap.{pdf,png}`` and its numbers.

    python figures/fig_load_heatmap.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

from _common import Timer, fmt, fmt_rate, setup
from routesim import config_from_dict
from routesim.plot import bias_plot, figure_size, load_heatmap


def config(quick: bool):
    return config_from_dict({
        "run": {"steps": 150 if quick else 300, "replicas": 1, "seed": 2024,
                "record_displacement": False},
        "batch": {"num_sequences": 8 if quick else 16, "seq_length": 128 if quick else 256},
        "router": {"num_experts": 32 if quick else 64, "topk": 4 if quick else 6},
        "traffic": {"skew": "zipf", "zipf_exponent": 0.8},
        "controller": {"type": "sign", "bias_update_rate": 2e-3 if quick else 1e-3},
    })


def main(argv: list[str] | None = None) -> int:
    ctx = setup("load_heatmap", __doc__, argv)
    with Timer(ctx.name):
        cfg = config(ctx.quick)
        ds = ctx.simulate(cfg)
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=figure_size(1, 1.1), sharex=True,
                                          layout="constrained")
        heat = load_heatmap(ds, ax=top, limit=1.0)
        top.set_xlabel("")
        bias_plot(ds, ax=bottom)
        for p in ctx.save(fig):
            print(p)
        err = ds["expert_load"].isel(point=0, replica=0).astype(float)
        err = np.abs(err / err.mean("expert") - 1).max("expert").values
        print(f"largest relative load error: first step {err[0]:.3f}, last 10 steps "
              f"{err[-10:].mean():.3f}; colour range {heat.lines['loads'][0].get_clim()}")
        ctx.numbers({"HeatFirst": fmt(err[0]), "HeatLast": fmt(err[-10:].mean()),
                     "HeatExperts": str(cfg.router.num_experts), "HeatTopk": str(cfg.router.topk),
                     "HeatRate": fmt_rate(cfg.controller.bias_update_rate),
                     "HeatTokens": str(cfg.batch.num_sequences * cfg.batch.seq_length)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
