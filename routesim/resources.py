"""Memory and work of a run, estimated from its config before anything is allocated.

:func:`estimate` adds up the largest arrays of the engine that will run;
:func:`check` refuses a run whose estimate exceeds the memory available
(``MemAvailable`` of ``/proc/meminfo``, or ``run.max_memory`` when set) with
one line naming the fields and the estimate, and announces very long runs on
stderr (their progress bar is then shown).

Shape legend: S steps, P points run together, R replicas, E experts,
T tokens per step, t tokens routed at once (a chunk of a micro-batch),
B sequences per step, D feature dimension, L tokens per sequence.

The terms (bytes; the constants are bytes per element of each term, measured
with ``tracemalloc`` on the NumPy backend, see ``tests/test_resources.py``):

========================  ===========================  ===========================
term                      elements                     engine
========================  ===========================  ===========================
recorded outputs          S * P * R * E                all (bias, loads, metrics)
routed chunk              P * R * t * E                exact (logits and selection)
per-sequence counts       P * R * B * E                exact, learning
token features            P * R * t * D                exact and learning, features
router weights            P * R * E * D                learning (weights, Adam, grads)
logits of a step          P * R * T * E                learning (all tokens at once)
drop by position          S * P * R * L                learning with capacity (recorded)
Jacobians                 P * R * E * E                mean-field
load-map tables           a constant (48 MB)           mean-field
========================  ===========================  ===========================

Measured against ``tracemalloc`` peaks of mid-size runs, the estimate is
within a factor 2 either way (``tests/test_resources.py``); it counts NumPy
allocations, not the interpreter, the imported modules or compiled kernels.

Work is counted in logit elements: ``S * T * P * R * E`` for the exact
engine (times ``3 D`` for the learning engine's matrix products) and
``S * micro_batches * P * R * E**2`` for the mean-field draws.

The estimate is of the host (NumPy) memory; with CuPy the working arrays
live on the device and only the recorded outputs on the host.

Examples
--------
>>> from routesim.config import Config
>>> est = estimate(Config())
>>> est.bytes < 2**30, est.largest
(True, 'routed chunk')
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from .config._numerics import format_bytes
from . import controllers
from .exceptions import ResourceError

__all__ = ["Estimate", "estimate", "available_memory", "check", "LONG_RUN_OPERATIONS",
           "MAX_OPERATIONS"]

#: Bytes per element of each term (see the module docstring).
RECORDED_BYTES = {"exact": 96, "meanfield": 144, "learning": 144}
CHUNK_BYTES = 32
CHUNK_BYTES_DROPPING = 64  # with capacity dropping: one-hot masks and weights too
COUNT_BYTES = 24
FEATURE_BYTES = 24
WEIGHT_BYTES = 64
STEP_LOGIT_BYTES = 96
STEP_DROP_BYTES = 8  # learning with capacity: the kept mask of a step (measured)
JACOBIAN_BYTES = 80
#: The mean-field load map's fixed working tables (bytes, measured).
MEANFIELD_BASE_BYTES = 48 * 10**6
#: Runs above this many operations are announced on stderr with their progress shown.
LONG_RUN_OPERATIONS = 10**12
#: Runs above this many operations are refused (months at 1e11 operations a second).
MAX_OPERATIONS = 10**18

@dataclass(frozen=True)
class Estimate:
    """Estimated peak memory and work of a run.

    Attributes
    ----------
    bytes : int
        Peak host memory, the sum of :attr:`terms`.
    operations : int
        Logit elements drawn and routed (see the module docstring).
    terms : dict of str to (int, str)
        Bytes of each term and the fields whose product gives it.
    operation_fields : str
        The fields whose product gives :attr:`operations`.

    Examples
    --------
    >>> est = Estimate(bytes=40, operations=7, terms={"a": (10, "x"), "b": (30, "y")},
    ...                operation_fields="x")
    >>> est.largest
    'b'
    """

    bytes: int
    operations: int
    terms: dict
    operation_fields: str

    @property
    def largest(self) -> str:
        """Name of the largest term."""
        return max(self.terms, key=lambda name: self.terms[name][0])


def _chunk_tokens(config: Any, points: int) -> int:
    """Tokens the exact engine routes at once (see ``engine._chunk_sequences``)."""
    from .engines.exact import ENGINE_CHUNK_ELEMENTS

    b, r = config.batch, config.router
    per_mb = b.sequences_per_micro_batch
    law = controllers.get_law(config.controller.type)
    whole = law.needs_dual_estimate or law.bias_on_logits  # the dual needs the whole batch
    if not r.dropless or whole or r.router_type != "token_choice":
        return per_mb * b.seq_length
    fit = ENGINE_CHUNK_ELEMENTS // (points * config.run.replicas * b.seq_length
                                    * r.num_experts)
    return min(per_mb, max(1, fit)) * b.seq_length


def estimate(config: Any, point_indices: Sequence[int] | None = None) -> Estimate:
    """Estimate the peak memory and the work of simulating ``config``.

    Parameters
    ----------
    config : Config
    point_indices : sequence of int, optional
        The points run together (default: all).

    Returns
    -------
    Estimate
        Nothing is allocated: the estimate takes microseconds even for a
        config that would need petabytes.

    Examples
    --------
    The mean-field engine's Jacobians take ``P * R * E * E * 80`` bytes and its
    records ``S * P * R * E * 144``; here ``P = R = 1``, ``E = 64``, ``S = 200``:

    >>> from routesim.config import Config
    >>> est = estimate(Config().replace(**{"run.engine": "meanfield"}))
    >>> est.terms["Jacobians"][0] == 64 * 64 * 80, est.terms["recorded outputs"][0]
    (True, 1843200)
    >>> est.largest, est.bytes == 1843200 + 64 * 64 * 80 + 48 * 10**6
    ('load-map tables', True)
    """
    run, b, r, t = config.run, config.batch, config.router, config.traffic
    P = (config.num_points if point_indices is None else len(point_indices))
    layers = config.model.num_layers
    P *= layers  # every layer is a row of the point axis
    R, E, S, T, B = run.replicas, r.num_experts, run.steps, b.tokens_per_step, b.num_sequences
    D = t.feature_dim if t.kind == "features" else 0
    rows = P * R
    f = {"S": f"run.steps ({S})",
         "P": f"points ({P})" if layers == 1 else f"points x model.num_layers ({P})",
         "R": f"run.replicas ({R})",
         "E": f"router.num_experts ({E})", "D": f"traffic.feature_dim ({D})",
         "T": f"tokens per step (batch.num_sequences x batch.seq_length = {T})",
         "B": f"batch.num_sequences ({B})", "L": f"batch.seq_length ({b.seq_length})"}

    def names(axes: str) -> str:
        return " x ".join(f[a] for a in axes)

    engine = "learning" if config.penalty.learn else run.engine
    terms = {"recorded outputs": (S * rows * E * RECORDED_BYTES[engine], names("SPRE"))}
    if config.placement.active:  # loads of each expert-parallel computation batch
        batches = B // (b.sequences_per_micro_batch * config.placement.ep_size)
        f["b"] = f"computation batches per step ({batches})"
        terms["computation-batch loads"] = (S * rows * batches * E * COUNT_BYTES,
                                            names("SPRbE"))
    if config.penalty.learn:
        per = STEP_LOGIT_BYTES + (0 if r.dropless else STEP_DROP_BYTES)
        terms["logits of a step"] = (rows * T * E * per, names("PRTE"))
        if not r.dropless:
            terms["drop by position"] = (S * rows * b.seq_length * 8, names("SPRL"))
        terms["token features"] = (rows * T * D * FEATURE_BYTES, names("PRTD"))
        terms["router weights"] = (rows * E * D * WEIGHT_BYTES, names("PRED"))
        operations, op_axes = 3 * S * rows * T * E * max(D, 1), "STPRED"
    elif run.engine == "meanfield":
        terms["Jacobians"] = (rows * E * E * JACOBIAN_BYTES, names("PREE"))
        terms["load-map tables"] = (MEANFIELD_BASE_BYTES, "run.engine ('meanfield')")
        operations, op_axes = S * b.num_micro_batches * rows * E * E, "SPREE"
    else:
        chunk = _chunk_tokens(config, P)
        f["t"] = f"tokens routed at once ({chunk}, from batch.micro_batch_size)"
        per = CHUNK_BYTES if r.dropless else CHUNK_BYTES_DROPPING
        terms["routed chunk"] = (rows * chunk * E * per, names("PRtE"))
        terms["per-sequence counts"] = (rows * B * E * COUNT_BYTES, names("PRBE"))
        if D:
            terms["token features"] = (rows * chunk * D * FEATURE_BYTES, names("PRtD"))
            terms["router weights"] = (rows * E * D * 4, names("PRED"))
        operations, op_axes = S * T * rows * E * max(D, 1), "STPRE" + ("D" if D else "")
    return Estimate(bytes=sum(v for v, _ in terms.values()), operations=operations,
                    terms=terms, operation_fields=names(op_axes))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (None if unknown).

    ``MemAvailable`` of ``/proc/meminfo`` (Linux), else free physical pages
    from ``os.sysconf``.

    Examples
    --------
    >>> free = available_memory()
    >>> free is None or free > 0
    True
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(config: Any, point_indices: Sequence[int] | None = None,
          progress: bool | None = None, *, copies: int = 1) -> bool | None:
    """Refuse a run that would not fit; announce a very long one.

    Parameters
    ----------
    config : Config
    point_indices : sequence of int, optional
        The points run together (default: all).
    progress : bool or None
        The caller's progress setting.
    copies : int >= 1
        Runs of this size held at once (parallel sweep workers).

    Returns
    -------
    bool or None
        ``progress``, turned on (True) when it was None (automatic) and the
        run is long: beyond :data:`LONG_RUN_OPERATIONS`, the estimate is
        printed on stderr and the progress bar is shown even off a terminal.

    Raises
    ------
    ResourceError
        When ``copies`` times the estimated memory exceeds ``run.max_memory``
        (when set) or the available memory, or the work exceeds
        :data:`MAX_OPERATIONS`. The message names the largest term's fields.

    Examples
    --------
    The default config fits and is short, so ``progress`` comes back unchanged;
    a 1 MB budget is refused, naming the fields of the largest term:

    >>> from routesim.config import Config
    >>> check(Config(), progress=None) is None
    True
    >>> check(Config().replace(**{"run.max_memory": "1 MB"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routesim.exceptions.ResourceError: points (1) x run.replicas (1) x tokens routed at once ...
    """
    est = estimate(config, point_indices)
    need = est.bytes * copies
    limit, source = config.run.max_memory_bytes, "run.max_memory"
    if limit is None:
        limit, source = available_memory(), "available memory"
    if limit is not None and need > limit:
        size, fields = est.terms[est.largest]
        times = f"{copies} workers x " if copies > 1 else ""
        raise ResourceError(
            f"{fields}: the run needs about {times}{format_bytes(est.bytes)} (largest term, "
            f"{est.largest}: {format_bytes(size)}), more than the {source} "
            f"({format_bytes(limit)}); lower these fields, run fewer points at once, or set "
            "run.max_memory")
    if est.operations > MAX_OPERATIONS:
        raise ResourceError(
            f"{est.operation_fields}: about {est.operations:.2g} operations, beyond the "
            f"limit of {MAX_OPERATIONS:.0e} (years of computing); lower these fields")
    if est.operations > LONG_RUN_OPERATIONS:
        print(f"routesim: a long run: about {est.operations:.2g} operations "
              f"({est.operation_fields}) and {format_bytes(est.bytes)} of memory",
              file=sys.stderr)
        return True if progress is None else progress
    return progress
