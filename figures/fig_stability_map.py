"""Figure: stability map of the EMA law over (rate, momentum), theory boundary over simulation.

The EMA-filtered law (axolotl) on Zipf traffic (N = 16, K = 2, exponent 1)
over a grid of rates and momenta: colour is the engine's steady MaxVio_batch
(last quarter, mean of two replicas; log scale), the line is the linear
theory's critical rate ``u_c = 2 N (1 + beta) / ((1 - beta) lambda_max)``
with ``lambda_max`` the largest gain of ``(N/K) J`` at the equilibrium.
Writes ``stability_map.{pdf,png}`` and its numbers.

    python figures/fig_stability_map.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

from _common import Timer, fmt, setup
from routesim import config_from_dict
from routesim.plot import grid_view, stability_map, steady_values
from routesim.theory import critical_rate, equilibrium, jacobian, loop_gains
from routesim.traffic import popularity

N, K, ZIPF = 16, 2, 1.0


def lam_max() -> float:
    mu = popularity("zipf", N, zipf_exponent=ZIPF)
    return float(loop_gains(jacobian(mu, equilibrium(mu, topk=K), topk=K), K)[-1])


def main(argv: list[str] | None = None) -> int:
    ctx = setup("stability_map", __doc__, argv)
    with Timer(ctx.name):
        lam = lam_max()
        u0 = float(critical_rate("ema", lam, num_experts=N, momentum=0.0))
        momenta = [0.0, 0.3, 0.6, 0.9] if ctx.quick else [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9]
        top = float(critical_rate("ema", lam, num_experts=N, momentum=max(momenta)))
        rates = list(np.geomspace(0.2 * u0, 2.0 * top, 7 if ctx.quick else 11))
        cfg = config_from_dict({
            "run": {"steps": 120 if ctx.quick else 300, "replicas": 2, "seed": 3,
                    "record_displacement": False, "bias_dtype": "float64"},
            "batch": {"num_sequences": 8 if ctx.quick else 16, "seq_length": 128 if ctx.quick
                      else 256},
            "router": {"num_experts": N, "topk": K},
            "traffic": {"skew": "zipf", "zipf_exponent": ZIPF},
            "controller": {"type": "ema"},
            "sweep": {"controller.momentum": momenta, "controller.bias_update_rate": rates},
        })
        ds = ctx.simulate(cfg)
        grid = grid_view(ds)
        out = steady_values(grid, "maxvio_batch").mean("replica")
        out = out.transpose("controller.momentum", "controller.bias_update_rate")
        out = out.rename({"controller.momentum": r"EMA momentum $\beta$",
                          "controller.bias_update_rate": r"bias update rate $u$"})
        beta = np.linspace(0.0, max(momenta) + 0.04, 60)
        u_c = [float(critical_rate("ema", lam, num_experts=N, momentum=b)) for b in beta]
        res = stability_map(out, boundary=(u_c, beta),
                            colorbar_label=r"steady MaxVio$_\mathrm{batch}$",
                            boundary_label=r"theory $u_c(\beta)$")
        res.legend.set_frame_on(True)
        for p in ctx.save(res.figure):
            print(p)
        # agreement: share of cells on the predicted side (unstable: MaxVio > 2x the grid's floor)
        vals = out.values
        floor = np.nanmin(vals)
        sim_unstable = vals > 2.0 * floor
        uc_m = np.array([float(critical_rate("ema", lam, num_experts=N, momentum=b))
                         for b in momenta])
        pred_unstable = np.asarray(rates)[None, :] > uc_m[:, None]
        agree = float(np.mean(sim_unstable == pred_unstable))
        print(f"lambda_max = {lam:.4f}, u_c(beta=0) = {u0:.4g}; cells on the predicted side: "
              f"{agree:.0%}")
        ctx.numbers({
            "StabLamMax": fmt(lam, 3), "StabUcZero": fmt(u0, 2),
            "StabUcTop": fmt(top, 2), "StabTopMomentum": f"{max(momenta):g}",
            "StabAgree": f"{100 * agree:.0f}", "StabCells": str(vals.size),
            "StabFloor": fmt(floor),
            "StabExperts": str(N), "StabTopk": str(K),
            "StabTokens": str(cfg.batch.num_sequences * cfg.batch.seq_length),
            "StabSteps": str(cfg.run.steps), "StabReplicas": str(cfg.run.replicas),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
