"""The learning engine and its task proxy: gradients against finite differences of an
independently assembled loss, controller and schedule bookkeeping, the collapse the
proxy must be able to show, reproducibility, bad input."""

import dataclasses
import math

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, routing
from routesim.engines import learner
from routesim.learning import noisy_gate
from routesim.learning import penalties
from routesim import traffic
from routesim import simulate
from routesim.learning import task_proxy
from routesim.cli import main as cli_main
from routesim.gates import gate as gate_fn
from routesim.gates import softplus
from routesim.rng import point_keys, standard_normal

from _numerics import fd_grad, rel_err

RTOL = 1e-4


def small(**sections):
    d = {"run": {"steps": 3, "seed": 5},
         "batch": {"num_sequences": 4, "seq_length": 8, "micro_batch_size": 2},
         "traffic": {"kind": "features", "feature_dim": 3, "num_topics": 3},
         "router": {"num_experts": 4, "topk": 2, "score_function": "softmax"},
         "controller": {"type": "none"},
         "penalty": {"learn": True, "optimizer": "sgd", "learning_rate": 1.0,
                     "affinity_scale": 1.0, "quality_strength": 0.5}}
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return config_from_dict(d)


# ----------------------------------------------------------------------------
# mixing weights and the task loss
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("gate,k,scaling", [("softmax", 2, None), ("sigmoid", 2, 2.5),
                                            ("sigmoid", 1, None), ("noisy", 3, None)])
def test_task_loss_gradient(gate, k, scaling):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5))
    idx = np.argsort(-z, axis=-1)[:, :k]
    mask = np.zeros_like(z, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=-1)
    values = rng.normal(size=(6, 5))
    _, grad, _ = task_proxy.task_loss(np, gate, z, mask, values, k, scaling)
    fd = fd_grad(lambda zz: -float(task_proxy.task_loss(np, gate, zz, mask, values, k,
                                                        scaling)[0]), z)
    assert rel_err(grad, fd) < RTOL


@pytest.mark.parametrize("gate,k,scaling", [("softmax", 2, None), ("sigmoid", 3, 2.5),
                                            ("sigmoid", 1, None)])
def test_mixing_weights_equal_the_routers_gate_weights(gate, k, scaling):
    # routing.gate_weights is the exact engine's own implementation
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 6))
    s = gate_fn(np, gate, z)
    idx = routing.select_topk(np, s, k)
    w_ref = routing.gate_weights(np, s, idx, gate, k, scaling)
    mask = np.zeros_like(z, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=-1)
    w = task_proxy.mixing_weights(np, gate, z, mask, k, scaling)
    assert np.allclose(np.take_along_axis(w, idx, axis=-1), w_ref)
    assert np.all(w[~mask] == 0)


def test_usage_update_is_the_ema_of_relative_load():
    u = task_proxy.update_usage(np, np.ones(4), np.array([6, 2, 0, 0]), 0.75, 2, 4)
    # N F = 4 * c / (K T) = [3, 1, 0, 0]
    assert np.allclose(u, 0.75 + 0.25 * np.array([3, 1, 0, 0]))


# ----------------------------------------------------------------------------
# the whole step: an SGD step is -lr times the gradient of the total loss
# ----------------------------------------------------------------------------
def _step0_inputs(cfg, point):
    """Tokens, topics, affinities and gate noise of step 0 of one point."""
    p = cfg.points()[point]
    b, n = p.batch, p.router.num_experts
    keys = point_keys(cfg.run.seed, [0 if p.penalty.common_random_numbers else point], 1)
    tp = traffic.make_traffic_params([p])
    ts = traffic.init_traffic(np, tp, keys)
    x32, topic = traffic.token_features(np, tp, ts, keys, 0, 0, b.tokens_per_step)
    aff = task_proxy.draw_affinity(np, keys, p.traffic.num_topics, n,
                                   np.array([p.penalty.affinity_scale]))[0, 0]
    eps = standard_normal(np, keys, 0, learner.NOISE_STREAM,
                          np.arange(b.tokens_per_step, dtype=np.uint64), n, np.float64)[0, 0]
    return p, x32.astype(np.float64)[0, 0], topic[0, 0], aff, eps


def _reference_loss(inputs, w, wn=None, mask=None, fmap=None):
    """Total loss of step 0 for one point, assembled from the formulas, routing fixed."""
    p, x, topic, aff, eps = inputs
    pen, b = p.penalty, p.batch
    clean = x @ w.T
    k = p.router.topk
    h, raw = clean, None
    if pen.noisy_gate:
        raw = x @ wn.T
        h = clean + eps * softplus(np, raw)
    if mask is None:
        mask = penalties.topk_map(np, h, k)     # bias 0 at step 0: the plain top-K
        fmap = mask
    values = aff[topic]                        # quality is 0 at step 0 (usage = 1)
    gate = "noisy" if pen.noisy_gate else p.router.score_function
    total = -float(task_proxy.task_loss(np, gate, h, mask, values, k)[0])
    groups = {"switch": b.num_micro_batches, "sequence": b.num_sequences,
              "global_batch": 1}.get(pen.type)
    if groups:
        aux_gate = "softmax" if pen.noisy_gate else p.router.score_function
        total += pen.alpha * float(penalties.balance_loss(np, h, fmap, aux_gate, k, groups)[0])
    if pen.z_loss:
        total += pen.z_loss * float(penalties.z_loss(np, h)[0])
    if pen.noisy_gate:
        nmb = b.num_micro_batches
        total += pen.importance_loss * float(noisy_gate.importance_loss(np, h, mask, nmb)[0])
        total += pen.load_loss * float(noisy_gate.load_loss(np, clean, raw, eps, k, nmb)[0])
    return total, mask, fmap


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_sgd_step_is_minus_the_total_loss_gradient(gate):
    cfg = small(router={"score_function": gate},
                penalty={"alpha": 0.3, "z_loss": 0.05},
                sweep={"penalty.type": ["switch", "sequence", "global_batch", "none"]})
    init, step = learner.make_learner_simulator(cfg)
    s0 = init()
    s1, _ = step(s0)
    for p in range(4):
        w0 = np.asarray(s0.weight_PRED[p, 0])
        applied = w0 - np.asarray(s1.weight_PRED[p, 0])        # lr = 1
        inputs = _step0_inputs(cfg, p)
        _, mask, fmap = _reference_loss(inputs, w0)
        fd = fd_grad(lambda w: _reference_loss(inputs, w, mask=mask, fmap=fmap)[0], w0)
        assert rel_err(applied, fd) < RTOL, cfg.point_labels()[p]


def test_noisy_gate_step_gradients_for_both_weight_matrices():
    cfg = small(penalty={"noisy_gate": True, "noise_init_scale": 0.5, "importance_loss": 0.2,
                         "load_loss": 0.3, "z_loss": 0.01})
    init, step = learner.make_learner_simulator(cfg)
    s0 = init()
    s1, _ = step(s0)
    w0, wn0 = np.asarray(s0.weight_PRED[0, 0]), np.asarray(s0.noise_weight_PRED[0, 0])
    inputs = _step0_inputs(cfg, 0)
    _, mask, fmap = _reference_loss(inputs, w0, wn0)
    fd_w = fd_grad(lambda w: _reference_loss(inputs, w, wn0, mask, fmap)[0], w0)
    fd_n = fd_grad(lambda wn: _reference_loss(inputs, w0, wn, mask, fmap)[0], wn0)
    assert rel_err(w0 - np.asarray(s1.weight_PRED[0, 0]), fd_w) < RTOL
    assert rel_err(wn0 - np.asarray(s1.noise_weight_PRED[0, 0]), fd_n) < RTOL


# ----------------------------------------------------------------------------
# bookkeeping: controller, schedules, dataset
# ----------------------------------------------------------------------------
def test_sign_controller_beside_a_penalty_follows_its_law():
    # DeepSeek-V3 style: sign bias plus a tiny sequence-wise alpha
    cfg = small(run={"steps": 12}, controller={"type": "sign", "bias_update_rate": 0.01},
                penalty={"type": "sequence", "alpha": 1e-4, "optimizer": "adam",
                         "learning_rate": 0.05})
    ds = simulate(cfg, progress=False)
    load = ds["expert_load"].values.astype(np.float64)
    bias = ds["bias"].values
    step_bias = np.zeros_like(bias[0])
    for t in range(12):
        assert np.allclose(bias[t], step_bias, atol=1e-6)
        step_bias = step_bias + 0.01 * np.sign(load[t].mean(-1, keepdims=True) - load[t])


def test_schedules_are_logged():
    cfg = small(run={"steps": 6}, penalty={"type": "switch", "alpha": 0.2, "z_loss": 0.1,
                                           "alpha_schedule": "sigmoid", "schedule_delay": 3,
                                           "schedule_width": 1.0, "z_loss_schedule": "warmup",
                                           "schedule_steps": 4, "lr_schedule": "cosine"})
    ds = simulate(cfg, progress=False)
    # hand-written schedules (optim's table), not the functions the learner calls
    alpha = [0.2 / (1 + math.exp(-(t - 3) / 1.0)) for t in range(6)]
    z_loss = [0.1 * min(1.0, (t + 1) / 4) for t in range(6)]
    lr = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(6)]
    np.testing.assert_allclose(ds["alpha_t"].isel(point=0).values, alpha, rtol=1e-12)
    np.testing.assert_allclose(ds["z_loss_t"].isel(point=0).values, z_loss, rtol=1e-12)
    np.testing.assert_allclose(ds["lr_t"].isel(point=0).values, lr, rtol=1e-12)


def test_dataset_variables_and_load_ratio():
    cfg = small(run={"steps": 4, "replicas": 2}, penalty={"type": "switch", "alpha": 0.1},
                batch={"computation_batch_sizes": [2]})
    ds = simulate(cfg, progress=False)
    for name in ("task_proxy", "penalty", "interference", "cancelled_share", "max_logit",
                 "logit_spread", "alpha_t", "load_ratio", "dead_experts", "maxvio_compute"):
        assert name in ds
    total = ds["expert_load"].sum("step")
    assert np.allclose(ds["load_ratio"], total.max("expert") / total.min("expert"))
    assert (ds["expert_load"].sum("expert") == 4 * 8 * 2).all()
    assert ((ds["cancelled_share"] >= 0) & (ds["cancelled_share"] <= 1)).all()
    assert (np.abs(ds["interference"]) <= 1 + 1e-12).all()


def test_noisy_gate_has_an_evaluation_window():
    cfg = small(penalty={"noisy_gate": True, "importance_loss": 0.1, "load_loss": 0.1})
    ds = simulate(cfg, progress=False)
    assert (ds["eval_load"].sum("expert") == 32 * 2).all()
    assert "maxvio_global_eval" in ds and "load_ratio_eval" in ds


# ----------------------------------------------------------------------------
# behaviour the proxy must be able to show
# ----------------------------------------------------------------------------
def test_rich_get_richer_collapses_and_a_strong_penalty_balances_at_a_cost():
    cfg = config_from_dict({
        "run": {"steps": 150, "seed": 3, "global_window": 50},
        "batch": {"num_sequences": 4, "seq_length": 64},
        "traffic": {"kind": "features", "feature_dim": 8, "num_topics": 4,
                    "router_init_scale": 0.1},
        "router": {"num_experts": 8, "topk": 2, "score_function": "sigmoid"},
        "controller": {"type": "none"},
        "penalty": {"learn": True, "type": "switch", "learning_rate": 0.01,
                    "affinity_scale": 1e-3},
        "sweep": {"mode": "zip", "penalty.alpha": [0.0, 0.0, 0.1],
                  "penalty.quality_strength": [0.0, 3e-3, 3e-3]}})
    ds = simulate(cfg, progress=False)
    final = ds["maxvio_global"].isel(step=-1, replica=0).values
    proxy = ds["task_proxy"].isel(step=slice(-20, None), replica=0).mean("step").values
    no_feedback, collapsed, penalised = final
    assert collapsed > 2.0 and collapsed > no_feedback + 0.5   # rich-get-richer collapses
    assert penalised < 0.5                                      # a strong penalty balances
    assert proxy[2] < proxy[1]                                  # ... at a cost in the proxy


def test_z_loss_keeps_logits_small():
    cfg = small(run={"steps": 40}, penalty={"optimizer": "adam", "learning_rate": 0.05},
                sweep={"penalty.z_loss": [0.0, 1.0]})
    ds = simulate(cfg, progress=False)
    last = ds["max_logit"].isel(step=-1, replica=0).values
    assert last[1] < last[0]


# ----------------------------------------------------------------------------
# reproducibility, backends
# ----------------------------------------------------------------------------
def test_same_seed_same_numbers_and_points_are_independent():
    cfg = small(run={"steps": 5}, sweep={"penalty.alpha": [0.0, 0.1, 0.3],
                                         "penalty.type": ["switch"]})
    a = simulate(cfg, progress=False)
    b = simulate(cfg, progress=False)
    c = simulate(cfg, point_indices=[2], progress=False)
    assert a.equals(b)
    assert np.array_equal(a["expert_load"].isel(point=2).values, c["expert_load"].isel(point=0).values)
    assert np.allclose(a["task_proxy"].isel(point=2).values, c["task_proxy"].isel(point=0).values)


@pytest.mark.parametrize("common", [True, False])
def test_common_random_numbers_pair_the_points(common):
    # two points with the same treatment: identical under common random numbers
    cfg = small(run={"steps": 3}, penalty={"common_random_numbers": common},
                sweep={"penalty.alpha": [0.1, 0.1], "penalty.type": ["switch"]})
    ds = simulate(cfg, progress=False)
    same = np.array_equal(ds["expert_load"].isel(point=0).values, ds["expert_load"].isel(point=1).values)
    assert same == common


def test_array_api_strict_backend_agrees():
    xps = pytest.importorskip("array_api_strict")
    cfg = small(penalty={"type": "switch", "alpha": 0.1, "z_loss": 0.01})
    outs = []
    for xp in (np, xps):
        init, step = learner.make_learner_simulator(cfg, xp=xp)
        state = init()
        for _ in range(3):
            state, out = step(state)
        outs.append((np.asarray(state.weight_PRED), np.asarray(out.load_PRE)))
    assert np.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert np.array_equal(outs[0][1], outs[1][1])


@pytest.mark.gpu
def test_cupy_backend_agrees():
    from routesim._backend import cupy_available

    ok, reason = cupy_available()
    if not ok:
        pytest.skip(reason)
    import cupy

    cfg = small(penalty={"noisy_gate": True, "importance_loss": 0.1, "load_loss": 0.1,
                         "z_loss": 0.01})
    outs = []
    for xp in (np, cupy):
        init, step = learner.make_learner_simulator(cfg, xp=xp)
        state = init()
        for _ in range(3):
            state, out = step(state)
        outs.append((cupy.asnumpy(state.weight_PRED) if xp is cupy else state.weight_PRED,
                     cupy.asnumpy(out.load_PRE) if xp is cupy else out.load_PRE))
    assert np.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert np.array_equal(outs[0][1], outs[1][1])


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
BAD = [
    ({"penalty": {"alpha": -0.1}}, "penalty.alpha"),
    ({"penalty": {"learning_rate": 0.0}}, "penalty.learning_rate"),
    ({"penalty": {"learning_rate": -1.0}}, "penalty.learning_rate"),
    ({"traffic": {"feature_dim": 0}}, "traffic.feature_dim"),
    ({"traffic": {"topic_weights": [0.5, 0.2, 0.2]}}, "traffic.topic_weights"),
    ({"router": {"score_function": "sqrtsoftplus"}, "penalty": {"type": "switch"}},
     "penalty.type"),
    ({"router": {"score_function": "sigmoid"}, "penalty": {"noisy_gate": True}},
     "penalty.noisy_gate"),
    ({"penalty": {"load_loss": 0.1}}, "penalty.load_loss"),
    ({"penalty": {"learn": False, "type": "switch"}}, "penalty.type"),
    ({"penalty": {"type": "switch", "loss": "kl"}}, "penalty.loss"),
    ({"penalty": {"type": "switch", "target": [0.5, 0.5, 0.5, -0.5]}}, "penalty.target"),
    ({"penalty": {"type": "switch", "target": [0.3, 0.3, 0.3, 0.3]}}, "penalty.target"),
    ({"penalty": {"type": "switch", "target": [0.5, 0.5]}}, "penalty.target"),
    ({"penalty": {"type": "switch", "loss": "logsumexp", "temperature": 0.0}},
     "penalty.temperature"),
    ({"penalty": {"type": "switch", "loss": "entropy", "normalization": "mixtral"}},
     "penalty.normalization"),
    ({"penalty": {"type": "switch", "normalise": False}}, "penalty.normalise"),
    ({"penalty": {"type": "switch", "temperature": 0.5}}, "penalty.temperature"),
    ({"sweep": {"penalty.loss": ["switch", "minimax"]}}, "penalty.loss"),
    ({"controller": {"type": "quantile"}}, "controller.type"),
    ({"sweep": {"penalty.alpha": [0.1, -1.0]}}, "penalty.alpha"),
]


@pytest.mark.parametrize("changes,field", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        small(**changes)


def test_cli_prints_the_learning_columns(tmp_path, capsys):
    toml = tmp_path / "tiny.toml"
    toml.write_text("""
[run]
steps = 3
[batch]
num_sequences = 2
seq_length = 8
[traffic]
kind = "features"
feature_dim = 3
[router]
num_experts = 4
topk = 1
score_function = "softmax"
[controller]
type = "none"
[penalty]
learn = true
type = "switch"
[sweep]
"penalty.alpha" = [0.0, 0.01]
""")
    assert cli_main(["run", str(toml), "--no-progress", "--no-save"]) == 0
    out = capsys.readouterr().out
    for header in ("MaxVio_global", "MaxVio_batch", "dead", "task proxy", "interference"):
        assert header in out


@pytest.mark.parametrize("window", [{"window": "micro_batch"},
                                    {"window": "steps", "update_every": 2}],
                         ids=["micro_batch", "steps"])
def test_each_point_gives_its_numbers_at_any_index(window):
    # Laws, penalties and z-loss mixed: a point run alone equals its slice
    # of the whole sweep, diagnostics included.
    import xarray as xr

    laws = ["sign", "sign_centred", "proportional", "ema", "rms", "momentum_tanh", "none"]
    cfg = config_from_dict({
        "run": {"steps": 5, "replicas": 2, "seed": 11},
        "batch": {"num_sequences": 8, "seq_length": 16, "micro_batch_size": 4},
        "router": {"num_experts": 8, "topk": 2, "score_function": "sigmoid"},
        "traffic": {"kind": "features"},
        "controller": {"bias_update_rate": 0.05, "warmup_steps": 1, **window},
        "penalty": {"learn": True},
        "sweep": {"mode": "zip", "controller.type": laws,
                  "penalty.type": ["switch", "none", "sequence", "none", "global_batch",
                                   "none", "switch"],
                  "penalty.z_loss": [0, 1e-3, 0, 0, 0, 1e-3, 0]}})
    whole = simulate(cfg, progress=False)
    for i in range(len(laws)):
        xr.testing.assert_identical(simulate(cfg, point_indices=[i], progress=False),
                                    whole.isel(point=[i]))


# ----------------------------------------------------------------------------
# beyond step 0: the learning-rate schedule and the map of f when bias displaces routing
# ----------------------------------------------------------------------------
def _hand_cosine(t, total, final_fraction):
    t = min(t, total)
    return final_fraction + (1 - final_fraction) * (1 + np.cos(np.pi * t / total)) / 2


def test_sgd_applies_the_cosine_rate_of_each_step():
    """At every step t, the applied SGD update is lr_t times the update a unit constant rate
    makes from the same state; lr_t is the hand-written cosine at t (not t - 1 or t + 1)."""
    steps, f = 6, 0.2
    sched = small(run={"steps": steps}, penalty={"type": "switch", "alpha": 0.3,
                                                 "learning_rate": 0.5, "lr_schedule": "cosine",
                                                 "lr_final_fraction": f})
    unit = small(run={"steps": steps}, penalty={"type": "switch", "alpha": 0.3,
                                                "learning_rate": 1.0})
    init, step = learner.make_learner_simulator(sched)
    _, unit_step = learner.make_learner_simulator(unit)
    state = init()
    for t in range(steps):
        w = np.asarray(state.weight_PRED)
        nxt, _ = step(state)
        ref, _ = unit_step(state)
        applied = w - np.asarray(nxt.weight_PRED)
        gradient = w - np.asarray(ref.weight_PRED)
        assert np.abs(gradient).max() > 1e-6
        np.testing.assert_allclose(applied, 0.5 * _hand_cosine(t, steps, f) * gradient,
                                   rtol=1e-10, atol=1e-15)
        state = nxt


@pytest.mark.parametrize("f_map", ["unbiased", "realized"])
def test_f_map_with_a_displacing_bias(f_map):
    """With a bias that moves selections, the balance term's f counts the unbiased top-K or
    the routed one; the applied step is minus the gradient of the loss so assembled."""
    cfg = small(router={"num_experts": 5}, penalty={"type": "sequence", "alpha": 0.7,
                                                    "f_map": f_map})
    init, step = learner.make_learner_simulator(cfg)
    bias = np.array([0.4, -0.3, 0.0, 0.25, -0.35])
    s0 = dataclasses.replace(init(), bias_PRE=np.broadcast_to(bias, (1, 1, 5)).copy())
    s1, _ = step(s0)
    w0 = np.asarray(s0.weight_PRED[0, 0])
    inputs = _step0_inputs(cfg, 0)
    _, x, _, _, _ = inputs
    s = gate_fn(np, "softmax", x @ w0.T)
    order = np.argsort(-(s + bias), axis=-1, kind="stable")[:, :2]
    routed = np.zeros_like(s, dtype=bool)
    np.put_along_axis(routed, order, True, axis=-1)
    plain = np.zeros_like(routed)
    np.put_along_axis(plain, np.argsort(-s, axis=-1, kind="stable")[:, :2], True, axis=-1)
    assert (routed != plain).any()  # the bias displaces some selections
    fmap = plain if f_map == "unbiased" else routed
    fd = fd_grad(lambda w: _reference_loss(inputs, w, mask=routed, fmap=fmap)[0], w0)
    applied = w0 - np.asarray(s1.weight_PRED[0, 0])
    assert rel_err(applied, fd) < RTOL
    other = routed if f_map == "unbiased" else plain
    fd_other = fd_grad(lambda w: _reference_loss(inputs, w, mask=routed, fmap=other)[0], w0)
    assert rel_err(applied, fd_other) > 100 * RTOL  # the choice matters here
