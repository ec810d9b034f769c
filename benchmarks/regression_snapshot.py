"""Refactoring guard: store the Datasets of a fixed set of seeded configs, compare later.

Before a change that must not alter any number, write the snapshot; after it,
compare (``xarray.testing.assert_identical`` on every Dataset)::

    python benchmarks/regression_snapshot.py write /tmp/before
    ... change the code ...
    python benchmarks/regression_snapshot.py compare /tmp/before

The set covers every example config (``examples/*.toml``, steps cut to at most
``--max-steps``) and small configs for each engine, controller law, controller
window, gate, router mode and traffic kind.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import xarray as xr

from routesim import config_from_dict, load_config
from routesim import simulate

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "run": {"steps": 6, "replicas": 2, "seed": 7},
    "batch": {"num_sequences": 4, "seq_length": 16},
    "router": {"num_experts": 8, "topk": 2},
    "traffic": {"skew": "linear"},
}

CONTROLLERS = ["none", "sign", "sign_centred", "proportional", "ema", "rms", "momentum_tanh",
               "quantile"]


def _case(**sections: dict) -> dict:
    cfg = copy.deepcopy(BASE)
    for name, fields in sections.items():
        cfg.setdefault(name, {}).update(fields)
    return cfg


def small_cases() -> dict[str, dict]:
    """Name -> config dict of the small cases."""
    cases: dict[str, dict] = {}
    for law in CONTROLLERS:
        rate = 0.0 if law == "none" else 0.05
        # quantile balancing takes no rate (setting one is refused as having no effect)
        ctrl = ({"type": law} if law in ("none", "quantile") else
                {"type": law, "bias_update_rate": rate})
        cases[f"controller_{law}"] = _case(controller=ctrl)
        if law != "none":
            cases[f"controller_{law}_micro_batch"] = _case(
                controller={**ctrl, "window": "micro_batch"}, batch={"micro_batch_size": 2})
            cases[f"controller_{law}_steps"] = _case(
                controller={**ctrl, "window": "steps", "update_every": 2})
    cases["mixed_sweep"] = _case(sweep={"mode": "zip", "controller.type": CONTROLLERS,
                                        "controller.bias_update_rate": [0.0] + [0.05] * 7})
    cases["grid_sweep"] = _case(sweep={"traffic.noise_scale": [0.5, 2.0],
                                       "controller.bias_update_rate": [0.01, 0.1]})
    for gate in ("softmax", "sqrtsoftplus"):
        cases[f"gate_{gate}"] = _case(router={"score_function": gate})
    cases["bias_multiplicative"] = _case(router={"bias_mode": "multiplicative"},
                                         controller={"bias_update_rate": 0.05})
    cases["group_limited"] = _case(router={"num_groups": 4, "group_topk": 2},
                                   controller={"bias_update_rate": 0.05})
    for policy in ("probs", "position"):
        cases[f"capacity_{policy}"] = _case(router={"capacity_factor": 1.0,
                                                    "token_drop_policy": policy})
    cases["capacity_softmax"] = _case(router={"capacity_factor": 1.1, "score_function": "softmax"})
    cases["expert_choice"] = _case(router={"router_type": "expert_choice"})
    cases["scaling_factor"] = _case(router={"topk_scaling_factor": 2.5, "capacity_factor": 1.0})
    cases["compute_batches"] = _case(batch={"computation_batch_sizes": [1, 2]})
    for skew in ("uniform", "zipf"):
        cases[f"skew_{skew}"] = _case(traffic={"skew": skew})
    for noise in ("logistic", "gumbel"):
        cases[f"noise_{noise}"] = _case(traffic={"noise": noise})
    cases["correlation"] = _case(traffic={"seq_correlation": 0.5})
    cases["drift_random_walk"] = _case(traffic={"drift": "random_walk", "drift_std": 0.1})
    cases["drift_sinusoid"] = _case(traffic={"drift": "sinusoid", "drift_amplitude": 0.5,
                                             "drift_period": 4.0})
    cases["drift_regime"] = _case(traffic={"drift": "regime", "regime_steps": [3]})
    cases["features"] = _case(traffic={"kind": "features", "skew": "uniform"})
    cases["kernel_generic"] = _case(run={"kernel": "generic"})
    cases["kernel_numba"] = _case(run={"kernel": "numba"})
    cases["float64_bias"] = _case(run={"bias_dtype": "float64"})
    cases["common_random_numbers"] = _case(run={"common_random_numbers": True},
                                           sweep={"traffic.noise_scale": [0.5, 1.0]})
    cases["meanfield"] = _case(run={"engine": "meanfield"}, controller={"bias_update_rate": 0.05})
    cases["meanfield_sweep"] = _case(run={"engine": "meanfield"},
                                     sweep={"controller.type": ["sign", "ema", "proportional"]})
    learn = {"kind": "features", "skew": "uniform", "num_topics": 4}
    for ptype in ("switch", "sequence", "global_batch"):
        cases[f"learn_{ptype}"] = _case(traffic=learn, controller={"type": "none"},
                                        penalty={"learn": True, "type": ptype, "alpha": 0.01})
    cases["learn_sign"] = _case(traffic=learn, controller={"bias_update_rate": 0.01},
                                penalty={"learn": True, "optimizer": "sgd", "z_loss": 1e-3})
    cases["learn_noisy_gate"] = _case(
        traffic=learn, controller={"type": "none"}, router={"score_function": "softmax"},
        penalty={"learn": True, "noisy_gate": True, "importance_loss": 0.1, "load_loss": 0.1})
    return cases


def example_cases(max_steps: int) -> dict[str, object]:
    """Name -> Config of every example, steps cut to ``max_steps``."""
    out = {}
    for path in sorted((ROOT / "examples").glob("*.toml")):
        cfg = load_config(path)
        if cfg.run.steps > max_steps:
            cfg = cfg.replace(**{"run.steps": max_steps})
        out[f"example_{path.stem}"] = cfg
    return out


def all_configs(max_steps: int) -> dict[str, object]:
    configs = {name: config_from_dict(d) for name, d in small_cases().items()}
    configs.update(example_cases(max_steps))
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "compare"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--max-steps", type=int, default=40)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, cfg in all_configs(args.max_steps).items():
        t0 = time.perf_counter()
        ds = simulate(cfg, progress=False)
        path = args.directory / f"{name}.nc"
        if args.action == "write":
            ds.to_netcdf(path)
            status = "written"
        else:
            try:
                xr.testing.assert_identical(ds, xr.load_dataset(path))
                status = "identical"
            except AssertionError as exc:
                failures += 1
                status = "DIFFERENT: " + str(exc).splitlines()[0]
        print(f"{name:40s} {time.perf_counter() - t0:6.2f} s  {status}", flush=True)
    if args.action == "compare":
        print(f"{failures} of {len(all_configs(args.max_steps))} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
