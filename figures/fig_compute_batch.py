"""Figure: MaxVio of computation batches against their size (the shape of Loss-Free Fig. 5).

The learning router of the alpha dilemma (N = 16, K = 2, rich-get-richer
quality), trained with the balance loss (alpha = 1e-2 and 1e-3) or balanced by
the sign controller (u = 1e-3, no penalty). Each step's batch is cut into
computation batches of 1 to all sequences; the figure shows the steady mean
MaxVio over those batches against their tokens, with 95 % intervals over
replicas and the ``1/sqrt(tokens)`` slope of pure counting noise. Writes
``compute_batch.{pdf,png}`` and its numbers.

    python figures/fig_compute_batch.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

from _common import ROOT, Timer, fmt, setup
from routesim import load_config
from routesim.plot import compute_batch_plot, steady_window


def config(quick: bool):
    cfg = load_config(ROOT / "examples" / "alpha_dilemma.toml")
    seqs, length = (16, 32) if quick else (32, 64)
    sizes = tuple(2 ** i for i in range(int(np.log2(seqs)) + 1))
    return cfg.replace(**{
        "run.steps": 150 if quick else 600, "run.replicas": 3,
        "run.global_window": 50 if quick else 150,
        "batch.num_sequences": seqs, "batch.seq_length": length,
        "batch.computation_batch_sizes": sizes,
        "sweep.labels": ("balance loss, alpha = 1e-2", "balance loss, alpha = 1e-3",
                         "sign controller, u = 1e-3"),
        "sweep.parameters": {"penalty.alpha": [1e-2, 1e-3, 0.0],
                             "controller.type": ["none", "none", "sign"],
                             "controller.bias_update_rate": [0.0, 0.0, 1e-3]},
    })


def main(argv: list[str] | None = None) -> int:
    ctx = setup("compute_batch", __doc__, argv)
    with Timer(ctx.name):
        cfg = config(ctx.quick)
        ds = ctx.simulate(cfg)
        window = cfg.run.steps // 4
        res = compute_batch_plot(ds, window=window)
        res.axes.set_ylabel(r"MaxVio$_\mathrm{compute}$ (steady mean)")
        for p in ctx.save(res.figure):
            print(p)
        mv = ds["maxvio_compute"].isel(step=steady_window(ds.sizes["step"], window))
        mv = mv.mean(("step", "replica")).values  # (point, batch)
        tokens = np.asarray(ds["compute_batch"].values) * cfg.batch.seq_length
        for j, label in enumerate(ds["label"].values):
            print(label, " ".join(f"{t}:{m:.3f}" for t, m in zip(tokens, mv[j])))
        ctx.numbers({
            "CbSmallTokens": str(int(tokens[0])), "CbLargeTokens": str(int(tokens[-1])),
            "CbAuxSmall": fmt(mv[0, 0]), "CbAuxLarge": fmt(mv[0, -1]),
            "CbSignSmall": fmt(mv[2, 0]), "CbSignLarge": fmt(mv[2, -1]),
            "CbAuxRatio": fmt(mv[0, -1] / mv[2, -1]),
            "CbSqrtRatio": fmt(float(np.sqrt(tokens[-1] / tokens[0]))),
            "CbSignRatio": fmt(mv[2, 0] / mv[2, -1]),
            "CbAuxSmallRatio": fmt(mv[0, 0] / mv[0, -1]),
            "CbSteps": str(cfg.run.steps), "CbReplicas": str(cfg.run.replicas),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
