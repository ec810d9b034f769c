"""The learning engine with the balance-loss family, capacity, topic drift and the signed
interference readout: an SGD step against finite differences of an independently assembled
loss, drops against a brute-force loop, drift against its formula."""

import numpy as np
import pytest

from routesim import config_from_dict, simulate
from routesim.engines import learner
from routesim.learning import penalties, task_proxy

from _numerics import fd_grad, rel_err
from test_balance_family import surrogate
from test_learner import _step0_inputs, small

RTOL = 1e-4


def _family_reference(inputs, w, w0, fmap_groups, mask):
    """-task + alpha * phi-surrogate (sg frozen at w0) of step 0, routing fixed."""
    p, x, topic, aff, _ = inputs
    pen, k, e = p.penalty, p.router.topk, p.router.num_experts
    h, h0 = x @ w.T, x @ w0.T
    gate = p.router.score_function
    total = -float(task_proxy.task_loss(np, gate, h, mask, aff[topic], k)[0])
    groups, f = fmap_groups
    q = np.full(e, 1 / e) if pen.target is None else np.asarray(pen.target)
    return total + pen.alpha * surrogate(pen.loss, h, h0, f, gate, pen.normalise, groups, q,
                                         pen.temperature)


@pytest.mark.parametrize("gate,normalise", [("softmax", True), ("sigmoid", False)])
def test_sgd_step_follows_each_objective(gate, normalise):
    target = [0.4, 0.3, 0.2, 0.1]
    cfg = small(router={"score_function": gate},
                penalty={"type": "global_batch", "alpha": 0.3, "target": target,
                         "temperature": 0.5, **({} if normalise else {"normalise": False})},
                sweep={"penalty.loss": ["switch", "quadratic", "entropy", "l1", "logsumexp"]})
    init, step = learner.make_learner_simulator(cfg)
    s0 = init()
    s1, _ = step(s0)
    b = cfg.batch
    for pt in range(cfg.num_points):
        inputs = _step0_inputs(cfg, pt)
        w0 = np.asarray(s0.weight_PRED[pt, 0])
        x = inputs[1]
        mask = penalties.topk_map(np, x @ w0.T, cfg.router.topk)
        f = mask.sum(0)[None] / (cfg.router.topk * b.tokens_per_step)   # F, by hand
        assert (f > 0).all()        # the entropy surrogate is smooth there
        fd = fd_grad(lambda w: _family_reference(inputs, w, w0, (1, f), mask), w0)
        applied = w0 - np.asarray(s1.weight_PRED[pt, 0])     # lr = 1
        assert rel_err(applied, fd) < RTOL, cfg.point_labels()[pt]


def test_a_user_objective_runs_in_the_engine():
    from routesim.penalty_registry import registered_temporarily

    with registered_temporarily("cubic", lambda xp, F, Q, t: xp.sum(F ** 3, axis=-1),
                                lambda xp, F, Q, t: 3 * F ** 2):
        cfg = small(penalty={"type": "switch", "alpha": 0.3, "loss": "cubic"})
        init, step = learner.make_learner_simulator(cfg)
        s0 = init()
        s1, out = step(s0)
        inputs = _step0_inputs(cfg, 0)
        w0 = np.asarray(s0.weight_PRED[0, 0])
        # value reported: mean over micro-batches of sum_i F_i^3
        mask = penalties.topk_map(np, inputs[1] @ w0.T, 2)
        f = mask.reshape(2, 16, 4).sum(1) / 32
        assert np.isclose(out.extra.balance_loss_PR[0, 0], np.mean(np.sum(f ** 3, -1)))


# ----------------------------------------------------------------------------
# signed interference
# ----------------------------------------------------------------------------
def test_task_projection_against_its_formula_and_the_clipped_share():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    proj = penalties.task_projection(np, a, b)
    _, share = penalties.interference(np, a, b)
    for i in range(3):
        x, y = a[i].ravel(), b[i].ravel()
        assert np.isclose(proj[i], (x + y) @ x / (x @ x))
        assert np.isclose(share[i], np.clip(1 - proj[i], 0, 1))
    # the reversal the clipped share cannot show: 1 - 2 alpha at alpha = 0.8
    assert np.allclose(penalties.task_projection(np, a, -1.6 * a), -0.6)
    assert np.allclose(penalties.interference(np, a, -1.6 * a)[1], 1.0)
    assert np.isnan(penalties.task_projection(np, 0 * a, b)).all()


def test_engine_reports_the_projection_and_the_reversal_share():
    # a huge alpha against a small task signal: the total gradient reverses on some steps
    cfg = small(run={"steps": 6}, penalty={"type": "switch", "affinity_scale": 1e-3,
                                           "quality_strength": 0.0},
                sweep={"penalty.alpha": [0.0, 10.0]})
    ds = simulate(cfg, progress=False)
    proj = ds["task_projection"].values                     # (S, P, R)
    assert np.allclose(proj[:, 0], 1.0)                      # no penalty: the task alone
    assert np.allclose(ds["cancelled_share"].values, np.clip(1 - proj, 0, 1))
    share = (proj < 0).mean(axis=0)
    assert np.allclose(ds["reversal_share"].values, share)
    assert share[1, 0] > 0 and share[0, 0] == 0               # reversals occur only with it


# ----------------------------------------------------------------------------
# capacity
# ----------------------------------------------------------------------------
def brute_force_kept(h, gate, k, n_mb, seqs_mb, seq_len, factor, policy):
    """Kept assignments of step 0 (bias 0), expert by expert, token by token."""
    from scipy.special import expit, softmax

    t, e = h.shape
    s = softmax(h, -1) if gate == "softmax" else expit(h)
    t_mb = seqs_mb * seq_len
    cap = int(np.ceil(t_mb * k / e * factor))
    chosen = np.zeros((t, e), dtype=bool)
    for row in range(t):
        chosen[row, np.argsort(-s[row], kind="stable")[:k]] = True
    kept = np.zeros_like(chosen)
    for mb in range(n_mb):
        for j in range(e):
            tokens = [mb * t_mb + i for i in range(t_mb) if chosen[mb * t_mb + i, j]]
            if policy == "probs":
                def weight(row):
                    top = np.flatnonzero(chosen[row])
                    if gate == "softmax":          # softmax over the chosen logits
                        return softmax(h[row, top])[list(top).index(j)]
                    return s[row, j] / s[row, top].sum()
                tokens.sort(key=lambda row: -weight(row))     # stable: earlier token first
            else:                                             # [position, sequence] order
                tokens.sort(key=lambda row: ((row % t_mb) % seq_len, (row % t_mb) // seq_len))
            for row in tokens[:cap]:
                kept[row, j] = True
    return chosen, kept


@pytest.mark.parametrize("gate,policy", [("softmax", "probs"), ("sigmoid", "position")])
def test_capacity_drops_as_a_brute_force_loop_and_the_gradient_skips_them(gate, policy):
    cfg = small(router={"score_function": gate, "capacity_factor": 0.75,
                        "token_drop_policy": policy},
                penalty={"type": "switch", "alpha": 0.2, "quality_strength": 0.0},
                batch={"num_sequences": 4, "seq_length": 8, "micro_batch_size": 2})
    init, step = learner.make_learner_simulator(cfg)
    s0 = init()
    s1, out = step(s0)
    inputs = _step0_inputs(cfg, 0)
    p, x, topic, aff, _ = inputs
    w0 = np.asarray(s0.weight_PRED[0, 0])
    b, k = cfg.batch, cfg.router.topk
    chosen, kept = brute_force_kept(x @ w0.T, gate, k, b.num_micro_batches,
                                    b.sequences_per_micro_batch, b.seq_length, 0.75, policy)
    assert (~kept & chosen).any()                                   # something dropped
    assert np.array_equal(out.load_PRE[0, 0], chosen.sum(0))
    assert np.array_equal(out.kept_PRE[0, 0], kept.sum(0))
    lost = (chosen & ~kept).reshape(b.num_sequences, b.seq_length, -1).sum((0, 2))
    assert np.allclose(out.extra.drop_by_position_PRL[0, 0], lost / (b.num_sequences * k))

    def total(w):   # dropped assignments earn nothing; f counts the chosen (pre-drop) map
        h = x @ w.T
        task = task_proxy.task_loss(np, gate, h, chosen, aff[topic] * kept, k)[0]
        bal = penalties.balance_loss(np, h, chosen, gate, k, b.num_micro_batches)[0]
        return -float(task) + 0.2 * float(bal)

    assert rel_err(w0 - np.asarray(s1.weight_PRED[0, 0]), fd_grad(total, w0)) < RTOL


def test_capacity_dataset_has_the_drop_rate_by_position():
    cfg = small(run={"steps": 3}, router={"capacity_factor": 0.5},
                penalty={"type": "switch", "alpha": 0.01})
    ds = simulate(cfg, progress=False)
    assert ds["drop_by_position"].dims == ("step", "point", "replica", "position")
    # the mean over positions is the step's drop rate (every position has B * K assignments)
    assert np.allclose(ds["drop_by_position"].mean("position"), ds["drop_rate"])
    assert (ds["drop_rate"] > 0).all()
    assert "drop_by_position" not in simulate(small(run={"steps": 1}), progress=False)


def test_controller_counts_the_kept_loads():
    cfg = small(run={"steps": 2}, router={"capacity_factor": 0.6},
                controller={"type": "sign", "bias_update_rate": 0.01})
    ds = simulate(cfg, progress=False)
    kept = ds["kept_load"].values[0].astype(float)
    assert (ds["kept_load"].values[0] != ds["expert_load"].values[0]).any()
    step1 = 0.01 * np.sign(kept.mean(-1, keepdims=True) - kept)
    assert np.allclose(ds["bias"].values[1], step1, atol=1e-7)


# ----------------------------------------------------------------------------
# drift of the topic weights
# ----------------------------------------------------------------------------
def _topic_setup(drift, replicas=1, **extra):
    from routesim import rng, traffic

    t = {"kind": "features", "num_topics": 4, "topic_weights": [0.55, 0.25, 0.15, 0.05],
         "drift": drift, **extra}
    cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1}, "traffic": t,
                            "run": {"replicas": replicas}})
    params = traffic.make_traffic_params(cfg.points())
    keys = rng.point_keys(0, [0], replicas)
    return traffic, params, keys, traffic.init_traffic(np, params, keys)


def test_regime_switch_permutes_the_topic_weights_and_the_tokens_follow():
    traffic, params, keys, state = _topic_setup("regime", regime_steps=[5])
    w0 = np.array([0.55, 0.25, 0.15, 0.05])
    shares = []
    for step in (4, 5):
        st = traffic.advance_traffic(np, params, state, keys, step)
        w = traffic.topic_weights(np, params, st)[0, 0]
        _, topic = traffic.token_features(np, params, st, keys, step, 0, 40000)
        share = np.bincount(topic[0, 0], minlength=4) / 40000
        assert np.abs(share - w).max() < 0.01           # tokens drawn from the weights in force
        shares.append(w)
    assert np.allclose(shares[0], w0)
    assert np.allclose(np.sort(shares[1]), np.sort(w0)) and not np.allclose(shares[1], w0)


def test_sinusoid_and_random_walk_move_the_log_weights_by_their_formulas():
    traffic, params, keys, state = _topic_setup("sinusoid", drift_amplitude=0.8,
                                                drift_period=20.0)
    st = traffic.advance_traffic(np, params, state, keys, 7)
    logw = np.log([0.55, 0.25, 0.15, 0.05]) + 0.8 * np.sin(2 * np.pi * 7 / 20
                                                           + 2 * np.pi * np.arange(4) / 4)
    ref = np.exp(logw) / np.exp(logw).sum()
    assert np.allclose(traffic.topic_weights(np, params, st)[0, 0], ref, rtol=1e-12)
    # random walk: independent N(0, std^2) increments per topic and step
    traffic, params, keys, state = _topic_setup("random_walk", replicas=300, drift_std=0.1)
    st1 = traffic.advance_traffic(np, params, state, keys, 1)
    st2 = traffic.advance_traffic(np, params, st1, keys, 2)
    inc = (st2.topic_logw_PRM - st1.topic_logw_PRM).ravel()
    assert abs(inc.std() - 0.1) < 0.01 and abs(inc.mean()) < 0.01
    st0 = traffic.advance_traffic(np, params, state, keys, 0)       # step 0: no increment yet
    assert np.allclose(st0.topic_logw_PRM, np.log([0.55, 0.25, 0.15, 0.05]))


def test_shift_response_on_a_learning_run():
    from routesim.analysis import shift_response

    cfg = small(run={"steps": 40}, traffic={"topic_weights": [0.8, 0.1, 0.1],
                                            "drift": "regime", "regime_steps": [20]},
                controller={"type": "sign", "bias_update_rate": 0.05},
                penalty={"optimizer": "adam", "learning_rate": 0.05})
    ds = simulate(cfg, progress=False)
    out = shift_response(ds, 20, window=10, smooth=3, tolerance=0.5)
    m = ds["maxvio_batch"].values[:, 0, 0]
    proxy = ds["task_proxy"].values[:, 0, 0]
    assert np.isclose(out["maxvio_before"].item(), m[10:20].mean())
    assert np.isclose(out["proxy_lost"].item(), proxy[10:20].mean() - proxy[20:30].mean())
    k = out["rebalance_steps"].item()
    smoothed = [m[20 + i:23 + i].mean() for i in range(18)]
    ok = [v <= 1.5 * m[10:20].mean() for v in smoothed]
    assert (np.isnan(k) and not any(ok)) or (k == ok.index(True))


def test_array_api_strict_agrees_with_capacity_drift_and_a_family_loss():
    xps = pytest.importorskip("array_api_strict")
    cfg = small(router={"capacity_factor": 0.8, "token_drop_policy": "position",
                        "score_function": "sigmoid"},
                traffic={"topic_weights": [0.5, 0.3, 0.2], "drift": "sinusoid",
                         "drift_amplitude": 0.5},
                controller={"type": "sign", "bias_update_rate": 0.01},
                penalty={"type": "sequence", "alpha": 0.1, "loss": "entropy",
                         "normalise": False, "target": [0.4, 0.3, 0.2, 0.1]})
    runs = []
    for xp in (np, xps):
        init, step = learner.make_learner_simulator(cfg, xp=xp)
        state = init()
        for _ in range(3):
            state, out = step(state)
        runs.append((np.asarray(state.weight_PRED), np.asarray(out.kept_PRE),
                     np.asarray(out.extra.drop_by_position_PRL),
                     np.asarray(out.extra.task_projection_PR)))
    for a, b in zip(*runs):
        assert np.allclose(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("changes", [
    {"router": {"capacity_factor": 0.8, "token_drop_policy": "position",
                "score_function": "sigmoid"},
     "penalty": {"type": "sequence", "alpha": 0.1, "loss": "entropy", "normalise": False}},
    {"traffic": {"topic_weights": [0.5, 0.3, 0.2], "drift": "regime", "regime_steps": [2]},
     "controller": {"type": "sign", "bias_update_rate": 0.01},
     "penalty": {"type": "switch", "alpha": 0.1, "loss": "logsumexp"}},
])
def test_cupy_backend_agrees_with_capacity_drift_and_the_family(changes):
    from routesim._backend import cupy_available

    ok, reason = cupy_available()
    if not ok:
        pytest.skip(reason)
    import cupy

    cfg = small(run={"steps": 4}, **changes)
    outs = []
    for xp in (np, cupy):
        init, step = learner.make_learner_simulator(cfg, xp=xp)
        state = init()
        for _ in range(4):
            state, out = step(state)
        host = cupy.asnumpy if xp is cupy else np.asarray
        outs.append((host(state.weight_PRED), host(out.kept_PRE),
                     host(out.extra.task_projection_PR), host(out.extra.balance_loss_PR)))
    for a, b in zip(*outs):
        assert np.allclose(a, b, atol=1e-6)
