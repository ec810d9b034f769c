"""Counter-based random numbers: the same draws on every backend and chunking.

Each (point, replica) owns a 64-bit key derived from
``numpy.random.SeedSequence(seed, spawn_key=(point, replica))``. A draw is a
pure function of ``(key, step, stream, index)``: the counter is hashed with
the SplitMix64 finaliser. Hence

* a point's numbers do not depend on which other points ran with it, nor on
  how tokens were split into chunks (the index is the global token index);
* NumPy, CuPy and array-api-strict produce bit-identical uniform integers,
  and normals that agree to rounding;
* a compiled kernel can reproduce the stream element by element.

Uniforms carry 24 bits (float32 resolution). Normals use the Box-Muller
transform on the two 32-bit halves of one hash; their tails are cut at
``sqrt(2 * 24 * log 2) = 5.77`` standard deviations.

Shape legend: P points, R replicas, T tokens, E experts, D feature dim.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Sequence

import numpy as np

__all__ = [
    "point_keys",
    "stream_base",
    "hash_counter",
    "uniform",
    "standard_normal",
    "noise",
    "Stream",
    "layer_keys",
    "entropy_of",
]

_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
_TWO_PI = 2.0 * math.pi
_INV_2_24 = 1.0 / (1 << 24)


class Stream:
    """Stream ids: one per kind of draw, so draws never overlap.

    Examples
    --------
    >>> Stream.NOISE, Stream.SEQUENCE, Stream.EXTRA
    (1, 2, 8)
    """

    NOISE = 1
    SEQUENCE = 2
    FEATURE = 3
    TOPIC = 4
    DRIFT = 5
    INIT = 6
    MEANFIELD = 7
    EXTRA = 8  # first id free for extensions (penalties, leakage, ...)


def point_keys(seed: int, point_indices: Sequence[int], replicas: int) -> np.ndarray:
    """64-bit keys of shape (P, R) for the given global point indices.

    Parameters
    ----------
    seed : int >= 0
        Root seed.
    point_indices : sequence of int
        Global index of each point of this run (so a point keeps its numbers
        when a sweep is split over several runs).
    replicas : int > 0

    Returns
    -------
    ndarray of uint64, shape (P, R)

    Examples
    --------
    A point's keys depend on its global index only, not on its neighbours:

    >>> keys = point_keys(0, [1, 3], 2)
    >>> keys.shape, keys.dtype
    ((2, 2), dtype('uint64'))
    >>> bool((point_keys(0, [3], 2) == keys[1]).all()), bool(keys[0, 0] != keys[0, 1])
    (True, True)
    """
    keys = np.empty((len(point_indices), replicas), dtype=np.uint64)
    for i, p in enumerate(point_indices):
        for r in range(replicas):
            ss = np.random.SeedSequence(seed, spawn_key=(int(p), r))
            keys[i, r] = ss.generate_state(1, dtype=np.uint64)[0]
    return keys


def layer_keys(seed: int, point_indices: Sequence[int], replicas: int,
               layers: int) -> np.ndarray:
    """64-bit keys of shape (P * L, R): one row per (point, layer), point-major.

    With one layer these are :func:`point_keys`; with ``L > 1`` row
    ``p * L + l`` comes from ``SeedSequence(seed, spawn_key=(p, r, l))``, so
    every layer has its own streams and a point's numbers still depend on
    its global index only.

    Parameters
    ----------
    seed : int >= 0
    point_indices : sequence of int
    replicas, layers : int > 0

    Returns
    -------
    ndarray of uint64, shape (P * L, R)

    Examples
    --------
    >>> keys = layer_keys(0, [1, 3], 2, layers=4)
    >>> keys.shape, bool((layer_keys(0, [3], 2, layers=4) == keys[4:]).all())
    ((8, 2), True)
    >>> bool((layer_keys(0, [1, 3], 2, layers=1) == point_keys(0, [1, 3], 2)).all())
    True
    """
    if layers == 1:
        return point_keys(seed, point_indices, replicas)
    keys = np.empty((len(point_indices) * layers, replicas), dtype=np.uint64)
    for i, p in enumerate(point_indices):
        for layer in range(layers):
            for r in range(replicas):
                ss = np.random.SeedSequence(seed, spawn_key=(int(p), r, layer))
                keys[i * layers + layer, r] = ss.generate_state(1, dtype=np.uint64)[0]
    return keys


def entropy_of(seed: int) -> int:
    """The SeedSequence entropy a run with this seed uses (for the record).

    Examples
    --------
    >>> entropy_of(2024)
    2024
    """
    return int(np.random.SeedSequence(seed).entropy)


def _mix(xp: ModuleType, x: Any) -> Any:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> 30)
    x = x * _M1
    x = x ^ (x >> 27)
    x = x * _M2
    return x ^ (x >> 31)


def _mix_int(x: int) -> int:
    """SplitMix64 finaliser on a Python int (mod 2**64)."""
    mask = (1 << 64) - 1
    x &= mask
    x ^= x >> 30
    x = (x * _M1) & mask
    x ^= x >> 27
    x = (x * _M2) & mask
    return x ^ (x >> 31)


def stream_base(xp: ModuleType, keys_PR: Any, step: int, stream: int) -> Any:
    """Per-(point, replica) base hash of one (step, stream) pair, uint64 (P, R).

    Examples
    --------
    >>> keys = point_keys(0, [0], 1)
    >>> a, b = stream_base(np, keys, 5, Stream.NOISE), stream_base(np, keys, 5, Stream.TOPIC)
    >>> a.shape, bool(a[0, 0] != b[0, 0])
    ((1, 1), True)
    """
    counter = (int(step) + 2) * 64 + int(stream)  # step may be -1 (initialisation)
    return _mix(xp, keys_PR ^ _mix_int(counter))


def hash_counter(xp: ModuleType, base: Any, index: Any) -> Any:
    """Hash of ``base + index * golden`` (uint64), broadcasting the two.

    Examples
    --------
    With base 0 this is SplitMix64 seeded with 0, whose published first output
    is ``0xe220a8397b1dcdaf``:

    >>> h = hash_counter(np, np.zeros(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))
    >>> hex(int(h[0]))
    '0xe220a8397b1dcdaf'
    """
    return _mix(xp, base + index * _GOLDEN)


def _bits_to_unit(xp: ModuleType, bits32: Any, dtype: Any) -> Any:
    """Top 24 of 32 bits to a float in (0, 1)."""
    top = xp.astype(bits32 >> 8, dtype)
    return (top + 0.5) * _INV_2_24


def uniform(xp: ModuleType, keys_PR: Any, step: int, stream: int, index: Any,
            dtype: Any = None) -> Any:
    """Uniform draws in (0, 1) with shape ``(P, R) + index.shape``.

    ``index`` is an integer array of global element indices (uint64).
    Each index yields one uniform (from the high half of its hash).

    Examples
    --------
    Draws depend on the element index only, so a slice of indices gives the
    same slice of draws:

    >>> keys = point_keys(1, [0], 2)
    >>> u = uniform(np, keys, 0, Stream.EXTRA, np.arange(6, dtype=np.uint64))
    >>> u.shape, bool(((u > 0) & (u < 1)).all())
    ((1, 2, 6), True)
    >>> part = uniform(np, keys, 0, Stream.EXTRA, np.arange(2, 4, dtype=np.uint64))
    >>> bool((part == u[..., 2:4]).all())
    True
    """
    dtype = dtype or xp.float32
    base = stream_base(xp, keys_PR, step, stream)
    base = xp.reshape(base, tuple(base.shape) + (1,) * index.ndim)
    h = hash_counter(xp, base, index)
    return _bits_to_unit(xp, h >> 32, dtype)


def standard_normal(xp: ModuleType, keys_PR: Any, step: int, stream: int, rows: Any,
                    width: int, dtype: Any = None) -> Any:
    """Standard normals of shape ``(P, R, len(rows), width)``.

    Row ``r`` (a global row index, e.g. a token) and column ``j`` take a value
    that depends only on ``(key, step, stream, r, j)``: chunking rows does not
    change it. One hash gives two normals (Box-Muller), paired across the
    columns ``j`` and ``j + ceil(width / 2)``.

    Examples
    --------
    >>> keys = point_keys(0, [0], 1)
    >>> z = standard_normal(np, keys, 3, Stream.NOISE, np.arange(4), 5)
    >>> z.shape, z.dtype
    ((1, 1, 4, 5), dtype('float32'))
    >>> bool((standard_normal(np, keys, 3, Stream.NOISE, np.arange(2, 4), 5) == z[:, :, 2:]).all())
    True
    """
    dtype = dtype or xp.float32
    half = (width + 1) // 2
    rows = xp.astype(rows, xp.uint64)
    index = rows[:, None] * half + xp.arange(half, dtype=xp.uint64)[None, :]
    base = stream_base(xp, keys_PR, step, stream)[:, :, None, None]
    h = hash_counter(xp, base, index)
    u1 = _bits_to_unit(xp, h >> 32, dtype)
    u2 = _bits_to_unit(xp, h & 0xFFFFFFFF, dtype)
    radius = xp.sqrt(-2.0 * xp.log(u1))
    angle = _TWO_PI * u2
    out = xp.concat([radius * xp.cos(angle), radius * xp.sin(angle)], axis=-1)
    return out[..., :width]


def noise(xp: ModuleType, law: str, keys_PR: Any, step: int, stream: int, rows: Any,
          width: int, dtype: Any = None) -> Any:
    """Zero-location noise of a given law, shape ``(P, R, len(rows), width)``.

    ``normal`` is standard; ``logistic`` is ``log(w / (1 - w))``; ``gumbel``
    is ``-log(-log w)`` minus Euler's constant (mean zero). Scale 1 each.

    Examples
    --------
    The logistic law has variance ``pi^2 / 3``; 50,000 draws come close:

    >>> keys = point_keys(0, [0], 1)
    >>> x = noise(np, "logistic", keys, 0, Stream.NOISE, np.arange(10_000), 5, np.float64)
    >>> x.shape, round(float(x.var() / (np.pi ** 2 / 3)), 1)
    ((1, 1, 10000, 5), 1.0)
    >>> noise(np, "cauchy", keys, 0, Stream.NOISE, np.arange(2), 2)
    Traceback (most recent call last):
    ...
    ValueError: noise law 'cauchy': must be one of normal, logistic, gumbel
    """
    if law == "normal":
        return standard_normal(xp, keys_PR, step, stream, rows, width, dtype)
    dtype = dtype or xp.float32
    rows = xp.astype(rows, xp.uint64)
    index = rows[:, None] * width + xp.arange(width, dtype=xp.uint64)[None, :]
    base = stream_base(xp, keys_PR, step, stream)[:, :, None, None]
    # float64 here: the largest 24-bit uniform rounds to 1.0 in float32, whose
    # logistic or Gumbel transform is infinite.
    w = _bits_to_unit(xp, hash_counter(xp, base, index) >> 32, xp.float64)
    if law == "logistic":
        return xp.astype(xp.log(w) - xp.log1p(-w), dtype)
    if law == "gumbel":
        return xp.astype(-xp.log(-xp.log(w)) - 0.5772156649015329, dtype)
    raise ValueError(f"noise law {law!r}: must be one of normal, logistic, gumbel")
