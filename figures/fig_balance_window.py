"""Figure: the balance window, micro-batch against global batch, with domain-clustered micro-batches.

Topic-mixture traffic (8 topics, N = 16, K = 2) where every micro-batch of
2 sequences holds one topic (``traffic.topic_by_micro_batch``), as when data
are packed by domain. The sign controller (u = 1e-2) counts loads and
updates its bias after every micro-batch or once per global batch of 8
micro-batches. Left: MaxVio of the global batch against step (10-step
mean; band: range of the replicas). Right: the steady MaxVio measured over
each micro-batch and over the global batch, for each window and without a
controller. Writes ``balance_window.{pdf,png}`` and its numbers.

    python figures/fig_balance_window.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

from _common import Timer, fmt, fmt_rate, setup
from routesim import config_from_dict
from routesim.plot import figure_size, replica_interval, steady_values, timeseries_plot

MB = 2
RATE = 1e-2


def config(quick: bool, window: str):
    return config_from_dict({
        "run": {"steps": 120 if quick else 400, "replicas": 3, "seed": 9,
                "record_displacement": False, "common_random_numbers": True},
        "batch": {"num_sequences": 16, "seq_length": 32 if quick else 128,
                  "micro_batch_size": MB, "computation_batch_sizes": [MB]},
        "router": {"num_experts": 16, "topk": 2},
        "traffic": {"kind": "features", "num_topics": 8, "topic_by_micro_batch": True},
        "controller": {"window": window},
        "sweep": {"mode": "zip", "controller.type": ["none", "sign"],
                  "controller.bias_update_rate": [0.0, RATE]},
    })


def main(argv: list[str] | None = None) -> int:
    ctx = setup("balance_window", __doc__, argv)
    with Timer(ctx.name):
        runs = {w: ctx.simulate(config(ctx.quick, w)) for w in ("micro_batch", "global_batch")}
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=figure_size(2, 0.36),
                                          layout="constrained")
        parts = [runs["global_batch"].isel(point=[0]), runs["global_batch"].isel(point=[1]),
                 runs["micro_batch"].isel(point=[1])]
        names = ["no controller", "sign, global-batch window", "sign, micro-batch window"]
        shown = xr.concat([p.drop_vars(["label"]) for p in parts], dim="point")
        shown = shown.assign_coords(label=("point", names))
        ts = timeseries_plot(shown, "maxvio_batch", ax=left, smooth=10, log=True)
        left.set_ylabel(r"MaxVio of the global batch")
        steady = {}
        for (name, ds, j) in [("none", runs["global_batch"], 0),
                              ("global", runs["global_batch"], 1),
                              ("micro", runs["micro_batch"], 1)]:
            glob = steady_values(ds, "maxvio_batch").isel(point=j)
            micro = steady_values(ds, "maxvio_compute").isel(point=j, compute_batch=0)
            steady[name] = {"global": replica_interval(glob), "micro": replica_interval(micro)}
        x = np.arange(3)
        for k, (level, label) in enumerate([("micro", "over each micro-batch"),
                                            ("global", "over the global batch")]):
            m = np.array([float(steady[n][level][0]) for n in ("none", "global", "micro")])
            lo = np.array([float(steady[n][level][1]) for n in ("none", "global", "micro")])
            hi = np.array([float(steady[n][level][2]) for n in ("none", "global", "micro")])
            right.bar(x + (k - 0.5) * 0.38, m, 0.36, yerr=[m - lo, hi - m], capsize=2,
                      label=label, color=f"C{k + 4}")
        right.set_xticks(x, ["no controller", "global-batch\nwindow", "micro-batch\nwindow"])
        right.set_ylabel("steady MaxVio")
        right.legend(title="MaxVio measured", loc="upper right")
        right.grid(axis="x", visible=False)
        for p in ctx.save(fig):
            print(p)
        print(ts.band)
        for n, v in steady.items():
            print(f"{n:<7} micro {float(v['micro'][0]):.3f}  global {float(v['global'][0]):.3f}")
        cfg = config(ctx.quick, "micro_batch")
        ctx.numbers({
            "WinMicroBatches": str(cfg.batch.num_sequences // MB), "WinRate": fmt_rate(RATE),
            "WinTopics": str(cfg.traffic.num_topics), "WinSteps": str(cfg.run.steps),
            "WinReplicas": str(cfg.run.replicas),
            "WinTokens": str(cfg.batch.num_sequences * cfg.batch.seq_length),
            "WinGlobalGlobal": fmt(float(steady["global"]["global"][0])),
            "WinGlobalMicro": fmt(float(steady["global"]["micro"][0])),
            "WinMicroGlobal": fmt(float(steady["micro"]["global"][0])),
            "WinMicroMicro": fmt(float(steady["micro"]["micro"][0])),
            "WinNoneGlobal": fmt(float(steady["none"]["global"][0])),
            "WinNoneMicro": fmt(float(steady["none"]["micro"][0])),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
