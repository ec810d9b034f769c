"""Theory beside simulation: critical rate, settling time, limit cycles, steady MaxVio.

For a grid of scenarios (N experts, K per token, a Zipf popularity skew,
tokens per step T, a bias law) the script computes the predictions of
:mod:`routesim.theory` and measures the same quantities in the exact engine,
one ``simulate`` call per scenario with the rates as sweep points (0.1 to
3 ``u_c`` plus four points around the predicted boundary; sign law 0.01 to
3 ``u_c``), two replicas each:

* ``u_c (linear)``  ``2 (1 + beta) / ((1 - beta) lambda_max)`` (times N for
  EMA, kappa for momentum_tanh), and ``u_c (loop)``: the first rate at which
  the noise-free loop started from ``b = 0`` on the exact map fails to settle.
  The engine's boundary is the geometric mean of the largest rate that
  settles and the smallest that does not (late MaxVio above 1.5 times its
  level at 0.8 ``u_c``);
* ``settle``  windows until ``max_i |b_i - b*_i|`` stays within 10 % of its
  initial value (last exit, interpolated): the noise-free loop on the exact
  map (:func:`deterministic_trajectory`) against the engine's replica-mean
  bias; the linear estimate ``log 0.1 / log rho`` is printed beside it;
* ``maxvio``  steady MaxVio_batch, from twice the settling time on: linear
  laws from the stationary covariance of the loop driven by counting noise
  (discrete Lyapunov equation, then the expected maximum); the sign law from
  the stochastic mean-field chain when the relay amplitude is small against
  the noise (``r = lambda u / sigma < 3``) and from the noise-free cycle
  started at ``b = 0`` plus counting noise when it dominates (``r >= 8``);
* ``amp_b``, ``amp_c``  sign law: RMS of the centred bias about its mean and
  RMS relative load error (per-expert amplitudes: mean-field chain).

Two token counts per step: T = 4096 (``high`` counting noise) and T = 32768
(``low``). The noise never vanishes in the engine; the theory carries it
everywhere it enters.

Where the theory does not apply, the row says why and is not counted:
rates above ``u_c`` (no stationary state; checked qualitatively: the
engine must not settle), MaxVio near ``u_c`` where the fastest mode's
variance is ill-conditioned (it moves more than 10 times faster than
``lambda_max``) or its noise reaches the curvature of ``p(b)`` (standard
deviation above 0.1), settling bands narrower than the bias noise floor,
runs too short for the transient, EMA with momentum where the loop is
bistable (fixed point stable up to ``u_c``, but the loop from ``b = 0``
lands on a cycle earlier), the tanh soft clamp that leaves no sharp
boundary, sign rates in the crossover ``3 <= r < 8`` (noise reshuffles part
of the cycle's phases) and sign rates of order ``u_c`` and above (each step
moves the bias by a sizeable part of the score range).

Usage::

    python analysis/theory_vs_sim.py [--quick | --full] [--steps 150] [--seed 0] [--csv FILE]
        [--experts N ...] [--jobs 1]

The default grid runs in about three minutes on two cores; ``--quick`` in
under a minute; ``--full`` is the whole grid of the study (N in {16, 64, 256},
K in {1, 2, 6, 8}, three skews, both noise levels, 147 scenarios) and takes
about 25 minutes on two cores with ``--jobs 2``, two thirds of them for
N = 256 (``--experts 256`` runs that part alone; ``--csv`` writes rows as
scenarios finish). ``--jobs`` runs groups of scenarios that share their
noise-free predictions (the two token counts of one N, K, skew and law) on
worker processes with one routing thread each; the rows are the same.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from routesim import ConfigError
from routesim.config import (
    BatchConfig,
    Config,
    ControllerConfig,
    RouterConfig,
    RunConfig,
    SweepConfig,
    TrafficConfig,
)
from routesim.run import simulate
from routesim.theory import (
    critical_rate,
    cycle_maxvio,
    deterministic_trajectory,
    equilibrium,
    expected_max_gaussian,
    jacobian,
    load_error_covariance,
    loop_gains,
    map_plant,
    map_response,
    relay_cycle,
    relay_stationary,
    selection_covariance,
    settling_steps,
    steady_error_covariance,
)
from routesim.traffic import popularity

LINEAR_MULTS = (0.1, 0.3, 0.5, 0.8, 0.95, 1.05, 1.2, 2.0, 3.0)
SIGN_MULTS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TOKENS = {"low": (128, 256), "high": (16, 256)}  # (sequences, length) per step
SETTLE_FRACTION = 0.1
#: Above this ratio of relay amplitude to counting noise, lam u / sigma, the
#: sign loop is predicted by its noise-free cycle plus counting noise; below,
#: by the stochastic mean-field chain. Between RELAY_DOMINATES and CYCLE_HOLDS
#: neither holds to 10 % (noise reshuffles part of the phases).
RELAY_DOMINATES = 3.0
CYCLE_HOLDS = 8.0
#: Largest standard deviation of the relative load error in the fastest mode for
#: which the linear (Lyapunov) noise model is used: beyond it the excursions reach
#: the curvature of p(b) (near u_c the mode's variance grows as 2 / (2 - u lambda)).
NONLINEAR_NOISE = 0.1
#: Largest sensitivity d log Var / d log lambda_max of the fastest mode's steady
#: variance for which a MaxVio prediction is counted (proportional law:
#: u lam / (2 - u lam), 10 below 0.91 u_c): beyond it a 1 % error in the gain moves
#: the variance by more than 10 %.
ILL_CONDITIONED = 10.0
#: Experts per selected expert (N / K) from which the engine runs with
#: ``run.kernel = "sparse"`` (same law of the selections; measured on sequences of
#: 256 tokens: at N = 64 the sparse kernel is faster for K = 1, 2 and slower for
#: K = 6, 8; at N = 256 faster for every K here).
SPARSE_FROM = 16
#: Windows of the noise-free loop (enough to settle below 0.8 u_c).
TRAJECTORY_STEPS = 120


@dataclass(frozen=True)
class Scenario:
    """One group of sweep points (the rates)."""

    n: int
    k: int
    zipf: float
    noise: str
    law: str = "proportional"
    momentum: float = 0.0

    @property
    def label(self) -> str:
        law = self.law if self.law in ("proportional", "sign") else f"{self.law}{self.momentum:g}"
        return f"N={self.n} K={self.k} zipf={self.zipf:g} T={self.tokens} {law}"

    @property
    def tokens(self) -> int:
        s, length = TOKENS[self.noise]
        return s * length


def grid(name: str) -> list[Scenario]:
    """Scenarios of the quick, default and full grids."""
    skews = (0.5, 1.0, 1.5)
    if name == "full":
        cases = [(n, k, z, noise) for n in (16, 64, 256) for k in (1, 2, 6, 8)
                 for z in skews for noise in ("high", "low")]
    elif name == "default":
        cases = [(16, k, z, "high") for k in (1, 2, 8) for z in skews]
        cases += [(16, 2, 1.0, "low"), (64, 2, 1.0, "high"), (64, 8, 1.0, "high")]
    else:
        cases = [(16, 2, 1.0, "high")]
    out = []
    for n, k, z, noise in cases:
        out.append(Scenario(n, k, z, noise, "proportional"))
        out.append(Scenario(n, k, z, noise, "sign"))
    out.append(Scenario(16, 2, 1.0, "high", "ema", 0.9))
    if name != "quick":
        out.append(Scenario(16, 2, 1.0, "high", "ema", 0.5))
        out.append(Scenario(16, 2, 1.0, "high", "momentum_tanh", 0.5))
    return out


@dataclass
class Theory:
    """Predictions shared by the rates of one scenario."""

    mu: np.ndarray
    bstar: np.ndarray
    a: np.ndarray
    lam: np.ndarray
    u_c: float
    noise_cov: np.ndarray


@functools.lru_cache(maxsize=None)
def _balance(n: int, k: int, zipf: float) -> tuple[np.ndarray, ...]:
    """Popularity, equilibrium, Jacobian, loop gains and selection covariance at b*
    (shared by the laws and token counts of one (N, K, skew))."""
    mu = popularity("zipf", n, zipf_exponent=zipf)
    bstar = equilibrium(mu, topk=k)
    jac = jacobian(mu, bstar, topk=k)
    cov = selection_covariance(mu, bstar, topk=k)
    return mu, bstar, jac, loop_gains(jac, k), cov


def theory(scn: Scenario) -> Theory:
    mu, bstar, jac, lam, cov = _balance(scn.n, scn.k, scn.zipf)
    law = "proportional" if scn.law == "sign" else scn.law
    u_c = float(critical_rate(law, lam[-1], num_experts=scn.n, momentum=scn.momentum))
    noise = load_error_covariance(cov, tokens=scn.tokens, topk=scn.k)
    return Theory(mu, bstar, (scn.n / scn.k) * jac, lam, u_c, noise)


def run_engine(scn: Scenario, rates: list[float], steps: int, seed: int):
    seqs, length = TOKENS[scn.noise]
    # with many experts per selected one the O(K)-per-token kernel is the faster one
    kernel = "sparse" if scn.n >= SPARSE_FROM * scn.k else "auto"
    cfg = Config(run=RunConfig(steps=steps, replicas=2, seed=seed, record_displacement=False,
                               bias_dtype="float64", kernel=kernel),
                 batch=BatchConfig(num_sequences=seqs, seq_length=length),
                 router=RouterConfig(num_experts=scn.n, topk=scn.k),
                 traffic=TrafficConfig(skew="zipf", zipf_exponent=scn.zipf),
                 controller=ControllerConfig(type=scn.law, momentum=scn.momentum or 0.9),
                 sweep=SweepConfig(parameters={"controller.bias_update_rate": rates}))
    return simulate(cfg, progress=False)


def _settle_index(offset_SP: np.ndarray, scale: float) -> np.ndarray:
    """Windows until the offset stays inside the band (inf if it is outside at the end).

    The band is ``SETTLE_FRACTION`` of the initial offset. The settling time
    is the last exit from the band, interpolated geometrically between the
    two windows around it (the control-engineering definition, robust to
    the overshoot of second-order loops; fractional, so that short settling
    times are not rounded to whole windows).
    """
    band = SETTLE_FRACTION * scale
    out = offset_SP > band
    steps = out.shape[0]
    last = steps - 1 - np.argmax(out[::-1], axis=0)  # last window outside
    settled = ~out[-max(1, steps // 10):].any(axis=0)
    cols = np.arange(offset_SP.shape[1])
    above = offset_SP[last, cols]
    below = offset_SP[np.minimum(last + 1, steps - 1), cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.log(above / band) / np.log(above / below), 0.0, 1.0)
    frac = np.where(np.isfinite(frac), frac, 1.0)
    return np.where(settled, np.where(out.any(axis=0), last + frac, 0.0), np.inf)


def _row(rows, scn, quantity, mult, pred, sim, note="", tag=""):
    """One comparison; a ``note`` marks it outside the theory's domain (not counted)."""
    ratio = sim / pred if np.isfinite(pred) and np.isfinite(sim) and pred != 0 else math.nan
    within = bool(np.isfinite(ratio) and abs(ratio - 1.0) <= 0.10) if not note else None
    rows.append({"scenario": scn.label, "quantity": quantity, "u/u_c": mult,
                 "predicted": pred, "simulated": sim, "ratio": ratio, "within_10%": within,
                 "note": " ".join(x for x in (tag, note) if x)})


def _loop_critical(scn: Scenario, th: Theory, steps: int) -> tuple[float, np.ndarray]:
    """Noise-free loop from b = 0 on the exact map: the smallest rate (on a fine grid
    around u_c) that does not settle, and the settling windows at ``LINEAR_MULTS``.

    The loop sees expected loads, so it does not depend on the tokens per step: it is
    computed once per (N, K, skew, law) and shared by both token counts."""
    loop_uc, settle = _noise_free_loop(scn.n, scn.k, scn.zipf, scn.law, scn.momentum,
                                       min(steps, TRAJECTORY_STEPS))
    return loop_uc, settle.copy()


@functools.lru_cache(maxsize=None)
def _noise_free_loop(n: int, k: int, zipf: float, law: str, momentum: float,
                     steps: int) -> tuple[float, np.ndarray]:
    th = theory(Scenario(n, k, zipf, "high", law, momentum))
    fine = np.round(np.arange(0.5, 0.99, 0.05), 2)  # at and above u_c b* itself is unstable
    stable = np.array([m for m in LINEAR_MULTS if m < 1.0])
    mults_all = np.concatenate([stable, fine])
    # the stable rates 0.5, 0.8 and 0.95 are on the fine grid too: each loop runs once
    uniq, back = np.unique(mults_all, return_inverse=True)
    traj = deterministic_trajectory(th.mu, law=law, rate=None, rates=uniq * th.u_c,
                                    steps=steps, topk=k, momentum=momentum or 0.9, nodes=32,
                                    linear_at=(th.bstar, th.a * k / n), linear_tol=1e-2)
    tb = traj["bias_SPE"]
    offset = np.max(np.abs((tb - tb.mean(-1, keepdims=True)) - th.bstar), axis=-1)
    settle = _settle_index(offset, float(np.max(np.abs(th.bstar))))[back]
    # a rate fails if its loop does not settle; from u_c on, b* itself is unstable
    # (noise in the engine carries the loop off it)
    unsettled = np.append(fine[~np.isfinite(settle[stable.size:])], 1.0)
    first = unsettled.min()
    loop_uc = th.u_c * math.sqrt(first * (first - 0.05)) if first > 0.5 else math.nan
    out = np.full(len(LINEAR_MULTS), np.inf)
    out[:stable.size] = settle[:stable.size]
    return loop_uc, out


def analyse_linear(scn: Scenario, th: Theory, steps: int, seed: int, rows: list) -> None:
    loop_uc, pred_settle = _loop_critical(scn, th, steps)
    near = [] if not np.isfinite(loop_uc) else [round(loop_uc / th.u_c * f, 4)
                                                  for f in (0.9, 0.95, 1.05, 1.1)]
    mults = np.array(sorted(set(LINEAR_MULTS) | set(near)))
    rates = list(mults * th.u_c)
    ds = run_engine(scn, rates, steps, seed)
    bias = ds["bias"].values.mean(axis=2)  # (S, P, E), replica mean
    offset = np.max(np.abs((bias - bias.mean(-1, keepdims=True)) - th.bstar), axis=-1)
    scale = float(np.max(np.abs(th.bstar)))
    sim_settle = _settle_index(offset, scale)
    linear = settling_steps(scn.law, np.array(rates), th.lam, num_experts=scn.n,
                            momentum=scn.momentum, reduction=SETTLE_FRACTION)
    # steady statistics from twice the predicted settling time on (at least a third in)
    pred_all = np.interp(mults, LINEAR_MULTS, np.where(np.isfinite(pred_settle), pred_settle,
                                                       steps))
    start = np.maximum(steps // 3, 2 * pred_all).astype(int)
    mv_all = ds["maxvio_batch"].values.mean(axis=2)  # (S, P)
    mv_sim = np.array([mv_all[min(s0, steps - 1):, j].mean() for j, s0 in enumerate(start)])
    mv_pred = np.full(len(rates), np.nan)
    floor = np.full(len(rates), np.nan)
    top_sd = np.full(len(rates), np.nan)
    sens = np.full(len(rates), np.nan)
    vec = np.linalg.eigh(0.5 * (th.a + th.a.T))[1][:, -1]  # the fastest mode
    for j, u in enumerate(rates):
        if mults[j] < 1.0:
            cov, cov_x = steady_error_covariance(scn.law, u, th.a, th.noise_cov,
                                                 momentum=scn.momentum, with_bias=True)
            mv_pred[j] = expected_max_gaussian(np.zeros(scn.n), cov, samples=20000, seed=j)[0]
            floor[j] = 3.0 * math.sqrt(float(np.max(np.diag(cov_x))))
            top_sd[j] = math.sqrt(float(vec @ cov @ vec))
            try:  # d log Var / d log lambda of the fastest mode
                bumped = steady_error_covariance(scn.law, u, 1.01 * th.a, th.noise_cov,
                                                 momentum=scn.momentum)
                sens[j] = abs(math.log(float(vec @ bumped @ vec) / top_sd[j] ** 2)) / math.log(1.01)
            except ConfigError:
                sens[j] = math.inf
    # the engine's boundary: a point does not settle when its late MaxVio exceeds 1.5
    # times the engine's own steady level at 0.8 u_c (where every law here settles)
    j08 = int(np.argmin(np.abs(mults - 0.8)))
    ref = mv_sim[j08]
    # a stable rate whose transient outlasts the run is not a sign of instability
    late = (mults < 1.0) & (start > steps - 40)
    unstable = (mv_sim > 1.5 * ref) & ~late
    hi = mults[unstable].min(initial=np.inf)
    lo = mults[~unstable & (mults < hi)].max(initial=0.0)
    sim_uc = th.u_c * math.sqrt(lo * hi) if lo > 0 and np.isfinite(hi) else math.nan
    local = ""
    if np.isfinite(loop_uc) and abs(loop_uc / th.u_c - 1) > 0.1:
        inside = loop_uc * 0.95 <= sim_uc <= th.u_c * 1.05
        local = (f"bistable: the fixed point is stable up to u_c but the noise-free loop "
                 f"from b = 0 ends on a cycle from {loop_uc / th.u_c:.2f} u_c; engine "
                 f"boundary {'inside' if inside else 'OUTSIDE'} that range")
    if not local and top_sd[j08] > NONLINEAR_NOISE:
        local = (f"counting noise hides the boundary: at 0.8 u_c the fastest mode's noise sd "
                 f"is {top_sd[j08]:.2f}, MaxVio is noise-dominated on both sides of u_c")
    if scn.law == "momentum_tanh":
        local = local or ("tanh soft clamp: above u_c each step is at most u, the period-2 "
                          "oscillation stays small and the engine shows no sharp boundary")
    _row(rows, scn, "u_c (linear)", 1.0, th.u_c, sim_uc, local)
    loop_note = local or ("" if np.isfinite(loop_uc) else
                          "the noise-free loop from b = 0 settles at no rate of the fine grid "
                          f"within {TRAJECTORY_STEPS} windows: no loop boundary to compare")
    _row(rows, scn, "u_c (loop)", 1.0, loop_uc, sim_uc, loop_note)
    for j, m in enumerate(LINEAR_MULTS):
        jj = int(np.argmin(np.abs(mults - m)))
        if m >= 1.0:
            qual = "agrees" if unstable[jj] else "DISAGREES"
            soft = " (tanh soft clamp)" if scn.law == "momentum_tanh" else ""
            _row(rows, scn, "maxvio", m, math.nan, mv_sim[jj],
                 f"above u_c: no stationary state; engine above 1.5x its 0.8 u_c level: "
                 f"{qual}{soft}")
            continue
        if not np.isfinite(pred_settle[j]):
            qual = "agrees" if not np.isfinite(sim_settle[jj]) else "DISAGREES"
            _row(rows, scn, "settle", m, pred_settle[j], sim_settle[jj],
                 f"noise-free loop from b = 0 does not settle; engine: {qual}")
            continue
        noisy = floor[jj] > SETTLE_FRACTION * scale
        why = ""
        if noisy:
            why = "bias noise floor (3 sd) above the settling band"
        elif pred_settle[j] < 2.0:
            why = "settles within two windows: at the resolution of the measurement"
        elif np.isfinite(loop_uc) and m * th.u_c > 0.9 * loop_uc:
            why = ("within 10 % of the loop's boundary: the transient passes near the "
                   "cycle, the settling time is ill-conditioned")
        _row(rows, scn, f"settle (lin {linear[jj]:.0f})", m, pred_settle[j], sim_settle[jj], why)
        note = ""
        if start[jj] > steps - 40:
            note = "settles too late for the run"
        elif sens[jj] > ILL_CONDITIONED:
            note = (f"near u_c the fastest mode's variance moves {sens[jj]:.0f}x faster "
                    "than lam_max: ill-conditioned")
        elif top_sd[jj] > NONLINEAR_NOISE:
            note = (f"fastest mode's noise sd {top_sd[jj]:.2f} reaches the curvature of p(b): "
                    "the linear noise model is outside its domain")
        _row(rows, scn, "maxvio", m, mv_pred[jj], mv_sim[jj], note)


@functools.lru_cache(maxsize=None)
def _relay_cycle(n: int, k: int, zipf: float, rate: float) -> dict | None:
    """The noise-free relay cycle from b = 0 (None if it does not close within 3000
    steps); it sees expected loads, so both token counts share it."""
    plant = map_plant(popularity("zipf", n, zipf_exponent=zipf), topk=k)
    try:
        return relay_cycle(plant, rate, np.zeros(n), max_steps=3000)
    except ConfigError:
        return None


def analyse_sign(scn: Scenario, th: Theory, steps: int, seed: int, rows: list) -> None:
    scale = float(np.max(np.abs(th.bstar - th.bstar.mean())))
    rates, mults = [], []
    for m in SIGN_MULTS:
        u = m * th.u_c
        if scale / u > steps / 3:
            _row(rows, scn, "amp_b", m, math.nan, math.nan,
                 f"transient max|b*|/u = {scale / u:.0f} steps outlasts the run")
            continue
        rates.append(u)
        mults.append(m)
    if not rates:
        return
    ds = run_engine(scn, rates, steps, seed)
    late = slice(steps // 2, steps)
    bias = ds["bias"].values[late]  # (S, P, R, E)
    centred = bias - bias.mean(-1, keepdims=True)
    amp_b = np.sqrt(np.mean((centred - centred.mean(0)) ** 2, axis=(0, 2, 3)))
    load = ds["expert_load"].values[late].astype(float)
    err = load * scn.n / (scn.tokens * scn.k) - 1.0
    amp_c = np.sqrt(np.mean(err ** 2, axis=(0, 2, 3)))
    mv = ds["maxvio_batch"].values[late].mean(axis=(0, 2))
    sigma = np.sqrt(np.diag(th.noise_cov))
    resp = map_response(th.mu, th.bstar, topk=scn.k, nodes=48)
    gain = float(np.mean(np.diag(th.a)))
    for j, (u, m) in enumerate(zip(rates, mults)):
        note = "relay step ~ score range: outside the mean field" if m >= 1.0 else ""
        ratio = gain * u / float(np.mean(sigma))
        tag = f"[lam u/sigma={ratio:.1f}]"
        # per-expert amplitudes: the stochastic mean-field chain
        chain = relay_stationary(np.diag(th.a), sigma, u, response=resp)
        _row(rows, scn, "amp_b (chain)", m, chain["bias_rms"], amp_b[j], note, tag)
        _row(rows, scn, "amp_c (chain)", m, chain["error_rms"], amp_c[j], note, tag)
        # MaxVio, a maximum over experts, depends on how their phases line up: the
        # noise-free cycle keeps them in step once the relay dominates the noise
        cyc = None
        if ratio >= RELAY_DOMINATES and m < 1.0:
            cyc = _relay_cycle(scn.n, scn.k, scn.zipf, u)
        if cyc is not None:
            cross = "" if ratio >= CYCLE_HOLDS else (
                "crossover: noise reshuffles part of the cycle's phases; MaxVio depends on "
                "their arrangement (+-15 % between cycles)")
            _row(rows, scn, f"maxvio (cycle P={cyc['period']})", m,
                 cycle_maxvio(cyc, th.noise_cov)[0], mv[j], note or cross, tag)
        else:
            cross = "" if ratio < RELAY_DOMINATES else (
                "crossover: the relay starts to hold the experts' phases in step")
            _row(rows, scn, "maxvio (chain)", m, chain["maxvio"], mv[j], note or cross, tag)


def _fmt(x) -> str:
    if isinstance(x, float) and not np.isfinite(x):
        return "-" if math.isnan(x) else "inf"
    return f"{x:.4g}"


def print_table(rows: list, out=sys.stdout) -> None:
    head = f"{'scenario':<38} {'quantity':<15} {'u/u_c':>6} {'predicted':>10} " \
           f"{'simulated':>10} {'ratio':>6}  ok   note"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        ok = {True: "yes", False: "NO", None: "  "}[r["within_10%"]]
        print(f"{r['scenario']:<38} {r['quantity']:<15} {r['u/u_c']:>6g} "
              f"{_fmt(r['predicted']):>10} {_fmt(r['simulated']):>10} {_fmt(r['ratio']):>6}  "
              f"{ok:<4} {r['note']}", file=out)


def analyse(scn: Scenario, steps: int, seed: int) -> tuple[list, float]:
    """The rows of one scenario and the seconds they took."""
    t0 = time.time()
    rows: list = []
    th = theory(scn)
    if scn.law == "sign":
        analyse_sign(scn, th, steps, seed, rows)
    else:
        analyse_linear(scn, th, steps, seed, rows)
    return rows, time.time() - t0


def analyse_group(group: list[tuple[int, Scenario]], steps: int,
                  seed: int) -> list[tuple[int, list, float]]:
    """Scenarios that share their noise-free predictions (one worker's task)."""
    return [(i, *analyse(scn, steps, seed)) for i, scn in group]


def _groups(scenarios: list[Scenario]) -> list[list[tuple[int, Scenario]]]:
    """Scenarios grouped by what their predictions share (all but the token count),
    largest N first so that the longest tasks start early."""
    groups: dict[tuple, list[tuple[int, Scenario]]] = {}
    for i, scn in enumerate(scenarios):
        groups.setdefault((scn.n, scn.k, scn.zipf, scn.law, scn.momentum), []).append((i, scn))
    return sorted(groups.values(), key=lambda g: -g[0][1].n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small grid (about a minute)")
    size.add_argument("--full", action="store_true", help="the study's whole grid (long)")
    parser.add_argument("--steps", type=int, default=150, help="steps per run (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=str, default=None,
                        help="also write the rows to a CSV (row by row, as scenarios finish)")
    parser.add_argument("--experts", type=int, nargs="+", default=None, metavar="N",
                        help="only the scenarios with these numbers of experts")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes, one routing thread each (default 1: this "
                             "process, every thread)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be at least 1")
    name = "quick" if args.quick else "full" if args.full else "default"
    scenarios = [s for s in grid(name) if args.experts is None or s.n in args.experts]
    if not scenarios:
        parser.error(f"--experts {args.experts}: no scenario of the {name} grid has them")
    by_index: dict[int, list] = {}
    start = time.time()
    fh = open(args.csv, "w", newline="") if args.csv else None
    writer = None

    def record(i: int, rows: list, seconds: float) -> None:
        nonlocal writer
        by_index[i] = rows
        if fh is not None and rows:
            if writer is None:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
            writer.writerows(rows)
            fh.flush()
        print(f"[{len(by_index)}/{len(scenarios)} {seconds:6.1f} s, "
              f"{time.time() - start:6.0f} s in all] {scenarios[i].label}", file=sys.stderr,
              flush=True)

    try:
        if args.jobs == 1:
            for i, scn in enumerate(scenarios):
                record(i, *analyse(scn, args.steps, args.seed))
        else:
            _run_pool(args.jobs, _groups(scenarios), args.steps, args.seed, record)
    finally:
        if fh is not None:
            fh.close()
    rows = [r for i in sorted(by_index) for r in by_index[i]]
    print_table(rows)
    counted = [r for r in rows if r["within_10%"] is not None]
    hits = sum(r["within_10%"] for r in counted)
    print(f"\n{len(rows)} rows, {len(counted)} compared in the theory's domain, "
          f"{len(rows) - len(counted)} outside it (noted); {time.time() - start:.0f} s")
    print(f"share of comparisons within 10%: {hits}/{len(counted)} = "
          f"{hits / max(len(counted), 1):.1%}")
    return 0


def _run_pool(jobs: int, groups: list, steps: int, seed: int, record) -> None:
    """Run the groups on ``jobs`` worker processes (one routing thread each) that stop
    with this one, on an error or on Ctrl-C."""
    from concurrent.futures import as_completed

    from routesim.sweep import worker_pool

    with worker_pool(jobs, threads_per_worker=1) as pool:
        futures = [pool.submit(analyse_group, g, steps, seed) for g in groups]
        for fut in as_completed(futures):
            for i, rows, seconds in fut.result():
                record(i, rows, seconds)


if __name__ == "__main__":
    sys.exit(main())
