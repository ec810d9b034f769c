"""Zero-computation experts (LongCat-Flash) and the budget controller.

References: the budget itself (the controller's fixed point has the target
shares, so the FFN experts per token average the budget); the uncontrolled
run's FFN share from the expected load (:func:`routesim.theory.load_map`);
a hand-computed update of the law.
"""

from __future__ import annotations

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, simulate
from routesim.controllers.laws import zero_budget_update
from routesim.theory import load_map


def _cfg(controller, steps=250):
    return config_from_dict({
        "run": {"steps": steps, "kernel": "generic"},
        "router": {"num_experts": 24, "zero_experts": 8, "topk": 4},
        "traffic": {"skew": "zipf", "zipf_exponent": 0.5}, "controller": controller,
        "batch": {"num_sequences": 4, "seq_length": 128}})


@pytest.mark.parametrize("budget", [1.5, 3.0])
def test_controller_reaches_the_budget_and_balances_the_ffn_experts(budget):
    ds = simulate(_cfg({"type": "zero_budget", "bias_update_rate": 0.02,
                        "params": {"ffn_budget": budget}}), progress=False)
    late = ds["ffn_per_token"].values.ravel()[-100:]
    assert abs(late.mean() - budget) < 4 * late.std() / np.sqrt(25) + 0.01
    free = simulate(_cfg({"type": "none"}, steps=20), progress=False)
    assert ds["maxvio_ffn"].values.ravel()[-50:].mean() < 0.5 * free["maxvio_ffn"].values.mean()


def test_without_a_controller_the_share_is_the_expected_load():
    from routesim.traffic import popularity
    ds = simulate(_cfg({"type": "none"}, steps=40), progress=False)
    p = load_map(popularity("zipf", 24, zipf_exponent=0.5), topk=4)
    expect = p[:16].sum()
    got = ds["ffn_per_token"].values.ravel()
    assert abs(got.mean() - expect) < 4 * got.std() / np.sqrt(got.size) + 1e-3


def test_law_moves_each_share_towards_its_target():
    rng = np.random.default_rng(0)
    load = rng.integers(1, 100, size=(3, 2, 10)).astype(float)
    new = zero_budget_update(np, np.zeros((3, 2, 10)), load, 0.1, 2.0, 4.0, 4.0)
    share = load / load.sum(-1, keepdims=True)
    target = np.where(np.arange(10) >= 6, (1 - 0.5) / 4, 0.5 / 6)
    np.testing.assert_allclose(new, 0.1 * 10 * (target - share))


@pytest.mark.parametrize("cfg, field", [
    ({"controller": {"type": "zero_budget", "params": {"ffn_budget": 5.0}}},
     "controller.params.ffn_budget"),
    ({"controller": {"type": "zero_budget", "params": {"ffn_budget": -1.0}}},
     "controller.params.ffn_budget"),
    ({"router": {"num_experts": 24, "topk": 4, "zero_experts": 0},
      "controller": {"type": "zero_budget"}}, "controller.type"),
    ({"router": {"num_experts": 24, "topk": 4, "zero_experts": 24}}, "router.zero_experts"),
    ({"placement": {"ep_size": 4}, "batch": {"num_sequences": 8, "micro_batch_size": 2}},
     "placement.ep_size"),
])
def test_bad_budgets_are_refused_naming_the_field(cfg, field):
    base = {"router": {"num_experts": 24, "zero_experts": 8, "topk": 4}}
    for k, v in cfg.items():
        base.setdefault(k, {}).update(v)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(base)
