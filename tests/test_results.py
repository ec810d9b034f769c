"""Result Datasets: CF attributes on every variable, and what run.record keeps."""

import dataclasses

import numpy as np
import pytest
import xarray as xr

from routesim import ConfigError, config_from_dict, load_config, simulate
from routesim.cli import main
from routesim.engines._common import LearnerExtra
from routesim.results import VARIABLE_ATTRS
from routesim.store import load
from routesim.sweep import run_sweep

SMALL = {"run": {"steps": 4, "replicas": 2}, "batch": {"num_sequences": 2, "seq_length": 16},
         "router": {"num_experts": 8, "topk": 2}}

ENGINES = {
    "exact": {**SMALL, "batch": {**SMALL["batch"], "computation_batch_sizes": [1]},
              "traffic": {"drift": "sinusoid", "drift_amplitude": 0.1},
              "sweep": {"controller.bias_update_rate": [1e-3, 1e-2],
                        "traffic.drift_period": [50]}},
    "meanfield": {**SMALL, "run": {**SMALL["run"], "engine": "meanfield"},
                  "router": {"num_experts": 8, "topk": 2, "score_function": "sigmoid"}},
    "learner": {**SMALL, "traffic": {"kind": "features"},
                "router": {"num_experts": 8, "topk": 2, "score_function": "softmax"},
                "penalty": {"learn": True, "noisy_gate": True}},
    "learner_capacity": {**SMALL, "traffic": {"kind": "features"},
                         "router": {"num_experts": 8, "topk": 2, "capacity_factor": 1.0},
                         "penalty": {"learn": True}},
    "critical_units": {**SMALL, "traffic": {"skew": "zipf"},
                       "run": {**SMALL["run"], "record_displacement": False},
                       "controller": {"type": "proportional"},
                       "sweep": {"controller.bias_update_rate": ["0.5 u_c", "2 u_c"]}},
    "expert_choice": {**SMALL, "router": {"num_experts": 8, "topk": 2,
                                          "router_type": "expert_choice"}},
}


@pytest.mark.parametrize("engine", ENGINES)
def test_every_variable_and_coordinate_has_long_name_and_units(engine):
    ds = simulate(config_from_dict(ENGINES[engine]), progress=False)
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name") and var.attrs.get("units"), name
    assert ds["expert_load"].attrs["units"] == "tokens"
    assert ds["maxvio_batch"].attrs["units"] == "1" and ds["step"].attrs["units"] == "steps"
    if engine == "exact":
        assert ds["traffic.drift_period"].attrs["units"] == "steps"
    if engine == "critical_units":
        assert "resolved" in ds["controller.bias_update_rate.resolved"].attrs["long_name"]
    if engine == "learner_capacity":
        assert "drop_by_position" in ds


def test_the_table_describes_every_learner_field():
    names = {f.name.rsplit("_", 1)[0] for f in dataclasses.fields(LearnerExtra)}
    assert names <= set(VARIABLE_ATTRS)


# --- run.record, run.record_every --------------------------------------------------------------

GRID_TOML = """
[run]
steps = 7
seed = 4
replicas = 2
global_window = 3
record = "metrics"
record_every = 3

[batch]
num_sequences = 2
seq_length = 16

[router]
num_experts = 8
topk = 2

[sweep]
"traffic.noise_scale" = [0.5, 1.5]
"controller.type" = ["sign", "proportional"]
"""

PER_EXPERT = ("expert_load", "kept_load", "bias")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    path = tmp_path_factory.mktemp("record") / "grid.toml"
    path.write_text(GRID_TOML)
    cfg = load_config(path)
    return path, cfg, simulate(cfg, progress=False)


def test_record_keeps_every_nth_step_of_the_metrics_computed_from_every_step(grid):
    _, cfg, kept = grid
    full = simulate(cfg.replace(**{"run.record": "full", "run.record_every": 1}), progress=False)
    assert kept["step"].values.tolist() == [0, 3, 6]
    assert not any(v in kept.variables for v in PER_EXPERT + ("expert",))
    # the thinned metrics are the full run's at those steps: maxvio_global's trailing
    # window and flip_fraction were computed from every step before thinning
    by_hand = full.drop_vars(list(PER_EXPERT) + ["expert"]).isel(step=[0, 3, 6])
    xr.testing.assert_equal(kept, by_hand)  # all but the stored config (record differs)
    for name, var in kept.variables.items():
        assert var.attrs == by_hand[name].attrs
    load_SPRE = full["expert_load"].values
    window = load_SPRE[4:7].sum(axis=0)  # the 3 steps ending at step 6
    want = (window.max(-1) - window.mean(-1)) / window.mean(-1)
    np.testing.assert_allclose(kept["maxvio_global"].isel(step=-1).values, want)
    np.testing.assert_allclose(kept["maxvio_global_final"].values, want)


def test_record_is_the_same_through_every_entry_point(grid, tmp_path):
    path, cfg, whole = grid
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress",
                 "--no-plot"]) == 0
    xr.testing.assert_identical(load(tmp_path / "run" / "results.zarr"), whole)
    for chunk in (1, 3):  # worker processes: tests/test_sweep.py (the same build_dataset)
        out = tmp_path / f"sweep{chunk}"
        assert main(["sweep", str(path), "--out", str(out), "--chunk", str(chunk),
                     "--no-progress"]) == 0
        xr.testing.assert_identical(load(out / "results.zarr"), whole)
    xr.testing.assert_identical(
        run_sweep(cfg, tmp_path / "api", points_per_chunk=2, progress=False), whole)


@pytest.mark.parametrize("run, match", [
    ({"record": "experts"}, "run.record = 'experts'"),
    ({"record_every": 0}, "run.record_every = 0: must be an integer in [1, run.steps = 4]"),
    ({"record_every": 5}, "run.record_every = 5"),
])
def test_bad_record_settings_are_refused_naming_the_field(run, match):
    with pytest.raises(ConfigError, match=match.replace("[", r"\[")):
        config_from_dict({**SMALL, "run": {**SMALL["run"], **run}})
