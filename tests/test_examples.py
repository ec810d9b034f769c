"""Every shipped example loads and runs a few steps through `simulate`, as `routesim run` does."""

from pathlib import Path

import numpy as np
import pytest

from routesim import load_config
from routesim import simulate

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_examples_are_found():
    assert len(EXAMPLES) >= 8
    assert "trinity_smebu" in [p.stem for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path):
    cfg = load_config(path).replace(**{"run.steps": 3, "run.replicas": 1})
    ds = simulate(cfg, progress=False)
    assert ds.sizes["step"] == 3 and ds.sizes["point"] == cfg.num_points
    assert np.isfinite(ds["maxvio_batch"].values).all()


def test_trinity_smebu_constants():
    """The SMEBU example carries the published constants (tanh_scale = 1 / kappa, kappa = 2)."""
    cfg = load_config(EXAMPLES[[p.stem for p in EXAMPLES].index("trinity_smebu")])
    assert (cfg.router.num_experts, cfg.router.topk) == (256, 4)
    assert cfg.router.score_function == "sigmoid" and cfg.router.topk_scaling_factor == 2.448
    c = cfg.controller
    assert (c.type, c.bias_update_rate, c.momentum, c.tanh_scale) == (
        "momentum_tanh", 5e-4, 0.5, 0.5)
