"""The reference suite: the stability machine and the engine invariants for one law."""

from __future__ import annotations

from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from routesim import config_from_dict, controllers, simulate
from routesim.testing import check_backends_agree, check_capacity, check_conservation
from routesim.testing.machine import ControllerMachine


def _controller(law) -> dict:
    reads = set(controllers.get_law(law.name).fields)
    ctrl = {"type": law.name, **{k: v for k, v in law.params.items() if k in reads}}
    if "bias_update_rate" in reads:
        ctrl["bias_update_rate"] = law.rate
    own = {k: v for k, v in law.params.items() if k not in reads}
    if own:
        ctrl["params"] = own
    return ctrl


def test_loop_settles_after_any_perturbation(routesim_law):
    machine = type(f"{routesim_law.name}_machine", (ControllerMachine,),
                   {"law": routesim_law.name, "rate": routesim_law.rate,
                    "params": dict(routesim_law.params)})
    # derandomised and without shrinking: a failure prints its unshrunk steps at once
    # (rerun with the dev profile and shrinking to minimise them)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=4, stateful_step_count=5, derandomize=True, database=None, deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate)))


def test_engine_run_keeps_the_invariants(routesim_law):
    cfg = config_from_dict({
        "run": {"steps": 20, "replicas": 2, "seed": 5},
        "batch": {"num_sequences": 4, "seq_length": 32},
        "traffic": {"skew": "linear"},
        "router": {"num_experts": 8, "topk": 2, "capacity_factor": 1.25},
        "controller": _controller(routesim_law)})
    ds = simulate(cfg, progress=False)
    check_conservation(ds["expert_load"].values, topk=2, tokens=4 * 32)
    check_capacity(ds["kept_load"].values, cap=40)  # ceil((128 * 2 / 8) * 1.25)
    assert bool(ds["bias"].notnull().all()), "the bias became NaN"
    check_backends_agree(cfg.replace(**{"run.steps": 5}))
