"""A user controller law: proportional + integral on the relative load error.

Registered under ``controller.type = "pi"`` when this file is imported, by
name or by path (``controller.module = "examples/pi_controller.py"`` in a
TOML file). Run it to sweep the integral gain::

    python examples/pi_controller.py
"""

from routesim import config_from_dict, run_sweep
from routesim.controllers import Param, register


def pi_law(xp, bias_PRE, load_PRE, memory_PRE, params):
    """``e = (c_bar - c) / c_bar``; ``I += e``; ``b = kp e + ki I`` (the memory holds I)."""
    load = xp.astype(load_PRE, bias_PRE.dtype)
    mean = xp.mean(load, axis=-1, keepdims=True)
    error = xp.where(mean > 0, (mean - load) / xp.where(mean > 0, mean, 1.0), 0.0)
    integral = memory_PRE + error
    return params["kp"] * error + params["ki"] * integral, integral


register("pi", pi_law, params={
    "kp": Param(0.01, check=lambda v: v >= 0, allowed="must be >= 0"),
    "ki": Param(0.001, check=lambda v: v >= 0, allowed="must be >= 0")})


def main(out_dir="pi_sweep", steps=200, workers=2):
    """Sweep ``controller.params.ki`` and print the late MaxVio of each point."""
    cfg = config_from_dict({
        "run": {"steps": steps}, "traffic": {"skew": "linear"},
        "router": {"num_experts": 16, "topk": 2},
        # module: spawned workers import this file, and so register "pi" too
        "controller": {"type": "pi", "module": __file__, "params": {"kp": 0.02}},
        "sweep": {"controller.params.ki": [0.0, 0.002, 0.01]}})
    ds = run_sweep(cfg, out_dir, workers=workers, progress=False)
    late = ds["maxvio_batch"].isel(step=slice(-steps // 4, None)).mean(["step", "replica"])
    for label, value in zip(ds["label"].values, late.values):
        print(f"{label:12s} late MaxVio {value:.3f}")
    return ds


if __name__ == "__main__":
    main()
