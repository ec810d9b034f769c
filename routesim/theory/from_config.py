"""The theory of a whole config: every point's scenario, its critical rate and predictions.

:func:`critical_rates` gives the rate ``u_c`` at which each point's linearised
loop loses stability (:mod:`.stability`, on the equilibrium of the point's
own traffic and router); :func:`resolve_rates` turns rates written in its
units (``bias_update_rate = "0.5 u_c"``) into numbers before a run;
:func:`predict_points` composes the load map, the equilibrium, the loop
gains, the noise-free loop on the exact map, the stationary loop with
counting noise and, for the sign laws, the relay cycle and chain into one
set of per-point predictions (``routesim.predict`` makes it a Dataset).
:func:`not_modelled` names the settings of a point the theory leaves out.

Points that share a scenario (popularity, noise scale, sequence
correlation, where the bias acts) share its equilibrium and Jacobian, which
are computed once.

Shape legend: P points, E experts.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..config import Config
from ..config._rates import critical_rate_blockers, parse_rate
from ..controllers.registry import get_law
from ..exceptions import ConfigError, SolverError, UnstableLoopError
from ..traffic import popularity
from .expected_load import equilibrium, jacobian, load_map, selection_covariance
from .limit_cycle import cycle_maxvio, map_plant, map_response, relay_cycle, relay_stationary
from .maxvio import expected_max_gaussian, expected_maxvio, load_error_covariance
from .maxvio import sequence_covariance
from .stability import (LINEAR_LAWS, critical_rate, deterministic_trajectory, loop_gains,
                        settling_steps, steady_error_covariance)

__all__ = ["critical_rates", "resolve_rates", "not_modelled", "predict_points",
           "SIGN_LAWS", "RELAY_DOMINATES", "CYCLE_HOLDS", "SETTLE_FRACTION"]

#: Relay laws: a cycle and a stationary chain instead of a critical rate.
SIGN_LAWS = ("sign", "sign_centred")
#: Relay amplitude over counting noise, ``r = lambda u / sigma``: below
#: RELAY_DOMINATES the stochastic chain predicts MaxVio, from CYCLE_HOLDS up the
#: noise-free cycle from b = 0 plus counting noise (docs/theory.md).
RELAY_DOMINATES = 3.0
CYCLE_HOLDS = 8.0
#: Settling: the bias offset stays within this fraction of its initial value.
SETTLE_FRACTION = 0.1
#: Cap on the windows of the noise-free loop iterated for a settling time.
MAX_LOOP_WINDOWS = 1000
#: Quadrature nodes of the noise-free loop's map, and the relative load error below
#: which it continues on the linearised map (second-order error, about its square).
LOOP_NODES = 32
LINEAR_TOL = 0.03
#: Significant digits kept of a resolved rate (the same number on every platform).
RATE_DIGITS = 12


@dataclass
class _Scenario:
    """What the points of one scenario share (filled on demand)."""

    mu: np.ndarray
    router: dict
    init: float
    rho: float
    seq_length: int
    bstar: np.ndarray | None = None
    jac: np.ndarray | None = None
    lam: np.ndarray | None = None
    error: str | None = None


def _router(point: Config) -> dict:
    r, t = point.router, point.traffic
    return {"topk": r.topk, "score_function": r.score_function, "noise": t.noise,
            "noise_scale": t.noise_scale, "bias_mode": r.bias_mode,
            "bias_on": "logits" if get_law(point.controller.type).bias_on_logits else "scores"}


def _scenario_key(point: Config) -> tuple:
    t = point.traffic
    return (t.skew, t.linear_spread if t.skew == "linear" else None,
            t.zipf_exponent if t.skew == "zipf" else None, t.noise_scale, t.seq_correlation,
            _router(point)["bias_on"])


def _scenario(point: Config) -> _Scenario:
    t, r = point.traffic, point.router
    mu = popularity(t.skew, r.num_experts, linear_spread=t.linear_spread,
                    zipf_exponent=t.zipf_exponent)
    return _Scenario(mu=mu, router=_router(point),
                     init=1.0 if r.bias_mode == "multiplicative" else 0.0,
                     rho=t.seq_correlation, seq_length=point.batch.seq_length)


def _solve_loop(sc: _Scenario) -> None:
    """Equilibrium, Jacobian and loop gains of a scenario (once)."""
    if sc.bstar is not None or sc.error is not None:
        return
    kw = sc.router
    if kw["score_function"] == "softmax" and kw["bias_mode"] == "additive" \
            and kw["bias_on"] == "scores":
        sc.error = "an additive bias on softmax probabilities has no exact equilibrium"
        return
    try:
        sc.bstar = equilibrium(sc.mu, **kw)
    except SolverError as err:
        sc.error = str(err)
        return
    sc.jac = jacobian(sc.mu, sc.bstar, **kw)
    sc.lam = loop_gains(sc.jac, kw["topk"])


def _token_cov(sc: _Scenario, bias: np.ndarray) -> np.ndarray:
    """Per-token selection covariance, with the sequence term ``(L - 1) C`` when correlated."""
    kw = sc.router
    cov = selection_covariance(sc.mu, bias, **kw)
    if sc.rho > 0 and kw["noise"] == "normal":
        rest = {k: v for k, v in kw.items() if k not in ("topk", "noise_scale", "noise")}
        seq = sequence_covariance(sc.mu, bias, topk=kw["topk"], seq_correlation=sc.rho,
                                  noise_scale=kw["noise_scale"], **rest)
        cov = cov + (sc.seq_length - 1) * seq
    return cov


def _scenarios(points: Sequence[Config]) -> tuple[list[int], list[_Scenario]]:
    keys: dict[tuple, int] = {}
    index, out = [], []
    for p in points:
        key = _scenario_key(p)
        if key not in keys:
            keys[key] = len(out)
            out.append(_scenario(p))
        index.append(keys[key])
    return index, out


def _critical(point: Config, sc: _Scenario) -> float:
    c = point.controller
    if c.type not in LINEAR_LAWS or sc.lam is None:
        return math.nan
    return float(critical_rate(c.type, sc.lam[-1], num_experts=point.router.num_experts,
                               momentum=c.momentum, tanh_scale=c.tanh_scale))


def critical_rates(config: Config) -> np.ndarray:
    """The critical rate ``u_c`` of every point (NaN where none is predicted).

    ``u_c = 2 (1 + beta) / ((1 - beta) lambda_max)`` (times ``N`` for
    ``ema``, ``tanh_scale`` for ``momentum_tanh``; ``beta = 0`` for
    ``proportional``), with ``lambda_max`` the largest loop gain at the
    equilibrium of the point's traffic (:mod:`.stability`). NaN for other
    laws and for points where :func:`routesim.config._rates.critical_rate_blockers`
    finds a setting the loop gain does not model.

    Parameters
    ----------
    config : Config

    Returns
    -------
    u_c_P : ndarray (P,)

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2},
    ...     "traffic": {"skew": "zipf"},
    ...     "sweep": {"controller.type": ["proportional", "ema", "sign"]}})
    >>> uc = critical_rates(cfg)
    >>> bool(np.isclose(uc[1] / uc[0], 8 * (1 + 0.9) / (1 - 0.9))), bool(np.isnan(uc[2]))
    (True, True)
    """
    points = config.points()
    index, scenarios = _scenarios(points)
    out = np.full(len(points), math.nan)
    for i, p in enumerate(points):
        if p.controller.type not in LINEAR_LAWS or critical_rate_blockers(p):
            continue
        sc = scenarios[index[i]]
        _solve_loop(sc)
        out[i] = _critical(p, sc)
    return out


def resolve_rates(config: Config) -> Config:
    """``config`` with every rate written as ``"<m> u_c"`` resolved to a number.

    The numbers (``m`` times the point's :func:`critical_rates`, kept to
    12 significant digits) go to ``sweep.resolved``, one per point; the
    expressions stay where they were written (and in the point labels).
    A config without such a rate, or already resolved, is returned as is.

    Parameters
    ----------
    config : Config

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        If a point's critical rate is not finite (no loop gain) or its
        equilibrium cannot be solved.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2},
    ...     "traffic": {"skew": "zipf"}, "controller": {"type": "proportional"},
    ...     "sweep": {"controller.bias_update_rate": ["0.5 u_c", "2 u_c"]}})
    >>> done = resolve_rates(cfg)
    >>> u = done.sweep.resolved["controller.bias_update_rate"]
    >>> round(u[1] / u[0], 9), done.points()[0].controller.bias_update_rate == u[0]
    (4.0, True)
    >>> done.point_labels()
    ('bias_update_rate=0.5 u_c', 'bias_update_rate=2 u_c')
    """
    points = config.points()
    if not any(isinstance(p.controller.bias_update_rate, str) for p in points):
        return config
    index, scenarios = _scenarios(points)
    values = []
    for i, p in enumerate(points):
        rate = p.controller.bias_update_rate
        if not isinstance(rate, str):
            values.append(float(rate))
            continue
        sc = scenarios[index[i]]
        _solve_loop(sc)
        uc = _critical(p, sc)
        if not (math.isfinite(uc) and uc > 0):
            why = sc.error or "the loop gain is 0, so no finite critical rate"
            raise ConfigError(f"controller.bias_update_rate = {rate!r}: point {i} "
                              f"({config.point_labels()[i]}): {why}; give a number")
        values.append(float(f"{parse_rate(rate) * uc:.{RATE_DIGITS}g}"))
    sweep = dataclasses.replace(config.sweep,
                                resolved={"controller.bias_update_rate": values})
    return Config(**{name: getattr(config, name) for name in
                     ("run", "batch", "traffic", "router", "controller", "penalty")},
                  sweep=sweep)


def _windows_per_step(point: Config) -> float:
    c = point.controller
    if c.window == "micro_batch":
        return float(point.batch.num_micro_batches)
    if c.window == "steps":
        return 1.0 / c.update_every
    return 1.0


def not_modelled(point: Config) -> list[str]:
    """Settings of one point that the predictions leave out, one line each.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2,
    ...                                    "num_groups": 4, "group_topk": 2}})
    >>> not_modelled(cfg.points()[0])
    ['router.num_groups = 4: group-limited top-K is not modelled']
    """
    out = [f"{path} = {value!r}: {why}" for path, value, why in critical_rate_blockers(point)]
    c, t = point.controller, point.traffic
    if t.kind == "popularity" and t.seq_correlation > 0 and t.noise != "normal":
        out.append(f"traffic.seq_correlation = {t.seq_correlation!r}: with {t.noise} noise the "
                   "load map and the counting noise ignore the correlation")
    if c.type not in LINEAR_LAWS + SIGN_LAWS + ("none",):
        out.append(f"controller.type = {c.type!r}: no theory for this law (critical rate, "
                   "settling and steady MaxVio are NaN)")
    if c.type in SIGN_LAWS and point.router.bias_mode == "multiplicative":
        out.append("router.bias_mode = 'multiplicative': the sign law's cycle and chain are "
                   "written for an additive bias (its steady MaxVio is NaN)")
    if c.type == "ema" and c.bias_cap > 0:
        out.append(f"controller.bias_cap = {c.bias_cap!r}: the clamp is assumed inactive")
    if c.type != "none" and _windows_per_step(point) != 1.0:
        out.append(f"controller.window = {c.window!r}: steady MaxVio is predicted only for "
                   "one controller window per step")
    return out


def _offset(bias_SPE: np.ndarray, bstar: np.ndarray, multiplicative: bool) -> np.ndarray:
    """``max_i |b_i - b*_i|`` after removing the common shift (or factor)."""
    if multiplicative:
        b = bias_SPE / np.exp(np.mean(np.log(bias_SPE), axis=-1, keepdims=True))
    else:
        b = bias_SPE - bias_SPE.mean(axis=-1, keepdims=True)
    return np.max(np.abs(b - bstar), axis=-1)


def _settle_index(offset_SP: np.ndarray, scale: float) -> np.ndarray:
    """Windows until the offset stays within SETTLE_FRACTION of ``scale`` (inf if never).

    The last exit from the band, interpolated geometrically between the two
    windows around it (fractional, so short settling times are not rounded).
    """
    band = SETTLE_FRACTION * scale
    out = offset_SP > band
    steps = out.shape[0]
    last = steps - 1 - np.argmax(out[::-1], axis=0)
    settled = ~out[-max(1, steps // 10):].any(axis=0)
    cols = np.arange(offset_SP.shape[1])
    above = offset_SP[last, cols]
    below = offset_SP[np.minimum(last + 1, steps - 1), cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.log(above / band) / np.log(above / below), 0.0, 1.0)
    frac = np.where(np.isfinite(frac), frac, 1.0)
    return np.where(settled, np.where(out.any(axis=0), last + frac, 0.0), np.inf)


def _progress(progress: bool | None, total: int, big: bool) -> tqdm:
    disable = (not (big and sys.stderr.isatty())) if progress is None else (not progress)
    return tqdm(total=total, desc="routesim theory", disable=disable, file=sys.stderr,
                leave=False)


_VARIABLES = ("rate", "critical_rate", "rate_over_critical", "loop_gain_max",
              "settling_steps", "settling_steps_linear", "maxvio_zero_bias",
              "maxvio_zero_bias_stderr", "maxvio_steady", "maxvio_steady_stderr",
              "relay_ratio", "sign_cycle_period", "sign_bias_amplitude", "sign_load_amplitude")


def predict_points(config: Config, *, progress: bool | None = None, samples: int = 20000,
                   seed: int = 0, settling: str = "loop") -> dict[str, Any]:
    """Per-point predictions of the theory for every point of ``config``.

    Parameters
    ----------
    config : Config
        Popularity traffic, token choice (anything else is refused). Rates
        written as ``"<m> u_c"`` are resolved first (:func:`resolve_rates`).
    progress : bool or None
        Progress bar on stderr over scenarios and points; None shows it on a
        terminal when ``router.num_experts >= 64``.
    samples, seed : int
        Gaussian Monte Carlo draws of each expected maximum and their seed
        (point ``i`` uses ``seed + i``).
    settling : {"loop", "linear"}
        ``loop``: ``settling_steps`` from the noise-free loop on the exact
        map (one map evaluation per window until the loads are within 3 % of
        balance: the dearest part for hundreds of experts); ``linear``: from
        the spectral radius alone (``settling_steps_linear``, also returned
        with ``loop``).

    Returns
    -------
    dict
        ``config`` (resolved); ``load_map_PE`` (selection probabilities at
        the initial bias, rows sum to K), ``equilibrium_bias_PE``; per point
        (P,) arrays ``rate``, ``critical_rate``, ``rate_over_critical``,
        ``loop_gain_max``, ``settling_steps`` (steps until the bias offset
        stays within 10 % of its initial value, on the noise-free loop on the
        exact map, warm-up included), ``settling_steps_linear`` (from the
        spectral radius), ``maxvio_zero_bias`` (expected MaxVio_batch at the
        initial bias, no control), ``maxvio_steady`` (expected steady
        MaxVio_batch), their standard errors, and for the sign laws
        ``relay_ratio`` (``lambda u / sigma``), ``sign_cycle_period``,
        ``sign_bias_amplitude`` and ``sign_load_amplitude`` (NaN where not
        applicable); ``note_P`` (why a prediction is missing or outside its
        tested domain, "" if none) and ``not_modelled_P`` (lists of strings,
        :func:`not_modelled`).

    Raises
    ------
    ConfigError
        For traffic other than popularity, or Expert Choice.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2},
    ...     "batch": {"num_sequences": 8, "seq_length": 256},
    ...     "traffic": {"skew": "zipf"}, "controller": {"type": "proportional"},
    ...     "sweep": {"controller.bias_update_rate": ["0.5 u_c", "2 u_c"]}})
    >>> out = predict_points(cfg, samples=2000)
    >>> np.round(out["rate_over_critical"], 9).tolist(), bool(np.isinf(out["settling_steps"][1]))
    ([0.5, 2.0], True)
    >>> bool(out["maxvio_zero_bias"][0] > 5 * out["maxvio_steady"][0])
    True
    """
    if settling not in ("loop", "linear"):
        raise ConfigError(f"settling = {settling!r}: must be 'loop' or 'linear'")
    first = config.points()[0]
    if first.traffic.kind != "popularity":
        raise ConfigError(f"traffic.kind = {first.traffic.kind!r}: the theory predicts "
                          "popularity traffic only")
    if first.router.router_type != "token_choice":
        raise ConfigError(f"router.router_type = {first.router.router_type!r}: the theory "
                          "predicts token-choice routing only")
    config = resolve_rates(config)
    points = config.points()
    n_pts, n = len(points), first.router.num_experts
    k, tokens = first.router.topk, first.batch.tokens_per_step
    index, scenarios = _scenarios(points)
    out: dict[str, Any] = {name: np.full(n_pts, math.nan) for name in _VARIABLES}
    out["load_map_PE"] = np.full((n_pts, n), math.nan)
    out["equilibrium_bias_PE"] = np.full((n_pts, n), math.nan)
    notes: list[list[str]] = [[] for _ in range(n_pts)]
    zero: dict[int, tuple] = {}
    star: dict[int, np.ndarray] = {}
    with _progress(progress, len(scenarios) + n_pts, n >= 64) as bar:
        for j, sc in enumerate(scenarios):
            init = np.full(n, sc.init)
            p0 = load_map(sc.mu, init, **sc.router)
            cov0 = _token_cov(sc, init)
            zero[j] = (p0, *expected_maxvio(p0, cov0, tokens=tokens, topk=k, samples=samples,
                                            seed=seed))
            _solve_loop(sc)
            if sc.bstar is not None:
                star[j] = _token_cov(sc, sc.bstar)
            bar.update(1)
        groups = _settling_groups(points, index, scenarios)
        bar.total += len(groups)
        bar.refresh()
        _settling(points, scenarios, groups, out, notes, bar, settling == "loop")
        for i, p in enumerate(points):
            sc, j = scenarios[index[i]], index[i]
            _point(i, p, sc, zero[j], star.get(j), out, notes[i], tokens, samples, seed)
            bar.update(1)
    out["config"] = config
    out["note_P"] = ["; ".join(x) for x in notes]
    out["not_modelled_P"] = [not_modelled(p) for p in points]
    return out


def _settling_groups(points: Sequence[Config], index: list[int],
                     scenarios: list[_Scenario]) -> dict[tuple, list[int]]:
    """Points of the linear laws grouped by (scenario, law, momentum, tanh_scale)."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        c = p.controller
        sc = scenarios[index[i]]
        if c.type in LINEAR_LAWS and sc.bstar is not None and c.bias_update_rate > 0:
            groups.setdefault((index[i], c.type, c.momentum, c.tanh_scale), []).append(i)
    return groups


def _settling(points: Sequence[Config], scenarios: list[_Scenario],
              groups: dict[tuple, list[int]], out: dict, notes: list[list[str]],
              bar: Any, iterate: bool) -> None:
    """Settling steps of the linear laws: the noise-free loop on the exact map from the
    initial bias, all rates of one (scenario, law, filter) at once."""
    for (j, law, beta, scale), members in groups.items():
        sc = scenarios[j]
        p0 = points[members[0]]
        n = p0.router.num_experts
        rates = np.array([points[i].controller.bias_update_rate for i in members])
        linear = settling_steps(law, rates, sc.lam, num_experts=n, momentum=beta,
                                tanh_scale=scale, reduction=SETTLE_FRACTION)
        mult = p0.router.bias_mode == "multiplicative"
        start = np.full((1, 1, n), sc.init)
        size = float(_offset(start, sc.bstar, mult)[0, 0])
        windows = max(int(p0.run.steps * _windows_per_step(p0)), 1)
        finite = linear[np.isfinite(linear)]
        horizon = int(min(windows, MAX_LOOP_WINDOWS,
                          3 * (finite.max() if finite.size else 0) + 40))
        if size == 0.0:
            loop = np.zeros(len(members))
        elif not iterate:
            loop = linear
        else:
            kw = {k: v for k, v in sc.router.items() if k not in ("topk", "bias_on")}
            traj = deterministic_trajectory(
                sc.mu, law=law, rates=rates, steps=horizon, topk=sc.router["topk"],
                momentum=beta, tanh_scale=scale, nodes=LOOP_NODES,
                linear_at=(sc.bstar, sc.jac), linear_tol=LINEAR_TOL, **kw)
            loop = _settle_index(_offset(traj["bias_SPE"], sc.bstar, mult), size)
        for m, i in enumerate(members):
            p = points[i]
            warm = p.controller.warmup_steps if get_law(law).warmup else 0
            per_step = _windows_per_step(p)
            out["settling_steps_linear"][i] = (warm + linear[m]) / per_step
            settle = loop[m]
            if not np.isfinite(settle) and np.isfinite(linear[m]) and linear[m] > horizon / 3:
                settle = linear[m]  # slower than the loop iterated: the linear tail
                notes[i].append("settling from the linear estimate (slower than "
                                f"{horizon} windows)")
            elif not np.isfinite(settle) and np.isfinite(linear[m]):
                notes[i].append("the noise-free loop from the initial bias does not settle "
                                "although b* is stable (bistable: it ends on a cycle)")
            out["settling_steps"][i] = (warm + settle) / per_step
        bar.update(1)


def _point(i: int, p: Config, sc: _Scenario, zero: tuple, cov_star: np.ndarray | None,
           out: dict, notes: list[str], tokens: int, samples: int, seed: int) -> None:
    """The rate-dependent predictions of one point."""
    c = p.controller
    n, k = p.router.num_experts, p.router.topk
    p0, mv0, se0 = zero
    out["load_map_PE"][i] = p0
    out["maxvio_zero_bias"][i], out["maxvio_zero_bias_stderr"][i] = mv0, se0
    uses_rate = "bias_update_rate" in get_law(c.type).uses
    rate = float(c.bias_update_rate) if uses_rate else math.nan
    out["rate"][i] = rate
    if c.type == "none" or rate == 0.0:  # the bias stays where it starts
        out["maxvio_steady"][i], out["maxvio_steady_stderr"][i] = mv0, se0
    if sc.bstar is None:
        notes.append(sc.error or "no equilibrium")
        return
    out["equilibrium_bias_PE"][i] = sc.bstar
    out["loop_gain_max"][i] = sc.lam[-1]
    uc = _critical(p, sc)
    out["critical_rate"][i] = uc
    out["rate_over_critical"][i] = rate / uc if np.isfinite(uc) else math.nan
    if c.type == "none" or rate == 0.0:
        return
    if _windows_per_step(p) != 1.0:
        return  # not_modelled says so
    a = (n / k) * sc.jac
    noise = load_error_covariance(cov_star, tokens=tokens, topk=k)
    if c.type in LINEAR_LAWS:
        if not rate < uc:
            notes.append("at or above the critical rate: no stationary state")
            return
        try:
            cov = steady_error_covariance(c.type, rate, a, noise, momentum=c.momentum,
                                          tanh_scale=c.tanh_scale)
        except UnstableLoopError:
            notes.append("the linear loop has no stationary state")
            return
        m, se = expected_max_gaussian(np.zeros(n), cov, samples=samples, seed=seed + i)
        out["maxvio_steady"][i], out["maxvio_steady_stderr"][i] = float(m), float(se)
        if c.type == "ema" and c.momentum > 0 and rate > 0.5 * uc:
            notes.append("ema with momentum above 0.5 u_c: the loop may end on a cycle "
                         "(bistable, docs/theory.md)")
        return
    if c.type in SIGN_LAWS and p.router.bias_mode == "additive":
        _relay(i, p, sc, a, noise, rate, out, notes, samples, seed)
        return
    notes.append(f"no steady-state theory for controller.type = {c.type!r}"
                 + (" with a multiplicative bias" if c.type in SIGN_LAWS else ""))


def _relay(i: int, p: Config, sc: _Scenario, a: np.ndarray, noise: np.ndarray, rate: float,
           out: dict, notes: list[str], samples: int, seed: int) -> None:
    """Sign laws: the stochastic chain and, once the relay dominates, the noise-free cycle."""
    n = p.router.num_experts
    kw = {k: v for k, v in sc.router.items() if k not in ("topk", "bias_on")}
    sigma = np.sqrt(np.clip(np.diag(noise), 0.0, None))
    gain = np.diag(a)
    ratio = float(np.mean(gain) * rate / np.mean(sigma))
    out["relay_ratio"][i] = ratio
    resp = map_response(sc.mu, sc.bstar, topk=sc.router["topk"], nodes=48, **kw)
    chain = relay_stationary(gain, sigma, rate, response=resp)
    out["sign_bias_amplitude"][i] = chain["bias_rms"]
    out["sign_load_amplitude"][i] = chain["error_rms"]
    uc_prop = float(critical_rate("proportional", sc.lam[-1], num_experts=n))
    if rate >= uc_prop:
        notes.append("relay step of order the score range (rate above the proportional "
                     "law's u_c): outside the mean field")
    if ratio < RELAY_DOMINATES:
        out["maxvio_steady"][i] = chain["maxvio"]
        out["maxvio_steady_stderr"][i] = 0.0
        return
    try:
        cyc = relay_cycle(map_plant(sc.mu, topk=sc.router["topk"], **kw), rate,
                          np.full(n, sc.init), centred=p.controller.type == "sign_centred",
                          max_steps=5000)
    except SolverError:
        notes.append("the noise-free sign loop did not repeat within 5000 windows")
        out["maxvio_steady"][i] = chain["maxvio"]
        return
    out["sign_cycle_period"][i] = cyc["period"]
    m, se = cycle_maxvio(cyc, noise, samples=max(samples // 5, 100), seed=seed + i)
    out["maxvio_steady"][i], out["maxvio_steady_stderr"][i] = m, se
    if ratio < CYCLE_HOLDS:
        notes.append(f"sign crossover 3 <= r = {ratio:.1f} < 8: noise reshuffles part of the "
                     "cycle's phases, MaxVio uncertain by up to about 35 %")
    else:
        notes.append("sign MaxVio from the cycle reached from the initial bias; counting "
                     "noise can select another cycle on some scenarios (docs/theory.md)")
