"""Invariants of routing and control as reusable checks.

Each check raises ``AssertionError`` with a message naming what broke,
where, and by how much; it returns None when the invariant holds. Checks
take plain arrays or a result Dataset of :func:`routesim.simulate`
(variables ``load``, ``kept_load``, ``bias``; attribute ``config``).

Legend: S steps, P points, R replicas, T tokens, E experts, K top-k,
B micro-batches.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np

from ..config import BatchConfig, Config
from ..routing import capacity as _capacity
from ..routing import select_topk
from ..theory import load_map

__all__ = [
    "check_conservation",
    "check_distinct_experts",
    "check_permutation_equivariance",
    "check_shift_invariance",
    "check_monotone_load",
    "check_sign_step",
    "check_bias_sum",
    "check_capacity",
    "check_datasets_agree",
    "check_backends_agree",
]


def _stored(ds: Any) -> SimpleNamespace:
    """The fields the checks read from a Dataset's stored config.

    Read from the JSON without rebuilding the Config, so a Dataset made by a
    law registered only for a while can still be checked after it is gone.
    """
    data = json.loads(ds.attrs["config"])
    default = Config()

    def get(section: str, name: str) -> Any:
        return data.get(section, {}).get(name, getattr(getattr(default, section), name))

    b = BatchConfig(num_sequences=get("batch", "num_sequences"),
                    seq_length=get("batch", "seq_length"),
                    micro_batch_size=get("batch", "micro_batch_size"))
    cap = get("router", "capacity_factor")
    return SimpleNamespace(batch=b, rate=get("controller", "bias_update_rate"),
                           window=get("controller", "window"),
                           bias_mode=get("router", "bias_mode"),
                           bias_dtype=get("run", "bias_dtype"),
                           topk=get("router", "topk"), num_experts=get("router", "num_experts"),
                           capacity_factor=None if cap is None else float(cap))


def _fail(what: str, where: Any, detail: str) -> None:
    raise AssertionError(f"{what} broken at {where}: {detail}")


def check_conservation(load: Any, topk: int | None = None, tokens: int | None = None) -> None:
    """Every window routes ``K * T`` selections before dropping: loads sum to ``K * T``.

    Parameters
    ----------
    load : array (..., E) or Dataset
        Loads per window (a Dataset's ``load``, counted before capacity).
    topk, tokens : int or None
        ``K`` and ``T``; read from the Dataset when ``load`` is one.

    Examples
    --------
    >>> import numpy as np
    >>> check_conservation(np.array([[3, 1], [2, 2]]), topk=1, tokens=4)
    >>> check_conservation(np.array([3, 2]), topk=1, tokens=4)
    Traceback (most recent call last):
    ...
    AssertionError: conservation broken at index (0,): loads sum to 5, expected K*T = 1*4 = 4
    """
    if hasattr(load, "attrs"):
        topk, tokens = int(load.attrs["topk"]), int(load.attrs["tokens_per_step"])
        load = load["expert_load"].values
    if topk is None or tokens is None:
        raise TypeError("check_conservation: topk and tokens are needed with an array of loads")
    total = np.sum(np.atleast_2d(np.asarray(load, dtype=np.int64)), axis=-1)
    bad = np.argwhere(total != topk * tokens)
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        _fail("conservation", f"index {where}",
              f"loads sum to {int(total[where])}, expected K*T = {topk}*{tokens} = "
              f"{topk * tokens}")


def check_distinct_experts(idx_TK: Any, num_experts: int) -> None:
    """Each token selects K distinct experts, all in [0, N).

    Parameters
    ----------
    idx_TK : int array (..., K)
        Selected expert indices per token.
    num_experts : int
        ``N``.

    Examples
    --------
    >>> import numpy as np
    >>> check_distinct_experts(np.array([[0, 2], [1, 0]]), 3)
    >>> check_distinct_experts(np.array([[0, 2], [1, 1]]), 3)
    Traceback (most recent call last):
    ...
    AssertionError: distinct experts broken at token (1,): selected [1, 1]
    """
    idx = np.asarray(idx_TK)
    flat = idx.reshape(-1, idx.shape[-1])
    srt = np.sort(flat, axis=-1)
    bad = (srt[:, 1:] == srt[:, :-1]).any(axis=-1) | (srt[:, 0] < 0) | (srt[:, -1] >= num_experts)
    if bad.any():
        i = int(np.argmax(bad))
        where = tuple(int(j) for j in np.unravel_index(i, idx.shape[:-1]))
        _fail("distinct experts", f"token {where}", f"selected {flat[i].tolist()}")


def _as_sets(idx: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(idx), axis=-1)


def check_permutation_equivariance(scores_TE: Any, perm: Sequence[int], topk: int,
                                   select: Callable[..., Any] | None = None) -> None:
    """Relabelling the experts relabels the selection: ``sel(s[:, perm]) = perm^-1(sel(s))``.

    Parameters
    ----------
    scores_TE : array (T, E)
        Selection scores without ties (see :func:`~routesim.testing.strategies.score_matrices`).
    perm : sequence of int
        A permutation of ``range(E)``.
    topk : int
        ``K``.
    select : callable or None
        ``select(scores, topk) -> idx (T, K)``; default
        :func:`routesim.routing.select_topk` on NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    >>> check_permutation_equivariance(s, [2, 0, 1], 1)
    >>> check_permutation_equivariance(s, [2, 0, 1], 1, select=lambda s, k: np.zeros((2, 1), int))
    Traceback (most recent call last):
    ...
    AssertionError: permutation equivariance broken at token 0: selected [0], but [2] after relabelling the experts and mapping the selection back
    """
    select = select or (lambda s, k: select_topk(np, s, k))
    s = np.asarray(scores_TE)
    perm_E = np.asarray(perm)
    before = _as_sets(select(s, topk))
    after = _as_sets(perm_E[np.asarray(select(s[:, perm_E], topk))])
    bad = np.argwhere((before != after).any(axis=-1))
    if bad.size:
        t = int(bad[0][0])
        _fail("permutation equivariance", f"token {t}",
              f"selected {before[t].tolist()}, but {after[t].tolist()} after relabelling "
              "the experts and mapping the selection back")


def check_shift_invariance(scores_TE: Any, shift: float, topk: int,
                           select: Callable[..., Any] | None = None) -> None:
    """Adding the same bias to every expert leaves the (additive) top-K unchanged.

    Parameters
    ----------
    scores_TE : array (T, E)
        Selection scores without ties.
    shift : float
        Uniform bias added to every expert.
    topk : int
        ``K``.
    select : callable or None
        ``select(scores, topk) -> idx (T, K)``; default
        :func:`routesim.routing.select_topk` on NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.1, 0.9, 0.5]])
    >>> check_shift_invariance(s, 3.0, 2)
    >>> check_shift_invariance(s, 3.0, 2, select=lambda s, k: np.argsort(s)[..., :k])
    Traceback (most recent call last):
    ...
    AssertionError: shift invariance broken at token 0: top-K [0, 2] unshifted, [0, 2] after a shift of 3.0 (expected the largest [1, 2])
    """
    select = select or (lambda s, k: select_topk(np, s, k))
    s = np.asarray(scores_TE, dtype=np.float64)
    before = _as_sets(select(s, topk))
    after = _as_sets(select(s + shift, topk))
    truth = _as_sets(np.argsort(-s, axis=-1, kind="stable")[..., :topk])
    bad = np.argwhere(((before != after) | (before != truth)).any(axis=-1))
    if bad.size:
        t = int(bad[0][0])
        _fail("shift invariance", f"token {t}",
              f"top-K {before[t].tolist()} unshifted, {after[t].tolist()} after a shift of "
              f"{shift} (expected the largest {truth[t].tolist()})")


def check_monotone_load(mu_E: Any, bias_E: Any, expert: int, raise_by: float, *, topk: int,
                        load: Callable[..., Any] | None = None, tol: float = 1e-9,
                        **kwargs: Any) -> None:
    """Raising one expert's bias never lowers its expected load.

    Parameters
    ----------
    mu_E, bias_E : array (E,)
        Popularity logits and bias.
    expert : int
        The expert whose bias is raised.
    raise_by : float >= 0
        How much it is raised.
    topk : int
        ``K``.
    load : callable or None
        ``load(mu, bias, topk=..., **kwargs) -> p (E,)``; default
        :func:`routesim.theory.load_map`.
    tol : float >= 0
        Allowed decrease (quadrature or Monte-Carlo error).
    **kwargs
        Passed to ``load`` (``score_function``, ``noise``, ``noise_scale``...).

    Examples
    --------
    >>> import numpy as np
    >>> check_monotone_load(np.zeros(4), np.zeros(4), 1, 0.1, topk=2)
    >>> flipped = lambda mu, b, topk: -np.asarray(b) + topk / len(b)
    >>> check_monotone_load(np.zeros(4), np.zeros(4), 1, 0.1, topk=2, load=flipped)
    Traceback (most recent call last):
    ...
    AssertionError: monotone load broken at expert 1: raising its bias by 0.1 moves its load from 0.5 to 0.4
    """
    load = load or load_map
    bias_E = np.asarray(bias_E, dtype=np.float64)
    raised_E = bias_E.copy()
    raised_E[expert] += raise_by
    p0 = float(np.asarray(load(np.asarray(mu_E, dtype=np.float64), bias_E, topk=topk,
                               **kwargs))[expert])
    p1 = float(np.asarray(load(np.asarray(mu_E, dtype=np.float64), raised_E, topk=topk,
                               **kwargs))[expert])
    if p1 < p0 - tol:
        _fail("monotone load", f"expert {expert}",
              f"raising its bias by {raise_by} moves its load from {p0:.6g} to {p1:.6g}")


def _bias_path(ds: Any) -> tuple[np.ndarray, SimpleNamespace]:
    """Bias (S+1, P, R, E) with the starting bias prepended, and the stored settings."""
    cfg = _stored(ds)
    bias = np.asarray(ds["bias"].values, dtype=np.float64)
    start = 1.0 if cfg.bias_mode == "multiplicative" else 0.0
    return np.concatenate([np.full_like(bias[:1], start), bias]), cfg


def check_sign_step(ds: Any, rate: float | None = None, *, rtol: float = 1e-5) -> None:
    """A sign law moves each bias by at most ``u`` per window.

    A step holds several windows when ``controller.window = "micro_batch"``
    (one per micro-batch), so the bound per step is ``u`` times that number.

    Parameters
    ----------
    ds : Dataset
        Result of :func:`routesim.simulate` (variable ``bias``).
    rate : float or None
        ``u``; default the config's ``controller.bias_update_rate`` (of every
        point: the check reads the first point's config, so sweep over
        nothing that changes ``u`` or the window).
    rtol : float >= 0
        Relative slack for the bias dtype's rounding.

    Examples
    --------
    >>> import routesim
    >>> cfg = routesim.config_from_dict({"run": {"steps": 5}, "batch": {"num_sequences": 2,
    ...     "seq_length": 8}, "router": {"num_experts": 4, "topk": 1}})
    >>> check_sign_step(routesim.simulate(cfg, progress=False))
    """
    bias, cfg = _bias_path(ds)
    u = cfg.rate if rate is None else rate
    per_step = cfg.batch.num_micro_batches if cfg.window == "micro_batch" else 1
    limit = u * per_step
    step_SPRE = np.abs(np.diff(bias, axis=0))
    worst = float(step_SPRE.max(initial=0.0))
    if worst > limit * (1 + rtol) + 1e-7:
        s, p, r, e = (int(i) for i in np.unravel_index(int(np.argmax(step_SPRE)), step_SPRE.shape))
        _fail("sign step", f"step {s}, point {p}, replica {r}, expert {e}",
              f"the bias moved by {worst:.6g}, more than u x windows = {u} x {per_step}")


def check_bias_sum(ds: Any, *, atol: float | None = None) -> None:
    """A centred law keeps the bias sum over experts at its start.

    Parameters
    ----------
    ds : Dataset
        Result of :func:`routesim.simulate` (variable ``bias``).
    atol : float or None
        Allowed drift of the sum; default ``E x 1e-5`` for float32 biases,
        ``E x 1e-12`` for float64, times the number of steps.

    Examples
    --------
    >>> import routesim
    >>> cfg = routesim.config_from_dict({"run": {"steps": 5}, "batch": {"num_sequences": 2,
    ...     "seq_length": 8}, "router": {"num_experts": 4, "topk": 1},
    ...     "controller": {"type": "sign_centred"}})
    >>> check_bias_sum(routesim.simulate(cfg, progress=False))
    """
    bias, cfg = _bias_path(ds)
    n, steps = bias.shape[-1], bias.shape[0]
    if atol is None:
        eps = 1e-5 if cfg.bias_dtype == "float32" else 1e-12
        atol = n * eps * steps * max(1.0, float(np.abs(bias).max(initial=0.0)))
    drift_SPR = np.abs(bias.sum(axis=-1) - bias[:1].sum(axis=-1))
    if drift_SPR.max(initial=0.0) > atol:
        s, p, r = (int(i) for i in np.unravel_index(int(np.argmax(drift_SPR)), drift_SPR.shape))
        _fail("bias sum", f"step {s - 1}, point {p}, replica {r}",
              f"the bias sum moved by {float(drift_SPR[s, p, r]):.6g} (allowed {atol:.3g})")


def check_capacity(kept: Any, cap: int | None = None) -> None:
    """No expert keeps more tokens than its capacity.

    Parameters
    ----------
    kept : int array (..., E) or Dataset
        Kept tokens per micro-batch and expert (``RoutedBlock.kept_PRBE``),
        or a Dataset: its ``kept_load`` per step is held to the capacity
        per micro-batch times the micro-batches per step.
    cap : int or None
        Capacity per expert and micro-batch (read from the Dataset's config
        when ``kept`` is one; None there means dropless, which passes).

    Examples
    --------
    >>> import numpy as np
    >>> check_capacity(np.array([[2, 3], [3, 0]]), 3)
    >>> check_capacity(np.array([[2, 4]]), 3)
    Traceback (most recent call last):
    ...
    AssertionError: capacity broken at index (0, 1): 4 tokens kept, capacity 3
    """
    if hasattr(kept, "attrs"):
        cfg = _stored(kept)
        b = cfg.batch
        if cfg.capacity_factor is None or np.isinf(cfg.capacity_factor):
            return
        tokens_mb = b.sequences_per_micro_batch * b.seq_length
        cap = _capacity(tokens_mb, cfg.topk, cfg.num_experts,
                        cfg.capacity_factor) * b.num_micro_batches
        kept = kept["kept_load"].values
    kept = np.asarray(kept)
    bad = np.argwhere(kept > cap)
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        _fail("capacity", f"index {where}", f"{int(kept[where])} tokens kept, capacity {cap}")


def check_datasets_agree(a: Any, b: Any, variables: Sequence[str] = ("expert_load", "kept_load", "bias"),
                         *, rtol: float = 1e-6) -> None:
    """Two result Datasets hold the same values (counts exactly, biases to ``rtol``).

    Parameters
    ----------
    a, b : Dataset
        Results of :func:`routesim.simulate`.
    variables : sequence of str
        Variables compared.
    rtol : float >= 0
        Relative tolerance of floating variables.

    Examples
    --------
    >>> import routesim
    >>> cfg = routesim.config_from_dict({"run": {"steps": 3}, "batch": {"num_sequences": 2,
    ...     "seq_length": 8}, "router": {"num_experts": 4, "topk": 1}})
    >>> ds = routesim.simulate(cfg, progress=False)
    >>> check_datasets_agree(ds, ds)
    """
    for name in variables:
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.shape != y.shape:
            _fail("agreement", name, f"shapes {x.shape} and {y.shape}")
        if np.issubdtype(x.dtype, np.integer):
            bad = np.argwhere(x != y)
        else:
            bad = np.argwhere(~np.isclose(x, y, rtol=rtol, atol=rtol * 1e-3))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            _fail("agreement", f"{name}{list(where)}", f"{x[where]!r} against {y[where]!r}")


def check_backends_agree(config: Any, backends: Sequence[str] = ("numpy", "array_api_strict"),
                         **kwargs: Any) -> None:
    """The same config gives the same results on every backend (generic routing code).

    Parameters
    ----------
    config : Config
        Run on each backend with ``run.kernel = "generic"``.
    backends : sequence of str
        Backends compared with the first one.
    **kwargs
        Passed to :func:`check_datasets_agree`.

    Examples
    --------
    >>> import routesim
    >>> cfg = routesim.config_from_dict({"run": {"steps": 3}, "batch": {"num_sequences": 2,
    ...     "seq_length": 8}, "router": {"num_experts": 4, "topk": 1}})
    >>> check_backends_agree(cfg)
    """
    from ..run import simulate  # the run layer sits above the invariants' own imports

    runs = [simulate(config.replace(**{"run.backend": name, "run.kernel": "generic"}),
                     progress=False) for name in backends]
    for name, ds in zip(backends[1:], runs[1:]):
        try:
            check_datasets_agree(runs[0], ds, **kwargs)
        except AssertionError as err:
            raise AssertionError(f"backends {backends[0]} and {name}: {err}") from None
