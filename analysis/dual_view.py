"""Balancing as constrained optimisation: each law scored against the assignment oracle.

Frozen traffic (one logit matrix replayed every step, so the loop is
deterministic): N = 16 experts, K = 2, T = 1024 tokens per step, sigmoid
gate, logits ``mu + N(0, 1)`` with a linear popularity from +1 to -1
(``traffic.frozen_source = "popularity"``), 400 steps. Laws:

* ``sign`` at constant rates 1e-4 ... 1e-2, and with ``1/sqrt(t+1)`` and
  ``1/(t+1)`` decays from 1e-2;
* ``proportional`` at 0.05 (constant);
* ``quantile`` (``quantile_ema = 0``);
* ``dual_ascent`` (steps in score units per assignment; ``proportional`` at u
  is ``dual_ascent`` at ``u / c_bar``, ``c_bar = T K / N = 128``) with
  ``1/sqrt(t+1)`` and ``1/(t+1)`` decays.

Per law and rate: the cycle the centred bias settles into (period, entry
step, band), the capacity overflow ``max c / C - 1`` (last 50 steps: mean
and max), the gap to the oracle's optimum relative to the price of balance
(last 50 steps, mean), the share of assignments the oracle makes too, the
correlation of the centred bias with the centred dual prices (last step)
and the Lagrangian gap over the price of balance (last step).

The same on the other seeded recipe, ``traffic.frozen_source = "separation"``
(scores ``sigmoid(separation * N(0, 1))``, separation 1, no popularity),
for the sign law at constant rates and the decaying dual ascent.

Then the same with non-uniform target shares (4 experts on devices twice
as fast: Q = 2/20 for them, 1/20 for the others): MaxVio against Q.

Then stochastic traffic (fresh noise each step, ``run.oracle = "on"``: one
oracle per step's batch), 150 steps: overflow, gap, dual correlation and the
cumulative regret (the Lagrangian gap summed over steps) at steps 50 and 150.

Run: ``PYTHONPATH=. .venv/bin/python analysis/dual_view.py`` (about a minute).
"""

from __future__ import annotations

import numpy as np

from routesim import config_from_dict, simulate

N, K, SEQ, LEN = 16, 2, 8, 128
STEPS = 400
TAIL = 50

LAWS = [  # (label, type, rate, schedule)
    ("sign u=1e-4", "sign", 1e-4, "constant"),
    ("sign u=3e-4", "sign", 3e-4, "constant"),
    ("sign u=1e-3", "sign", 1e-3, "constant"),
    ("sign u=3e-3", "sign", 3e-3, "constant"),
    ("sign u=1e-2", "sign", 1e-2, "constant"),
    ("sign 1e-2/sqrt(t+1)", "sign", 1e-2, "inv_sqrt"),
    ("sign 1e-2/(t+1)", "sign", 1e-2, "inv"),
    ("proportional u=0.05", "proportional", 0.05, "constant"),
    ("quantile", "quantile", 1e-3, "constant"),
    ("dual_ascent 4e-4/sqrt(t+1)", "dual_ascent", 4e-4, "inv_sqrt"),
    ("dual_ascent 4e-3/(t+1)", "dual_ascent", 4e-3, "inv"),
]


def config(laws, traffic: dict, steps: int, extra: dict | None = None):
    """One run, one point per law (zip sweep)."""
    return config_from_dict({
        "run": {"steps": steps, "kernel": "generic", "bias_dtype": "float32",
                **(extra or {}).get("run", {})},
        "batch": {"num_sequences": SEQ, "seq_length": LEN},
        "router": {"num_experts": N, "topk": K, "score_function": "sigmoid"},
        "traffic": traffic,
        "controller": (extra or {}).get("controller", {}),
        "sweep": {"mode": "zip", "labels": [x[0] for x in laws], "parameters": {
            "controller.type": [x[1] for x in laws],
            "controller.bias_update_rate": [x[2] for x in laws],
            "controller.rate_schedule": [x[3] for x in laws]}}})


def frozen_table(ds, title: str) -> None:
    print(f"\n{title}")
    print(f"{'law':28s} {'period':>6s} {'entered':>7s} {'band':>9s} {'overflow':>9s} "
          f"{'max ovf':>8s} {'gap/PoB':>8s} {'agree':>6s} {'corr':>7s} {'Lgap/PoB':>9s}")
    pob = ds["price_of_balance"].values[-1, :, 0]
    for p, label in enumerate(ds["label"].values):
        tail = slice(-TAIL, None)
        ovf = ds["capacity_overflow"].values[tail, p, 0]
        print(f"{label:28s} {int(ds['cycle_period'].values[p, 0]):6d} "
              f"{int(ds['cycle_entered'].values[p, 0]):7d} "
              f"{float(ds['cycle_band'].values[p, 0]):9.2e} {ovf.mean():9.4f} {ovf.max():8.4f} "
              f"{ds['oracle_gap_relative'].values[tail, p, 0].mean():8.4f} "
              f"{ds['oracle_agreement'].values[tail, p, 0].mean():6.3f} "
              f"{ds['dual_correlation'].values[-1, p, 0]:7.4f} "
              f"{ds['lagrangian_gap'].values[-1, p, 0] / pob[p]:9.2e}")


def main() -> None:
    frozen = {"kind": "frozen", "skew": "linear", "linear_spread": 1.0}
    ds = simulate(config(LAWS, frozen, STEPS), progress=False)
    pob = float(ds["price_of_balance"].values[-1, 0, 0])
    opt = float(ds["oracle_objective"].values[-1, 0, 0])
    print(f"frozen traffic: T = {SEQ * LEN}, N = {N}, K = {K}; oracle optimum {opt:.3f}, "
          f"price of balance {pob:.3f} ({pob / (opt + pob):.2%} of the unconstrained top-K)")
    frozen_table(ds, f"frozen, uniform targets ({STEPS} steps; overflow, gap, agreement over "
                     f"the last {TAIL})")

    separation = {"kind": "frozen", "frozen_source": "separation", "separation": 1.0}
    sep_laws = [x for x in LAWS if x[1] in ("sign", "dual_ascent") and "(t+1)" not in x[0]
                or x[0] == "dual_ascent 4e-3/(t+1)"]
    dsep = simulate(config(sep_laws, separation, STEPS), progress=False)
    pob_s = float(dsep["price_of_balance"].values[-1, 0, 0])
    print(f"\nfrozen traffic, separation source: oracle optimum "
          f"{float(dsep['oracle_objective'].values[-1, 0, 0]):.3f}, price of balance {pob_s:.3f}")
    frozen_table(dsep, "frozen, sigmoid(N(0, 1)) scores")

    q = np.array([2.0] * 4 + [1.0] * (N - 4))
    q = (q / q.sum()).round(6)
    q[-1] = 1.0 - q[:-1].sum()
    picked = [x for x in LAWS if x[0] in ("sign u=1e-3", "sign 1e-2/sqrt(t+1)",
                                          "proportional u=0.05", "quantile",
                                          "dual_ascent 4e-4/sqrt(t+1)")]
    dq = simulate(config(picked, frozen, STEPS,
                         {"controller": {"target_shares": q.tolist()}}), progress=False)
    uni = {label: p for p, label in enumerate(ds["label"].values)}
    print(f"\nnon-uniform targets Q = 2/20 on experts 0-3, 1/20 on the others (last {TAIL} "
          "steps, mean)")
    print(f"{'law':28s} {'MaxVio vs Q':>12s} {'MaxVio (Q uniform)':>19s} {'gap/PoB':>8s} "
          f"{'PoB':>8s} {'corr':>7s}")
    for p, label in enumerate(dq["label"].values):
        tail = slice(-TAIL, None)
        print(f"{label:28s} {dq['maxvio_target'].values[tail, p, 0].mean():12.4f} "
              f"{ds['maxvio_batch'].values[tail, uni[label], 0].mean():19.4f} "
              f"{dq['oracle_gap_relative'].values[tail, p, 0].mean():8.4f} "
              f"{dq['price_of_balance'].values[-1, p, 0]:8.3f} "
              f"{dq['dual_correlation'].values[-1, p, 0]:7.4f}")

    steps = 150
    live = {"kind": "popularity", "skew": "linear", "linear_spread": 1.0}
    dl = simulate(config(LAWS, live, steps, {"run": {"oracle": "on"}}), progress=False)
    print(f"\nstochastic traffic (fresh noise each step, oracle per batch), {steps} steps; "
          f"means over the last {TAIL}")
    print(f"{'law':28s} {'overflow':>9s} {'gap/PoB':>8s} {'corr':>7s} {'regret@50':>10s} "
          f"{'regret@150':>11s} {'Lgap/PoB':>9s}")
    for p, label in enumerate(dl["label"].values):
        tail = slice(-TAIL, None)
        reg = dl["regret"].values[:, p, 0]
        lg = dl["lagrangian_gap"].values[tail, p, 0] / dl["price_of_balance"].values[tail, p, 0]
        print(f"{label:28s} {dl['capacity_overflow'].values[tail, p, 0].mean():9.4f} "
              f"{dl['oracle_gap_relative'].values[tail, p, 0].mean():8.4f} "
              f"{dl['dual_correlation'].values[tail, p, 0].mean():7.4f} "
              f"{reg[49]:10.3f} {reg[-1]:11.3f} {lg.mean():9.2e}")


if __name__ == "__main__":
    main()
