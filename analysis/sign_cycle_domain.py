"""Where the sign law's noise-free cycle fails: counting noise picks another period-2 cycle.

Docs (docs/theory.md, "The sign controller") say that for ``r = lambda u /
sigma >= 8`` the noise-free cycle started at ``b = 0`` plus counting noise
(``cycle_maxvio``) predicts the engine's steady MaxVio on the Zipf grid of
``analysis/theory_vs_sim.py``. On small linear-skew scenarios at large rates
it does not: the lattice has several period-2 cycles, counting noise moves
the loop from the one reached from ``b = 0`` onto another, and their MaxVio
differ. The script prints, per rate, the prediction from ``b = 0``, the
engine (steps 200-400, four replicas) and the prediction from the cycle
reached from the engine's last bias (replica 0).

Usage::

    python analysis/sign_cycle_domain.py [N K linear_spread sequences length mults]
    python analysis/sign_cycle_domain.py 6 1 1.0 16 256 0.3,0.5,0.7,0.8   # the default
"""

from __future__ import annotations

import sys

import numpy as np

from routesim import ConfigError
from routesim.config import (BatchConfig, Config, ControllerConfig, RouterConfig, RunConfig,
                             SweepConfig, TrafficConfig)
from routesim.run import simulate
from routesim.theory import (critical_rate, cycle_maxvio, equilibrium, jacobian, loop_gains,
                             map_plant, relay_cycle, selection_covariance)
from routesim.theory.maxvio import load_error_covariance
from routesim.traffic import popularity

STEPS = 400


def main(argv: list[str]) -> int:
    args = argv or ["6", "1", "1.0", "16", "256", "0.3,0.5,0.7,0.8"]
    n, k, spread, seqs, length = int(args[0]), int(args[1]), float(args[2]), int(args[3]), \
        int(args[4])
    mults = [float(x) for x in args[5].split(",")]
    mu = popularity("linear", n, linear_spread=spread)
    bstar = equilibrium(mu, topk=k)
    jac = jacobian(mu, bstar, topk=k)
    u_c = float(critical_rate("proportional", loop_gains(jac, k)[-1], num_experts=n))
    tokens = seqs * length
    noise = load_error_covariance(selection_covariance(mu, bstar, topk=k), tokens=tokens, topk=k)
    sigma = float(np.mean(np.sqrt(np.diag(noise))))
    gain = float(np.mean(np.diag((n / k) * jac)))
    rates = [m * u_c for m in mults]
    cfg = Config(run=RunConfig(steps=STEPS, replicas=4, seed=0, record_displacement=False,
                               bias_dtype="float64"),
                 batch=BatchConfig(num_sequences=seqs, seq_length=length),
                 router=RouterConfig(num_experts=n, topk=k),
                 traffic=TrafficConfig(skew="linear", linear_spread=spread),
                 controller=ControllerConfig(type="sign"),
                 sweep=SweepConfig(parameters={"controller.bias_update_rate": rates}))
    ds = simulate(cfg, progress=False)
    engine = ds["maxvio_batch"].values[STEPS // 2:].mean(axis=(0, 2))
    plant = map_plant(mu, topk=k)
    print(f"N={n} K={k} linear_spread={spread:g} T={tokens} sign law, u_c={u_c:.4g}")
    print("rate      r    from b=0  engine  engine/pred  from engine's bias")
    for j, (m, u) in enumerate(zip(mults, rates)):
        try:
            cyc = relay_cycle(plant, u, np.zeros(n), max_steps=3000)
        except ConfigError:
            print(f"{m:4.2f} u_c  no cycle within 3000 windows")
            continue
        pred = cycle_maxvio(cyc, noise)[0]
        b_end = ds["bias"].values[-1, j, 0]
        alt = cycle_maxvio(relay_cycle(plant, u, b_end - b_end.mean(), max_steps=3000), noise)[0]
        print(f"{m:4.2f} u_c {gain * u / sigma:5.1f}  {pred:8.4f}  {engine[j]:6.4f}  "
              f"{engine[j] / pred:11.2f}  {alt:8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
