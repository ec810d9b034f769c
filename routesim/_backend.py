"""Array backends: one namespace ``xp`` for NumPy, CuPy and array-api-strict.

Everything in the engine is written against the array API standard through
``xp``. This module supplies the few things the standard lacks (top-k
indices, bincount, transfer to host) and is the only place that imports
CuPy. The CuPy probe runs once and is cached.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from .exceptions import BackendError

__all__ = [
    "get_namespace",
    "argsort_stable",
    "cupy_available",
    "is_numpy",
    "to_numpy",
    "topk_indices",
    "bincount",
    "one_hot",
    "is_cupy",
    "special_ndtr",
    "cuda_kernel",
    "BACKENDS",
]

BACKENDS = ("numpy", "cupy", "array_api_strict")


@functools.cache
def cupy_available() -> tuple[bool, str]:
    """Return ``(usable, reason)`` for CuPy with a working GPU (probed once)."""
    try:
        import cupy  # noqa: F401
    except Exception as err:  # ImportError, or a broken CUDA install
        return False, (f"CuPy is not importable ({type(err).__name__}: {err}); install it with "
                       "pip install 'routesim[gpu]' (CUDA 12)")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"CuPy found no usable GPU ({type(err).__name__}: {err})"
    if n < 1:
        return False, "CuPy found no GPU"
    return True, "ok"


def get_namespace(name: str) -> ModuleType:
    """The array namespace for a backend name.

    Parameters
    ----------
    name : {"numpy", "cupy", "array_api_strict"}

    Returns
    -------
    module
        A namespace following the array API standard.

    Raises
    ------
    BackendError
        If the name is unknown or the backend cannot be used here.

    Examples
    --------
    >>> get_namespace("numpy").__name__
    'numpy'
    >>> get_namespace("array_api_strict").__name__
    'array_api_strict'
    """
    if name == "numpy":
        return np
    if name == "cupy":
        ok, reason = cupy_available()
        if not ok:
            raise BackendError(f"backend = 'cupy': not available here: {reason}")
        import cupy

        if not all(hasattr(cupy, f) for f in ("astype", "concat", "permute_dims")):
            try:  # an older CuPy: the array API wrapper fills the gaps
                from array_api_compat import cupy as cupy_compat
            except ImportError:
                return cupy
            return cupy_compat
        return cupy
    if name == "array_api_strict":
        try:
            import array_api_strict
        except ImportError:
            raise BackendError("backend = 'array_api_strict': install the 'test' extra "
                               "(pip install 'routesim[test]')") from None
        return array_api_strict
    raise BackendError(f"backend = {name!r}: must be one of {', '.join(BACKENDS)}")


def is_numpy(xp: ModuleType) -> bool:
    """True for the NumPy namespace.

    Examples
    --------
    >>> import numpy as np
    >>> is_numpy(np), is_numpy(get_namespace("array_api_strict"))
    (True, False)
    """
    return xp is np


def is_cupy(xp: ModuleType) -> bool:
    """True for the CuPy namespace (or its array API wrapper); imports nothing.

    Examples
    --------
    >>> import numpy as np
    >>> is_cupy(np)
    False
    """
    return getattr(xp, "__name__", "").split(".")[-1] == "cupy"


def special_ndtr(xp: ModuleType, u: Any) -> Any:
    """SciPy's ``ndtr`` (standard normal CDF) on ``u``, in ``u``'s namespace.

    CuPy arrays use ``cupyx.scipy.special.ndtr`` on the device; other
    namespaces without it go through NumPy on the host.

    Examples
    --------
    >>> import numpy as np
    >>> special_ndtr(np, np.array([0.0])).tolist()
    [0.5]
    """
    from scipy.special import ndtr

    if is_numpy(xp):
        return ndtr(u)
    if is_cupy(xp):  # pragma: no cover - GPU only
        from cupyx.scipy.special import ndtr as cupy_ndtr

        return cupy_ndtr(u)
    return xp.asarray(ndtr(np.asarray(u)), dtype=u.dtype)


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any backend to a NumPy array on the host.

    Examples
    --------
    >>> xps = get_namespace("array_api_strict")
    >>> to_numpy(xps.asarray([1.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)  # array-api-strict supports the buffer protocol on CPU


def topk_indices(xp: ModuleType, x: Any, k: int) -> Any:
    """Indices of the ``k`` largest entries along the last axis (unordered).

    Tie rule: among equal values the lower index wins, so the set is that of
    a stable sort by ``(-x, index)`` on every backend (the compiled kernels
    follow the same rule). NumPy and CuPy use ``argpartition`` and redo the
    rows where a tie straddles the K-th place with a stable sort; other
    namespaces use a stable descending ``argsort``.

    Examples
    --------
    >>> import numpy as np
    >>> sorted(topk_indices(np, np.array([1.0, 2.0, 1.0, 1.0]), 2).tolist())
    [0, 1]
    """
    n = x.shape[-1]
    if k >= n:
        return xp.broadcast_to(xp.arange(n), x.shape)
    if is_numpy(xp) or is_cupy(xp):
        idx = xp.argpartition(-x, k - 1, axis=-1)[..., :k]
        kth = xp.min(xp.take_along_axis(x, idx, axis=-1), axis=-1, keepdims=True)
        straddle = xp.sum(x >= kth, axis=-1) > k  # tied entries left out or let in by chance
        if bool(xp.any(straddle)):
            idx[straddle] = xp.argsort(-x[straddle], axis=-1, kind="stable")[..., :k]
        return idx
    return xp.argsort(x, axis=-1, descending=True, stable=True)[..., :k]


def argsort_stable(xp: ModuleType, x: Any, axis: int = -1) -> Any:
    """Indices that sort ``x`` ascending along ``axis``, equal values in index order.

    NumPy and CuPy take ``kind="stable"`` (CuPy's sort is stable and has no
    ``stable`` keyword); array-API namespaces take ``stable=True``.

    Examples
    --------
    >>> import numpy as np
    >>> argsort_stable(np, np.array([2.0, 1.0, 2.0, 1.0])).tolist()
    [1, 3, 0, 2]
    """
    if is_numpy(xp) or is_cupy(xp):
        return xp.argsort(x, axis=axis, kind="stable")
    return xp.argsort(x, axis=axis, stable=True)


def bincount(xp: ModuleType, ids: Any, length: int) -> Any:
    """Counts of each integer in ``ids`` (flattened) in ``[0, length)``.

    Returns an int64 array of shape ``(length,)``.

    Examples
    --------
    >>> import numpy as np
    >>> bincount(np, np.array([[0, 2], [2, 2]]), 4).tolist()
    [1, 0, 3, 0]
    >>> xps = get_namespace("array_api_strict")   # no bincount there: a one-hot sum
    >>> to_numpy(bincount(xps, xps.asarray([[0, 2], [2, 2]]), 4)).tolist()
    [1, 0, 3, 0]
    """
    if is_numpy(xp) or is_cupy(xp):
        return xp.bincount(xp.reshape(ids, (-1,)), minlength=length)
    flat = xp.reshape(ids, (-1,))
    # Chunked one-hot sum keeps memory bounded on namespaces without bincount.
    out = xp.zeros(length, dtype=xp.int64)
    grid = xp.arange(length)
    step = max(1, 2**22 // max(length, 1))
    for start in range(0, flat.shape[0], step):
        part = flat[start:min(start + step, flat.shape[0])]
        out = out + xp.sum(xp.astype(part[:, None] == grid[None, :], xp.int64), axis=0)
    return out


def one_hot(xp: ModuleType, idx: Any, length: int) -> Any:
    """Boolean mask of shape ``idx.shape[:-1] + (length,)``, true at ``idx``.

    ``idx`` holds distinct indices along its last axis.

    Examples
    --------
    >>> import numpy as np
    >>> one_hot(np, np.array([[0, 2], [1, 3]]), 4).astype(int).tolist()
    [[1, 0, 1, 0], [0, 1, 0, 1]]
    """
    grid = xp.arange(length)
    hits = idx[..., :, None] == grid
    return xp.any(hits, axis=-2)


def cuda_kernel(source: str, name: str, options: tuple[str, ...] = ()) -> Any:
    """Compile CUDA C++ ``source`` with CuPy and return its kernel ``name``.

    Parameters
    ----------
    source : str
        CUDA C++ code (``extern "C"`` kernels).
    name : str
        The kernel to return.
    options : tuple of str
        NVRTC options.

    Returns
    -------
    cupy.RawKernel

    Examples
    --------
    On a machine with CuPy and a GPU:

    >>> src = 'extern "C" __global__ void twice(float* x) { x[threadIdx.x] *= 2; }'
    >>> kernel = cuda_kernel(src, "twice")  # doctest: +SKIP
    >>> x = cupy.ones(4, dtype=cupy.float32); kernel((1,), (4,), (x,))  # doctest: +SKIP
    """
    import cupy  # pragma: no cover - GPU only

    return cupy.RawModule(code=source, options=options).get_function(name)  # pragma: no cover
