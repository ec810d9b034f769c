"""Figure: the controller zoo, settling time against steady MaxVio, with and without drift.

Every bias law of ``examples/controllers_zoo.toml`` (N = 32, K = 4, linear skew
1.5, micro-batches of 4 sequences) runs twice: on stationary traffic and with
the popular experts reshuffled at step 200. Left: MaxVio_batch against step
with the switch (replica 0, 5-step trailing mean). Right: each law's settling
time against its steady MaxVio_batch (filled: stationary; open: after the
switch, time counted from it). Writes ``controller_zoo.{pdf,png}``, the
table ``tab_zoo.tex`` (the columns of ``routesim run``, from
``routesim.analysis.steady`` and ``maxvio_global_final``, beside the settling times) and the zoo's numbers.

    python figures/fig_controller_zoo.py [--quick]
"""

from __future__ import annotations

import math
import sys

import numpy as np

from _common import ROOT, Timer, fmt, settling_step, setup
from routesim import load_config
from routesim.analysis import steady as steady_state
from routesim.plot import figure_size, tidy_log_axes, timeseries_plot

NAMES = {"none": "none", "sign": "sign", "sign_centred": "sign (centred)",
         "proportional": "proportional", "ema": "EMA", "rms": "RMS-normalised",
         "momentum_tanh": "momentum-tanh", "quantile": "quantile"}


def configs(quick: bool):
    drift = load_config(ROOT / "examples" / "controllers_zoo.toml")
    if quick:
        drift = drift.replace(**{"run.steps": 120, "traffic.regime_steps": (60,),
                                 "batch.num_sequences": 8, "batch.seq_length": 64})
    still = drift.replace(**{"traffic.drift": "none", "traffic.regime_steps": ()})
    return still, drift


def summarise(ds, start_step: int) -> dict:
    """Per law: settling step (from ``start_step``), steady MaxVio_batch, the CLI's columns."""
    steps = ds.sizes["step"]
    mv = ds["maxvio_batch"].mean("replica").values  # (step, point)
    out = {}
    cli = steady_state(ds, "maxvio_batch")  # what ``routesim run`` prints
    for j, law in enumerate(ds["controller.type"].values):
        seg = mv[start_step:, j]
        steady = float(seg[-max(1, seg.size // 4):].mean())
        settle = settling_step(seg, steady, float(seg[:3].mean()))
        if law == "none":
            settle = math.inf
        out[str(law)] = {
            "rate": float(ds["controller.bias_update_rate"].values[j]),
            "settle": settle, "steady": steady,
            "cli_batch": (float(cli["mean"].isel(point=j))
                          if bool(cli["settled"].isel(point=j)) else math.nan),
            "cli_global": float(ds["maxvio_global_final"].isel(point=j).mean()),
            "global": float(ds["maxvio_global_run"].isel(point=j).mean()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ctx = setup("controller_zoo", __doc__, argv)
    with Timer(ctx.name):
        still_cfg, drift_cfg = configs(ctx.quick)
        switch = drift_cfg.traffic.regime_steps[0]
        still, drift = ctx.simulate(still_cfg), ctx.simulate(drift_cfg)
        s0, s1 = summarise(still, 0), summarise(drift, switch)
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=figure_size(2, 0.36),
                                          layout="constrained")
        shown = drift.isel(replica=[0]).assign_coords(
            label=("point", [NAMES[str(x)] for x in drift["controller.type"].values]))
        timeseries_plot(shown, "maxvio_batch", ax=left, smooth=5, log=True, band="none",
                        legend=False)
        left.axvline(switch, color="0.4", ls=":", lw=1)
        left.text(switch, left.get_ylim()[1], " switch", va="top", fontsize=7, color="0.3")
        left.set_ylabel(r"MaxVio$_\mathrm{batch}$")
        laws = [law for law in s0 if law != "none"]
        right.plot([], [], color="C0", label="none (left)")
        colours = {law: f"C{i}" for i, law in enumerate(s0)}
        for law in laws:
            right.plot(s0[law]["settle"], s0[law]["steady"], "o", color=colours[law],
                       label=NAMES[law])
            right.plot(s1[law]["settle"], s1[law]["steady"], "o", mfc="none",
                       color=colours[law])
            right.plot([s0[law]["settle"], s1[law]["settle"]],
                       [s0[law]["steady"], s1[law]["steady"]], color=colours[law], lw=0.6,
                       alpha=0.6)
        right.plot([], [], "o", color="0.3", label="stationary")
        right.plot([], [], "o", mfc="none", color="0.3", label="after the switch")
        right.set_xscale("symlog", linthresh=1)
        right.set_yscale("log")
        tidy_log_axes(right)
        right.set_xlabel("settling time (steps)")
        right.set_ylabel(r"steady MaxVio$_\mathrm{batch}$")
        right.legend(fontsize=6, ncol=2, loc="upper left")
        for p in ctx.save(fig):
            print(p)

        def cell(x: float, digits: int = 2) -> str:
            return "--" if not math.isfinite(x) else f"${fmt(x, digits)}$"

        rows = []
        for law in s0:
            r0, r1 = s0[law], s1[law]
            settle0 = "--" if not math.isfinite(r0["settle"]) else f"{r0['settle']:.0f}"
            settle1 = "--" if not math.isfinite(r1["settle"]) else f"{r1['settle']:.0f}"
            rows.append(f"{NAMES[law]} & {cell(r0['rate'], 1) if r0['rate'] else '--'} & "
                        f"{settle0} & {cell(r0['steady'])} & {settle1} & {cell(r1['steady'])} & "
                        f"{cell(r1['cli_batch'], 4) if math.isfinite(r1['cli_batch']) else 'unsettled'}"
                        f" & {cell(r1['cli_global'], 4)} \\\\")
        ctx.table("tab_zoo", "\\begin{tabular}{lrrrrrrr}\n\\toprule\n"
                  " & & \\multicolumn{2}{c}{stationary} & \\multicolumn{4}{c}{regime switch}"
                  " \\\\\n\\cmidrule(lr){3-4}\\cmidrule(lr){5-8}\n"
                  "law & $u$ & settle & MaxVio & resettle & MaxVio & "
                  "MaxVio$_\\mathrm{batch}^\\mathrm{steady}$ & MaxVio$_\\mathrm{global}^\\mathrm{end}$ \\\\\n\\midrule\n"
                  + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n")
        finite = {k: v for k, v in s0.items() if math.isfinite(v["settle"]) and k != "none"}
        fastest = min(finite, key=lambda k: finite[k]["settle"])
        best = min((k for k in s1 if k != "none"), key=lambda k: s1[k]["steady"])
        ctx.numbers({
            "ZooSteps": f"{drift_cfg.run.steps}",
            "ZooSwitch": f"{switch}",
            "ZooExperts": f"{drift_cfg.router.num_experts}",
            "ZooTopk": f"{drift_cfg.router.topk}",
            "ZooTokens": f"{drift_cfg.batch.num_sequences * drift_cfg.batch.seq_length}",
            "ZooNoneSteady": fmt(s0["none"]["steady"]),
            "ZooSignSteady": fmt(s0["sign"]["steady"]),
            "ZooCentredSteady": fmt(s0["sign_centred"]["steady"]),
            "ZooPropSteady": fmt(s0["proportional"]["steady"]),
            "ZooSignGlobal": fmt(s1["sign"]["global"]),
            "ZooCentredGlobal": fmt(s1["sign_centred"]["global"]),
            "ZooQuantileGlobal": fmt(s1["quantile"]["global"], 2),
            "ZooFastest": NAMES[fastest],
            "ZooFastestSettle": f"{finite[fastest]['settle']:.0f}",
            "ZooBestDrift": NAMES[best],
            "ZooBestDriftSteady": fmt(s1[best]["steady"]),
        })
        print(f"fastest to settle: {fastest}; lowest MaxVio after the switch: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
