"""routesim's own stability suite: each built-in law in ControllerMachine, broken laws caught.

Built only on the public toolkit (routesim.testing). The settings keep the
loaded profile (``ci``: derandomised, no database) and bound the number of
machine runs and rules, so the suite stays cheap on two cores.
"""

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis.stateful import run_state_machine_as_test

from routesim import controllers, theory
from routesim.testing import popularity_vectors
from routesim.testing.machine import ControllerMachine

MACHINE = settings(settings(), max_examples=6, stateful_step_count=6)


def machine(law, rate, **attrs):
    """A ControllerMachine subclass for ``law`` at ``rate``."""
    return type(f"{law}_machine", (ControllerMachine,), {"law": law, "rate": rate, **attrs})


class ProportionalMachine(ControllerMachine):
    law, rate = "proportional", 0.1


class EmaMachine(ControllerMachine):
    law, rate, params = "ema", 5.0, {"momentum": 0.5}


class MomentumTanhMachine(ControllerMachine):
    law, rate, params = "momentum_tanh", 0.01, {"momentum": 0.5, "tanh_scale": 0.1}


class SignMachine(ControllerMachine):
    law, rate = "sign", 0.02


class SignCentredMachine(ControllerMachine):
    law, rate = "sign_centred", 0.02


class RmsMachine(ControllerMachine):
    law, rate, settling_windows = "rms", 0.01, 60


for _m in (ProportionalMachine, EmaMachine, MomentumTanhMachine, SignMachine,
           SignCentredMachine, RmsMachine):
    _m.TestCase.settings = MACHINE

TestProportional = ProportionalMachine.TestCase
TestEma = EmaMachine.TestCase
TestMomentumTanh = MomentumTanhMachine.TestCase
TestSign = SignMachine.TestCase
TestSignCentred = SignCentredMachine.TestCase
TestRms = RmsMachine.TestCase


def _flipped_sign(xp, bias, load, memory, params):
    """The sign law with its sign flipped: it pushes load onto the busiest experts."""
    mean = xp.mean(load, axis=-1, keepdims=True)
    return bias - params["bias_update_rate"] * xp.sign(mean - load), memory


def _failure(machine_cls):
    """Run the machine to its shrunk counterexample; returns the printed text."""
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(machine_cls, settings=settings(
            settings(), max_examples=10, stateful_step_count=4,
            phases=(Phase.explicit, Phase.generate, Phase.shrink)))
    return "\n".join([*getattr(info.value, "__notes__", []), str(info.value)])


# a failing machine shrinks by rerunning it: keep each run short


def test_machine_catches_flipped_sign_law(capsys):
    with controllers.registered_temporarily("flipped_sign", _flipped_sign,
                                            fields=("bias_update_rate",)):
        text = _failure(machine("flipped_sign", 0.02, settling_windows=5, max_move=0.02,
                                        max_windows=15))
    printed = capsys.readouterr().out
    assert "state.settle()" in text and "MaxVio_batch" in text and "flipped_sign" in text
    print(printed, text)


def test_machine_catches_rate_above_critical(capsys):
    # the proportional law's critical rate is about 0.23 at these popularities (lambda_max ~ 8.5)
    text = _failure(machine("proportional", 0.6, max_windows=15))
    printed = capsys.readouterr().out
    assert "state.settle()" in text and "critical rate" in text
    print(printed, text)


@settings(max_examples=4)
@given(mu_E=popularity_vectors(8, 1.0))
def test_above_critical_rate_does_not_settle(mu_E):
    """At 1.5 u_c the loop never comes back under the threshold (theory: a mode grows)."""
    b_star = theory.equilibrium(mu_E, topk=2)
    lam = theory.loop_gains(theory.jacobian(mu_E, b_star, topk=2), 2)
    uc = float(theory.critical_rate("proportional", lam[-1], num_experts=8))
    m = machine("proportional", 1.5 * uc)()
    m.mu_E = np.asarray(mu_E, dtype=np.float64)
    vio = [m.window() for _ in range(60)]
    assert min(vio[-20:]) > m.threshold + m.noise_floor()
