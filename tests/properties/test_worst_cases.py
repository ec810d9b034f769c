"""Regression cases: the worst cases analysis/worst_cases.py found, replayed in ControllerMachine.

Each case (a law, its rate, K and the popularity) must settle as the machine's
``settle`` rule states: MaxVio_batch inside the band within the predicted
settling time times the safety factor. The cases come from
``analysis/worst_cases.py 40`` (noise-free load-map dynamics); the machine
replays them with counting noise.
"""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from routesim.testing import popularity_vectors
from routesim.testing.machine import ControllerMachine

PARAMS = {"momentum": 0.5, "tanh_scale": 0.1}
# (law, K, rate, popularity): the worst steady MaxVio and the slowest settling per law
CASES = [
    ("sign", 1, 0.027499, [0.375, -0.25, 0.5, 0.0, -0.25, -0.125, 0.0625, 0.0, -0.25, 0.125,
                           0.1875, 0.3125]),
    ("sign_centred", 2, 0.020757, [0.375, -0.125, -0.875, -0.375, 0.75, 0.125, -0.625, -1.0,
                                   -0.25, -1.0, 0.625, -0.625]),
    ("proportional", 2, 0.013797, [0.625, -0.5, -0.625, -1.0, 1.0, -0.875, -0.25, -1.0, 0.125,
                                   0.0, -0.875, -0.5, 0.25, 1.0, 1.0, 0.75]),
    ("ema", 2, 0.636927, [1.5, -0.5625, -0.375, -0.75, -0.9375, -0.5625, -0.75, -0.375]),
    ("momentum_tanh", 2, 0.004516, [0.625, -0.5, -0.625, -1.0, 1.0, -0.875, -0.25, -1.0, 0.125,
                                    0.0, -0.875, -0.5, -0.125, 0.25, 0.625, -0.125]),
]


def settles(law, topk, rate, mu):
    """Run the machine's settle rule from bias 0 at this popularity."""
    mu_E = np.asarray(mu, dtype=np.float64)
    cls = type(f"{law}_case", (ControllerMachine,),
               {"law": law, "rate": rate, "topk": topk, "num_experts": mu_E.size,
                "params": PARAMS if law in ("ema", "momentum_tanh") else {},
                "skew": float(np.max(np.abs(mu_E))) or 1.0, "max_windows": 400})
    m = cls()
    m.mu_E = mu_E
    m.batch = 2 ** 16
    m.settle()


def _examples(test):
    for law, topk, rate, mu in CASES:
        test = example(law=law, mu=mu, topk=topk, rate=rate)(test)
    return test


@settings(max_examples=3)
@given(law=st.sampled_from(["proportional", "sign"]), mu=popularity_vectors(8, 1.0),
       topk=st.just(2), rate=st.just(None))
@_examples
def test_worst_cases_settle(law, mu, topk, rate):
    settles(law, topk, rate if rate is not None else {"proportional": 0.05, "sign": 0.02}[law],
            mu)
