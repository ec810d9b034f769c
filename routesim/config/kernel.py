"""Which compiled routing kernel can run a config: rules of the config alone.

The compiled kernels (:mod:`routesim.engines.kernels`) cover token-choice
routing of popularity traffic with normal noise, dropless, without groups or
quantile balancing. These rules depend only on the config, so the config
refuses a named kernel that cannot run it when it is built, before any work;
whether Numba or a GPU is present is a property of the machine, checked by
the engine when it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..controllers.registry import get_law
from ..exceptions import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .core import Config

__all__ = ["KERNELS", "unsupported_reason", "sparse_unsupported_reason", "check_kernel"]

#: Values of ``run.kernel``.
KERNELS = ("auto", "generic", "numba", "cuda", "sparse")


def unsupported_reason(points: Sequence["Config"]) -> str | None:
    """Why the compiled kernels cannot route these points (None if they can).

    Parameters
    ----------
    points : sequence of Config
        The points of one run (sweep applied).

    Returns
    -------
    str or None
        The first unsupported setting, named by its field.

    Examples
    --------
    >>> from routesim import Config
    >>> unsupported_reason([Config()]) is None
    True
    >>> unsupported_reason([Config().replace(**{"traffic.noise": "gumbel"})])[:31]
    "traffic.noise = 'gumbel' (the c"
    """
    cfg = points[0]
    t, r = cfg.traffic, cfg.router
    checks = [
        (r.router_type == "token_choice", f"router.router_type = {r.router_type!r}"),
        (t.kind == "popularity", f"traffic.kind = {t.kind!r}"),
        (t.noise == "normal", f"traffic.noise = {t.noise!r}"),
        (r.dropless, f"router.capacity_factor = {r.capacity_factor!r}"),
        (r.num_groups is None or r.num_groups == 1, f"router.num_groups = {r.num_groups!r}"),
        (all(not get_law(p.controller.type).bias_on_logits for p in points),
         "controller.type = 'quantile'"),
    ]
    for ok, what in checks:
        if not ok:
            return what + " (the compiled kernels cover token-choice routing of popularity " \
                          "traffic with normal noise, dropless, without groups or quantile " \
                          "balancing)"
    return None


def sparse_unsupported_reason(points: Sequence["Config"]) -> str | None:
    """Why the sparse kernel (``run.kernel = "sparse"``) cannot route these points.

    It covers token-choice routing of popularity traffic (any noise law, with or
    without the per-sequence component), sigmoid or sqrt-softplus gate with an
    additive or multiplicative bias, dropless, without groups, quantile balancing
    or displacement, up to 16384 experts.

    Parameters
    ----------
    points : sequence of Config

    Returns
    -------
    str or None

    Examples
    --------
    >>> from routesim import Config
    >>> cfg = Config().replace(**{"run.record_displacement": False, "traffic.noise": "gumbel"})
    >>> sparse_unsupported_reason([cfg]) is None
    True
    >>> sparse_unsupported_reason([Config()])[:31]
    'run.record_displacement = True '
    """
    cfg = points[0]
    t, r, run = cfg.traffic, cfg.router, cfg.run
    checks = [
        (r.router_type == "token_choice", f"router.router_type = {r.router_type!r}"),
        (t.kind == "popularity", f"traffic.kind = {t.kind!r}"),
        (r.score_function != "softmax", "router.score_function = 'softmax'"),
        (r.dropless, f"router.capacity_factor = {r.capacity_factor!r}"),
        (r.num_groups is None or r.num_groups == 1, f"router.num_groups = {r.num_groups!r}"),
        (all(not get_law(p.controller.type).bias_on_logits for p in points),
         "controller.type = 'quantile'"),
        (not run.record_displacement, "run.record_displacement = True"),
        (r.num_experts <= 16384, f"router.num_experts = {r.num_experts!r}"),
    ]
    for ok, what in checks:
        if not ok:
            return what + " (the sparse kernel covers token-choice routing of popularity " \
                          "traffic, sigmoid or sqrt-softplus gate, dropless, without groups, " \
                          "quantile balancing or displacement, up to 16384 experts)"
    return None


def check_kernel(points: Sequence["Config"]) -> None:
    """Refuse a named compiled kernel (``run.kernel``) that cannot run this config.

    Parameters
    ----------
    points : sequence of Config
        The points of one run (sweep applied).

    Raises
    ------
    ConfigError
        If ``run.kernel`` names a kernel for another backend or one that does
        not cover the config. ``"auto"`` and ``"generic"`` always pass.

    Examples
    --------
    >>> from routesim import Config
    >>> check_kernel([Config()])  # run.kernel = "auto"
    >>> Config().replace(**{"run.kernel": "numba",  # doctest: +ELLIPSIS
    ...                     "router.router_type": "expert_choice"})
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: run.kernel = 'numba': cannot run router.router_type = ...
    """
    run = points[0].run
    want = run.kernel
    if want not in ("numba", "cuda", "sparse"):
        return
    need = "cupy" if want == "cuda" else "numpy"
    if run.backend != need:
        raise ConfigError(f"run.kernel = {want!r}: needs run.backend = {need!r} (the engine "
                          f"runs on {run.backend!r}); use 'auto' or 'generic'")
    reason = (sparse_unsupported_reason if want == "sparse" else unsupported_reason)(points)
    if reason is not None:
        raise ConfigError(f"run.kernel = {want!r}: cannot run {reason}; use 'auto' or 'generic'")
