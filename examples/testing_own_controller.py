"""Property-test a controller law of your own with routesim.testing (docs/testing.md)."""

from hypothesis import given, settings

import routesim
from routesim.controllers import registered_temporarily
from routesim.testing import check_bias_sum, check_conservation, check_sign_step, configs


def half_sign(xp, bias_PRE, load_PRE, memory_PRE, params):
    """Centred sign law at half the rate: moves each bias by at most u per window."""
    load = xp.astype(load_PRE, bias_PRE.dtype)
    step = 0.5 * params["bias_update_rate"] * xp.sign(xp.mean(load, axis=-1, keepdims=True) - load)
    return bias_PRE + step - xp.mean(step, axis=-1, keepdims=True), memory_PRE


def test_half_sign():
    with registered_temporarily("half_sign", half_sign, fields=("bias_update_rate",)):
        @settings(max_examples=10, deadline=None)
        @given(configs(controllers=["half_sign"], max_steps=10))
        def holds(cfg):
            ds = routesim.simulate(cfg, progress=False)
            check_conservation(ds)   # K * T selections per step
            check_sign_step(ds)      # |delta b| <= u per window
            check_bias_sum(ds)       # centred: the bias sum stays at 0
        holds()


if __name__ == "__main__":
    test_half_sign()
    print("half_sign keeps conservation, the sign step bound and the bias sum")
