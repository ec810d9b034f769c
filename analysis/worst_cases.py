"""Worst steady MaxVio and slowest settling of each built-in law, found by hypothesis.target.

The dynamics are the noise-free loop on the expected-load map
(:func:`routesim.theory.deterministic_trajectory`, sigmoid gate, normal
noise, bias from 0) over ``STEPS`` windows. Ranges searched:

* N in {8, 12, 16}, K in {1, 2};
* popularity logits on a grid of ``skew / 8`` in ``[-skew, skew]``, skew in [0.25, 1.5];
* rate: for the linear laws a fraction in [0.1, 0.8] of the critical rate at
  the drawn popularity (:func:`routesim.theory.critical_rate`); for the sign
  laws and ``rms`` in [0.005, 0.05];
* ema and momentum_tanh: momentum 0.5, tanh_scale 0.1.

Steady MaxVio is the largest MaxVio of the last 10 windows; settling is the
first window after which MaxVio stays below 0.05 (``STEPS`` if it never
does). The found cases print as a Python list, pasted into
tests/properties/test_worst_cases.py as ``@example`` regression cases.

Run: ``.venv/bin/python analysis/worst_cases.py [examples per law]``.
"""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from routesim import theory

LAWS = ("sign", "sign_centred", "proportional", "ema", "rms", "momentum_tanh")
STEPS = 80
SETTLED = 0.05
PARAMS = {"momentum": 0.5, "tanh_scale": 0.1}


def critical(law: str, mu_E: np.ndarray, topk: int) -> float:
    """The critical rate of a linear law at this popularity."""
    b_star = theory.equilibrium(mu_E, topk=topk)
    lam = theory.loop_gains(theory.jacobian(mu_E, b_star, topk=topk), topk)
    kw = {k: PARAMS[k] for k in ("momentum", "tanh_scale")} if law != "proportional" else {}
    return float(theory.critical_rate(law, lam[-1], num_experts=mu_E.size, **kw))


def measure(law: str, mu_E: np.ndarray, topk: int, rate: float) -> tuple[float, int]:
    """Steady MaxVio and settling window of the noise-free loop."""
    out = theory.deterministic_trajectory(mu_E, law=law, steps=STEPS, topk=topk, rate=rate,
                                          nodes=32, **PARAMS)
    vio_S = out["maxvio_SP"][:, 0]
    above = np.nonzero(vio_S >= SETTLED)[0]
    settle = int(above[-1] + 1) if above.size else 0
    return float(vio_S[-10:].max()), settle


@st.composite
def cases(draw, law: str):
    n = draw(st.sampled_from([8, 12, 16]), label="N")
    topk = draw(st.sampled_from([1, 2]), label="K")
    skew = draw(st.sampled_from([0.25, 0.5, 1.0, 1.5]), label="skew")
    mu = draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n), label="grid")
    mu_E = np.asarray(mu, dtype=np.float64) * skew / 8
    frac = draw(st.floats(0.1, 0.8), label="fraction")
    if law in ("proportional", "ema", "momentum_tanh"):
        rate = frac * critical(law, mu_E, topk)
    else:
        rate = 0.005 + (frac - 0.1) / 0.7 * 0.045
    return {"law": law, "topk": topk, "rate": round(rate, 6), "mu": mu_E.tolist()}


def search(law: str, examples: int) -> dict[str, tuple[float, dict]]:
    """Run the targeted search for one law; returns the worst case per label."""
    worst: dict[str, tuple[float, dict]] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(cases(law))
    def probe(case):
        steady, settle = measure(case["law"], np.asarray(case["mu"]), case["topk"], case["rate"])
        target(steady, label="steady_maxvio")
        target(float(settle), label="settling_windows")
        for label, value in (("steady_maxvio", steady), ("settling_windows", settle)):
            if label not in worst or value > worst[label][0]:
                worst[label] = (value, case)

    probe()
    return worst


def main(examples: int = 40) -> None:
    found = []
    print(f"{'law':14s} {'target':17s} {'value':>8s}  N  K  rate      skew")
    for law in LAWS:
        for label, (value, case) in search(law, examples).items():
            mu = np.asarray(case["mu"])
            print(f"{law:14s} {label:17s} {value:8.4f} {mu.size:2d} {case['topk']:2d}  "
                  f"{case['rate']:<9.4g} {np.max(np.abs(mu)):.3g}")
            found.append(case)
    print("\nCASES = [")
    for case in found:
        print(f"    {case!r},")
    print("]")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
