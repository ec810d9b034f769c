"""Compiled routing kernels: which one runs, and the glue to the engine.

The engine's array code (:func:`routesim.engines.exact.make_simulator`, "generic")
runs everything on any namespace. For the common case, popularity traffic
with normal noise, token-choice routing without capacity, two compiled
kernels compute the same routed counts without materialising the
(P, R, T, E) arrays:

``numba``
    CPU, NumPy backend (:mod:`routesim.engines.kernels.numba`; needs the ``fast``
    extra). Thresholded exact top-K over both cores.
``cuda``
    GPU, CuPy backend (:mod:`routesim.engines.kernels.cuda`): one thread per token.

A third one, ``sparse`` (:mod:`routesim.engines.kernels.sparse`, NumPy backend,
Numba), draws only the experts near each token's top-K (O(K) per token rather
than O(N)): its selections have the same law as the dense model's but come from
other random numbers, so ``auto`` never picks it; it is asked for by name.

Both draw the same counter-based random numbers as :mod:`routesim.rng` and
break exact ties of the selection score as the generic path does (the lower
expert index wins), so their selections agree with it wherever their float32
functions round like NumPy's (``exp``, ``log``, ``sin``/``cos`` may differ by
an ulp: a near-tie can then go the other way). ``run.kernel = "auto"`` picks the compiled
kernel where it applies and the generic code elsewhere; naming a kernel that
cannot run the config raises :class:`routesim.ConfigError` before any work.

Shape legend: P points, R replicas, B sequences, E experts.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ... import rng, traffic
from ..._backend import is_numpy
from ...config import Config
from ...config.kernel import KERNELS, sparse_unsupported_reason, unsupported_reason
from ...exceptions import ConfigError

__all__ = ["KERNELS", "numba_available", "unsupported_reason", "choose_kernel", "make_router"]

#: A compiled router: (traffic state, bias (P, R, E), step, first token, sequences)
#: -> (routed counts (P, R, B, E), displaced selections (P, R) or None).
Router = Callable[[traffic.TrafficState, Any, int, int, int], tuple[Any, Any]]


@functools.cache
def numba_available() -> tuple[bool, str]:
    """``(usable, reason)`` for the Numba kernel (probed once)."""
    try:
        import numba  # noqa: F401  (probe only)
    except ImportError as err:
        return False, f"Numba is not installed ({err}); pip install routesim[fast]"
    return True, "ok"


def choose_kernel(points: Sequence[Config], xp: ModuleType) -> str:
    """Resolve ``run.kernel`` to ``"generic"``, ``"numba"``, ``"cuda"`` or ``"sparse"``.

    Parameters
    ----------
    points : sequence of Config
    xp : namespace
        The engine's array namespace.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        If ``run.kernel`` names a kernel that cannot run here.

    Examples
    --------
    ``"auto"`` takes the compiled kernel of the backend where it applies:

    >>> import numpy as np, array_api_strict
    >>> from routesim import Config
    >>> cfg = Config()
    >>> choose_kernel(cfg.points(), np) == ("numba" if numba_available()[0] else "generic")
    True
    >>> choose_kernel(cfg.points(), array_api_strict)  # no compiled kernel for it
    'generic'
    >>> ec = cfg.replace(**{"router.router_type": "expert_choice"})
    >>> choose_kernel(ec.points(), np)  # not covered by the kernels
    'generic'
    """
    want = points[0].run.kernel
    name = getattr(xp, "__name__", "other")
    backend = "numpy" if is_numpy(xp) else ("cupy" if name.split(".")[-1] == "cupy" else name)
    native = {"numpy": "numba", "cupy": "cuda"}.get(backend)
    if want == "generic":
        return "generic"
    if want == "sparse":
        if backend != "numpy":
            raise ConfigError(f"run.kernel = 'sparse': needs run.backend = 'numpy' (the engine "
                              f"runs on {backend!r}); use 'auto' or 'generic'")
        reason = sparse_unsupported_reason(points)
        if reason is not None:
            raise ConfigError(f"run.kernel = 'sparse': cannot run {reason}; use 'auto' or "
                              f"'generic'")
        if not numba_available()[0]:
            raise ConfigError(f"run.kernel = 'sparse': {numba_available()[1]}")
        return "sparse"
    reason = unsupported_reason(points)
    if want == "auto":
        if native is None or reason is not None:
            return "generic"
        if native == "numba" and not numba_available()[0]:
            return "generic"
        return native
    if want != native:
        raise ConfigError(f"run.kernel = {want!r}: needs run.backend = "
                          f"{'numpy' if want == 'numba' else 'cupy'!r} (the engine runs on "
                          f"{backend!r}); use 'auto' or 'generic'")
    if reason is not None:
        raise ConfigError(f"run.kernel = {want!r}: cannot run {reason}; use 'auto' or 'generic'")
    if want == "numba" and not numba_available()[0]:
        raise ConfigError(f"run.kernel = 'numba': {numba_available()[1]}")
    return want


def make_router(points: Sequence[Config], xp: ModuleType, keys_PR: Any,
                tparams: traffic.TrafficParams) -> Router | None:
    """The compiled router of these points, or None for the generic path.

    Parameters
    ----------
    points : sequence of Config
    xp : namespace
    keys_PR : uint64 array (P, R)
        The run's random keys (in ``xp``).
    tparams : traffic.TrafficParams

    Returns
    -------
    callable or None
        ``router(tstate, bias_PRE, step, token_start, n_seqs)`` returning the
        routed counts per sequence (P, R, B, E) and the displaced selections
        (P, R), or None when not recorded.

    Examples
    --------
    Two sequences of 8 tokens, 4 experts, top-2: a bias of 9 on experts 2
    and 3 outweighs any sigmoid score, so each sequence sends its 8 tokens
    to both of them, and no selection differs from the unbiased top-2 when the
    bias is zero:

    >>> import numpy as np, pytest
    >>> _ = pytest.importorskip("numba")  # the ``fast`` extra
    >>> from routesim import Config, rng, traffic
    >>> cfg = Config().replace(**{"router.num_experts": 4, "router.topk": 2,
    ...                           "batch.num_sequences": 2, "batch.seq_length": 8,
    ...                           "run.record_displacement": True})
    >>> keys = rng.point_keys(0, [0], 1)
    >>> tparams = traffic.make_traffic_params(cfg.points())
    >>> tstate = traffic.init_traffic(np, tparams, keys)
    >>> route = make_router(cfg.points(), np, keys, tparams)
    >>> counts, displaced = route(tstate, np.float32([[[0, 0, 9, 9]]]), 0, 0, 2)
    >>> counts.tolist()
    [[[[0, 0, 8, 8], [0, 0, 8, 8]]]]
    >>> counts, displaced = route(tstate, np.zeros((1, 1, 4), np.float32), 0, 0, 2)
    >>> counts.sum(axis=-1).tolist(), displaced.tolist()  # 8 tokens x 2 a sequence
    ([[[16, 16]]], [[0.0]])
    >>> generic = cfg.replace(**{"run.kernel": "generic"})
    >>> make_router(generic.points(), np, keys, tparams) is None
    True
    """
    kind = choose_kernel(points, xp)
    if kind == "generic":
        return None
    cfg = points[0]
    run, router, L = cfg.run, cfg.router, cfg.batch.seq_length
    p, r = keys_PR.shape
    n, k = router.num_experts, router.topk
    mult = router.bias_mode == "multiplicative"
    rho_P = np.asarray(tparams.rho_P, dtype=np.float32)
    use_rho = bool(np.any(rho_P > 0))
    scale_Q = np.repeat(np.asarray(tparams.noise_scale_P, dtype=np.float32), r)
    rho_Q = np.repeat(rho_P, r)

    def seq_noise(step: int, token_start: int, n_seqs: int) -> Any:
        rows = xp.arange(token_start // L, token_start // L + n_seqs, dtype=xp.uint64)
        return rng.noise(xp, "normal", keys_PR, step, rng.Stream.SEQUENCE, rows, n, xp.float32)

    if kind == "sparse":
        return _sparse_router(cfg, tparams, keys_PR)
    if kind == "numba":
        from .numba import route_counts

        def route(tstate, bias_PRE, step, token_start, n_seqs):
            bases = rng.stream_base(np, keys_PR, step, rng.Stream.NOISE).reshape(-1)
            a = (seq_noise(step, token_start, n_seqs).reshape(p * r, n_seqs, n)
                 if use_rho else None)
            counts, disp = route_counts(
                bases, token_start, n_seqs * L, L,
                np.asarray(tstate.mu_PRE, dtype=np.float32).reshape(p * r, n), scale_Q,
                np.asarray(bias_PRE).astype(np.float32).reshape(p * r, n), k,
                router.score_function, mult, run.record_displacement,
                rho_Q=rho_Q if use_rho else None, a_QBE=a)
            disp_PR = disp.reshape(p, r).astype(np.float64) if run.record_displacement else None
            return counts.reshape(p, r, n_seqs, n), disp_PR

        return route
    from .cuda import make_cuda_router

    return make_cuda_router(xp, keys_PR, L, n, k, router.score_function, mult,
                            run.record_displacement, scale_Q, rho_Q if use_rho else None,
                            seq_noise)


def _sparse_router(cfg: Config, tparams: traffic.TrafficParams, keys_PR: Any) -> Router:
    """The sparse kernel's router (:mod:`routesim.engines.kernels.sparse`)."""
    from . import sparse

    p, r = keys_PR.shape
    router, L, n = cfg.router, cfg.batch.seq_length, cfg.router.num_experts
    rho_Q = np.repeat(np.asarray(tparams.rho_P, dtype=np.float64), r)
    use_rho = bool(np.any(rho_Q > 0))
    scale_Q = np.repeat(np.asarray(tparams.noise_scale_P, dtype=np.float64), r)

    def route(tstate, bias_PRE, step, token_start, n_seqs):
        hit = rng.stream_base(np, keys_PR, step, sparse.HIT_STREAM).reshape(-1)
        fill = rng.stream_base(np, keys_PR, step, sparse.FILL_STREAM).reshape(-1)
        a = None
        if use_rho:
            rows = np.arange(token_start // L, token_start // L + n_seqs, dtype=np.uint64)
            a = rng.noise(np, tparams.noise, keys_PR, step, rng.Stream.SEQUENCE, rows, n,
                          np.float64).reshape(p * r, n_seqs, n)
        counts = sparse.route_counts_sparse(
            hit, fill, token_start // L, n_seqs, L,
            np.asarray(tstate.mu_PRE, dtype=np.float64).reshape(p * r, n), scale_Q,
            np.asarray(bias_PRE, dtype=np.float64).reshape(p * r, n), router.topk,
            tparams.noise, router.score_function, router.bias_mode,
            rho_Q=rho_Q if use_rho else None, a_QBE=a)
        return counts.reshape(p, r, n_seqs, n), None

    return route
