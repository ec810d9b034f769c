"""Figure: the sign law's limit cycle, amplitude against rate for several N.

The sign law (Megatron's ``b += u sign(mean c - c)``) on Zipf traffic
(exponent 1, K = 2) for N = 8, 16 and 32 experts. Lines: the stochastic
mean-field chain (``routesim.theory.relay_stationary`` on the exact
one-expert response, with the counting noise of the batch); points: the
engine's RMS bias oscillation about its mean (second half of the run, 95 %
intervals over replicas). Rates up to 0.7 of the proportional law's
critical rate of each N. Writes ``sign_cycles.{pdf,png}`` and its numbers.

    python figures/fig_sign_cycles.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

from _common import Timer, fmt, setup
from routesim import config_from_dict
from routesim.plot import limit_cycle_plot
from routesim.theory import (critical_rate, equilibrium, jacobian, load_error_covariance,
                             loop_gains, map_response, relay_stationary, selection_covariance)
from routesim.traffic import popularity

K, ZIPF = 2, 1.0


def predict(n: int, tokens: int, rates: list[float]) -> dict:
    mu = popularity("zipf", n, zipf_exponent=ZIPF)
    bstar = equilibrium(mu, topk=K)
    jac = jacobian(mu, bstar, topk=K)
    a = (n / K) * jac
    u_c = float(critical_rate("proportional", loop_gains(jac, K)[-1], num_experts=n))
    noise = load_error_covariance(selection_covariance(mu, bstar, topk=K), tokens=tokens, topk=K)
    sigma = np.sqrt(np.diag(noise))
    resp = map_response(mu, bstar, topk=K, nodes=48)
    rms = [relay_stationary(np.diag(a), sigma, u, response=resp)["bias_rms"] for u in rates]
    return {"u_c": u_c, "bias_rms": rms, "r": [float(np.mean(np.diag(a)) * u / np.mean(sigma))
                                                for u in rates]}


def main(argv: list[str] | None = None) -> int:
    ctx = setup("sign_cycles", __doc__, argv)
    with Timer(ctx.name):
        sizes = [8, 16] if ctx.quick else [8, 16, 32]
        seqs, length = (8, 128) if ctx.quick else (16, 256)
        steps = 160 if ctx.quick else 400
        rates = [float(x) for x in np.geomspace(4e-3, 6e-2, 4 if ctx.quick else 6)]
        pred = np.full((len(sizes), len(rates)), np.nan)
        sim = np.full((len(sizes), len(rates), 3), np.nan)
        ratios = []
        for i, n in enumerate(sizes):
            th = ctx.cached("sign_cycle_theory", {"n": n, "tokens": seqs * length,
                                                  "rates": rates}, lambda: predict(
                                                      n, seqs * length, rates))
            keep = [j for j, u in enumerate(rates) if u <= 0.7 * th["u_c"]]
            cfg = config_from_dict({
                "run": {"steps": steps, "replicas": 3, "seed": 4, "record_displacement": False,
                        "bias_dtype": "float64"},
                "batch": {"num_sequences": seqs, "seq_length": length},
                "router": {"num_experts": n, "topk": K},
                "traffic": {"skew": "zipf", "zipf_exponent": ZIPF},
                "controller": {"type": "sign"},
                "sweep": {"controller.bias_update_rate": [rates[j] for j in keep]},
            })
            ds = ctx.simulate(cfg)
            b = ds["bias"].values[steps // 2:]  # (S, P, R, E)
            c = b - b.mean(-1, keepdims=True)
            amp = np.sqrt(np.mean((c - c.mean(0)) ** 2, axis=(0, 3)))  # (P, R)
            for jj, j in enumerate(keep):
                pred[i, j] = th["bias_rms"][j]
                sim[i, j] = amp[jj]
                ratios.append(amp[jj].mean() / th["bias_rms"][j])
        coords = {"N": sizes, "u": rates}
        res = limit_cycle_plot(xr.DataArray(pred, dims=("N", "u"), coords=coords),
                               xr.DataArray(sim, dims=("N", "u", "replica"), coords=coords),
                               x="u", xlabel=r"sign-law rate $u$",
                               ylabel="RMS bias oscillation")
        for p in ctx.save(res.figure):
            print(p)
        ratios = np.array(ratios)
        print(f"simulated/predicted amplitude: {ratios.min():.3f} .. {ratios.max():.3f}")
        ctx.numbers({
            "CycleRatioMin": fmt(ratios.min(), 3), "CycleRatioMax": fmt(ratios.max(), 3),
            "CycleWorst": f"{100 * np.max(np.abs(ratios - 1)):.0f}",
            "CycleCount": str(ratios.size), "CycleTokens": str(seqs * length),
            "CycleSizes": ", ".join(str(n) for n in sizes), "CycleTopk": str(K),
            "CycleSteps": str(steps), "CycleZipf": f"{ZIPF:g}", "CycleReplicas": "3",
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
