"""Figure: theory against simulation, every comparison of ``analysis/theory_vs_sim.py``.

Each point is one prediction of :mod:`routesim.theory` (critical rate,
settling time, steady MaxVio, the sign law's bias and load amplitudes)
against the exact engine's measurement, on the study's scenarios (N = 16,
K = 2, Zipf exponent 1, 4096 tokens per step; proportional, sign and EMA
laws). Filled: inside the theory's domain (counted); open: outside it (the
script says why). The band is +-10 %. Writes ``theory_vs_sim.{pdf,png}``
and its numbers.

    python figures/fig_theory_vs_sim.py [--quick]
"""

from __future__ import annotations

import math
import sys

import numpy as np

from _common import ROOT, Timer, setup
from routesim.plot import new_axes

sys.path.insert(0, str(ROOT / "analysis"))
import theory_vs_sim as tvs  # noqa: E402

KINDS = [("u_c", "critical rate"), ("settle", "settling time (windows)"),
         ("maxvio", "steady MaxVio"), ("amp_b", "bias amplitude (sign)"),
         ("amp_c", "load amplitude (sign)")]


def rows(quick: bool) -> dict:
    scenarios = [s for s in tvs.grid("quick") if not (quick and s.law == "ema")]
    steps = 100 if quick else 150
    out: list = []
    for scn in scenarios:
        th = tvs.theory(scn)
        if scn.law == "sign":
            tvs.analyse_sign(scn, th, steps, 0, out)
        else:
            tvs.analyse_linear(scn, th, steps, 0, out)
    clean = []
    for r in out:
        clean.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                      for k, v in r.items()})
    return {"rows": clean, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    ctx = setup("theory_vs_sim", __doc__, argv)
    with Timer(ctx.name):
        data = ctx.cached("theory_vs_sim", {"quick": ctx.quick}, lambda: rows(ctx.quick))
        table = [r for r in data["rows"] if r["predicted"] is not None
                 and r["simulated"] is not None and r["predicted"] > 0 and r["simulated"] > 0]
        fig, ax = new_axes(None, 1, 0.9)
        lo = min(min(r["predicted"], r["simulated"]) for r in table) / 1.5
        hi = max(max(r["predicted"], r["simulated"]) for r in table) * 1.5
        xs = np.geomspace(lo, hi, 50)
        ax.fill_between(xs, xs / 1.1, xs * 1.1, color="0.85", lw=0, label=r"$\pm$10 %")
        ax.plot(xs, xs, color="0.4", lw=0.8)
        for i, (key, label) in enumerate(KINDS):
            sel = [r for r in table if r["quantity"].startswith(key)]
            if not sel:
                continue
            inside = [r for r in sel if r["within_10%"] is not None]
            outside = [r for r in sel if r["within_10%"] is None]
            ax.plot([r["predicted"] for r in inside], [r["simulated"] for r in inside], "o",
                    color=f"C{i}", label=label)
            ax.plot([r["predicted"] for r in outside], [r["simulated"] for r in outside], "o",
                    mfc="none", color=f"C{i}", alpha=0.6)
        ax.plot([], [], "o", mfc="none", color="0.4", label="outside the domain")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("predicted (routesim.theory)")
        ax.set_ylabel("simulated (exact engine)")
        ax.legend(loc="upper left", fontsize=6)
        for p in ctx.save(fig):
            print(p)
        counted = [r for r in data["rows"] if r["within_10%"] is not None]
        hits = sum(bool(r["within_10%"]) for r in counted)
        print(f"{hits}/{len(counted)} comparisons inside the domain within 10 %; "
              f"{len(data['rows'])} rows")
        ctx.numbers({
            "TvsHits": str(hits), "TvsCounted": str(len(counted)),
            "TvsRows": str(len(data["rows"])), "TvsSteps": str(data["steps"]),
            "TvsShare": f"{100 * hits / max(len(counted), 1):.0f}",
            "TvsScenarios": str(len({r["scenario"] for r in data["rows"]})),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
