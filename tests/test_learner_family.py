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
                penalty={"type": "global_batch", "alpha": 0.3, "target": target, "temperature": 0.5,
                         **({} if normalise else {"normalise": False})},
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
