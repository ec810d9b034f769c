"""routesim.testing: strategies build valid configs; each invariant holds on engine runs
and fails on a deliberately broken input."""

import json
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import routesim
from routesim.config import config_from_dict
from routesim.controllers import registered_temporarily
from routesim.routing import route_block
from routesim.testing import (check_backends_agree, check_bias_sum, check_capacity,
                              check_conservation, check_datasets_agree, check_distinct_experts,
                              check_monotone_load, check_permutation_equivariance,
                              check_shift_invariance, check_sign_step, configs,
                              controller_configs, load_vectors, popularity_vectors,
                              router_configs, score_matrices, traffic_configs)


def _small(**sections):
    base = {"run": {"steps": 6, "seed": 3},
            "batch": {"num_sequences": 4, "seq_length": 8, "micro_batch_size": 2},
            "router": {"num_experts": 6, "topk": 2}}
    for name, fields in sections.items():
        base.setdefault(name, {}).update(fields)
    return config_from_dict(base)


# -- strategies ---------------------------------------------------------------
@given(configs())
def test_configs_round_trip_through_config_from_dict(cfg):
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert 1 <= cfg.router.topk < cfg.router.num_experts


@given(router_configs(), traffic_configs(), controller_configs())
def test_section_strategies_give_valid_sections(router, traffic, controller):
    cfg = config_from_dict({"router": routesim.config.Config(router=router).to_dict()["router"]})
    assert cfg.router == router
    if router.num_groups is not None:
        assert router.num_experts % router.num_groups == 0
        assert router.topk % router.group_topk == 0
    assert traffic.noise_scale >= 0.1 and controller.type in routesim.controllers.registered()


@settings(max_examples=5)
@given(configs(max_steps=3))
def test_drawn_configs_simulate_and_conserve(cfg):
    ds = routesim.simulate(cfg, progress=False)
    check_conservation(ds)
    check_capacity(ds)


@given(st.integers(1, 6), st.integers(2, 9).flatmap(lambda n: st.tuples(st.just(n),
                                                                       score_matrices(5, n))))
def test_score_matrices_have_no_ties(_, drawn):
    n, s = drawn
    assert s.shape == (5, n)
    gaps = np.diff(np.sort(s, axis=-1), axis=-1)
    assert (gaps > 0).all()


@given(st.integers(1, 8).flatmap(lambda e: st.tuples(st.just(e), load_vectors(e, 37))))
def test_load_vectors_sum_to_total(drawn):
    e, v = drawn
    assert v.shape == (e,) and v.sum() == 37 and (v >= 0).all()


@given(st.integers(2, 8).flatmap(lambda e: popularity_vectors(e, 1.5)))
def test_popularity_vectors_have_the_given_skew(mu):
    assert np.isclose(mu.max() - mu.min(), 1.5) and np.isclose(mu.mean(), 0.0)


# -- invariants on real routing and runs ---------------------------------------
@given(st.integers(3, 8).flatmap(lambda n: st.tuples(
    st.integers(1, n - 1), score_matrices(6, n), st.permutations(range(n)),
    st.floats(-5, 5))))
def test_selection_invariants_hold(drawn):
    k, s, perm, shift = drawn
    n = s.shape[1]
    check_permutation_equivariance(s, perm, k)
    check_shift_invariance(s, shift, k)
    r = routesim.config.RouterConfig(num_experts=n, topk=k, score_function="sigmoid")
    out = route_block(np, s[None, None], np.zeros((1, 1, n)), r, num_sequences=1, seq_length=6)
    check_distinct_experts(out.idx_PRTK, n)
    check_conservation(out.routed_PRBE, topk=k, tokens=6)


@given(popularity_vectors(6, 2.0), st.integers(0, 5), st.floats(0.01, 1.0))
def test_load_map_is_monotone_in_own_bias(mu, expert, delta):
    check_monotone_load(mu, np.zeros(6), expert, delta, topk=2, tol=1e-7)


def test_engine_runs_keep_the_control_invariants():
    ds = routesim.simulate(_small(controller={"bias_update_rate": 0.01}), progress=False)
    check_conservation(ds)
    check_sign_step(ds)
    centred = routesim.simulate(_small(controller={"type": "sign_centred"}), progress=False)
    check_bias_sum(centred)
    capped = routesim.simulate(_small(router={"capacity_factor": 0.8}), progress=False)
    check_capacity(capped)
    assert (capped["kept_load"].values < capped["expert_load"].values).any()  # it did drop


def test_backends_agree_on_a_run():
    pytest.importorskip("array_api_strict")
    check_backends_agree(_small())


# -- each check fails on a broken input -----------------------------------------
def test_sign_step_catches_a_law_that_moves_by_2u():
    def double_sign(xp, bias, load, memory, params):
        mean = xp.mean(xp.astype(load, bias.dtype), axis=-1, keepdims=True)
        return bias + 2 * params["bias_update_rate"] * xp.sign(mean - load), memory

    with registered_temporarily("double_sign", double_sign, fields=("bias_update_rate",)):
        ds = routesim.simulate(_small(controller={"type": "double_sign"}), progress=False)
    with pytest.raises(AssertionError, match="sign step broken"):
        check_sign_step(ds)


def test_bias_sum_catches_an_uncentred_law():
    ds = routesim.simulate(_small(controller={"type": "sign"}), progress=False)
    with pytest.raises(AssertionError, match="bias sum broken"):
        check_bias_sum(ds)


def test_capacity_catches_an_overfull_expert():
    ds = routesim.simulate(_small(router={"capacity_factor": 1.0}), progress=False)
    broken = ds.copy(deep=True)
    broken["kept_load"][2, 0, 0, 1] = ds["expert_load"].values.sum(axis=-1).max()
    with pytest.raises(AssertionError, match="capacity broken at index \\(2, 0, 0, 1\\)"):
        check_capacity(broken)


def test_conservation_catches_a_lost_selection():
    ds = routesim.simulate(_small(), progress=False)
    broken = ds.copy(deep=True)
    broken["expert_load"][4, 0, 0, 0] -= 1
    with pytest.raises(AssertionError, match="conservation broken at index \\(4, 0, 0\\)"):
        check_conservation(broken)


def test_selection_checks_catch_broken_selections():
    s = np.array([[0.1, 0.9, 0.5, 0.3]])
    by_position = lambda scores, k: np.broadcast_to(np.arange(k), scores.shape[:-1] + (k,))
    with pytest.raises(AssertionError, match="permutation equivariance"):
        check_permutation_equivariance(s, [3, 2, 1, 0], 2, select=by_position)
    shifted_wrong = lambda scores, k: np.argsort(scores * (scores.mean() > 1))[..., -k:]
    with pytest.raises(AssertionError, match="shift invariance"):
        check_shift_invariance(s, 2.0, 2, select=shifted_wrong)
    with pytest.raises(AssertionError, match="distinct experts"):
        check_distinct_experts(np.array([[0, 0]]), 4)


def test_monotone_check_catches_a_reversed_load_map():
    reversed_map = lambda mu, bias, topk: routesim.theory.load_map(mu, -bias, topk=topk)
    with pytest.raises(AssertionError, match="monotone load broken at expert 2"):
        check_monotone_load(np.zeros(5), np.zeros(5), 2, 0.3, topk=2, load=reversed_map)


def test_datasets_agree_catches_a_changed_bias():
    ds = routesim.simulate(_small(), progress=False)
    broken = ds.copy(deep=True)
    broken["bias"][3, 0, 0, 2] += 0.01
    with pytest.raises(AssertionError, match=r"agreement broken at bias\[3, 0, 0, 2\]"):
        check_datasets_agree(ds, broken)


# -- docs/testing.md --------------------------------------------------------------
def test_docs_example_is_the_example_file_and_runs():
    from pathlib import Path
    import re

    root = Path(__file__).parent.parent
    block = re.search(r"```python\n(.*?)```", (root / "docs" / "testing.md").read_text(),
                      re.S).group(1)
    assert block.strip() in (root / "examples" / "testing_own_controller.py").read_text()
    namespace = {}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    namespace["test_half_sign"]()
    assert "half_sign" not in routesim.controllers.registered()
