"""Reading and checking a logit trace (``traffic.trace``) when the config is built.

A trace is read once per file version (path, size, modification time) and
kept read-only, so building a config, its points and the engine read it once.
Every fault of the file is a :class:`routesim.ConfigError` naming
``traffic.trace``, its value, what is wrong and what is allowed.
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from ..exceptions import ConfigError

__all__ = ["read_trace", "check_trace"]

_ALLOWED = ("allowed: 'builtin' or an .npz archive (numpy.savez) holding a finite real array "
            "'logits' of shape (steps, tokens, experts)")


def _refuse(trace: str, what: str) -> ConfigError:
    return ConfigError(f"traffic.trace = {trace!r}: {what}; {_ALLOWED}")


def read_trace(trace: str) -> np.ndarray:
    """The logits of a trace as a read-only float32 array (steps, tokens, experts).

    Parameters
    ----------
    trace : str
        ``"builtin"`` (the trace shipped with the package) or a path to an
        ``.npz`` file with an array ``logits``.

    Returns
    -------
    ndarray, shape (S, T, E), float32, read-only

    Raises
    ------
    ConfigError
        If the file cannot be read, is not an ``.npz`` archive, or its
        ``logits`` are missing, not a real array, not 3-D, empty or not
        finite in float32.

    Examples
    --------
    >>> read_trace("builtin").shape
    (16, 512, 16)
    """
    if trace == "builtin":
        ref = resources.files("routesim") / "data" / "trace_topics.npz"
        with resources.as_file(ref) as p:
            return _read_cached(str(p), *_version(trace, str(p)))
    return _read_cached(trace, *_version(trace, trace))


def _version(trace: str, path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as err:
        raise _refuse(trace, f"cannot be read ({err.strerror})") from None
    if not os.path.isfile(path):
        raise _refuse(trace, "is not a regular file")
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _read_cached(trace: str, size: int, mtime_ns: int) -> np.ndarray:
    arr = _read_logits(trace, Path(trace))
    arr.flags.writeable = False
    return arr


def _read_logits(trace: str, path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(6)
        kind = ("a .npy array, not an .npz archive" if head == b"\x93NUMPY" else
                "a corrupt or truncated zip archive" if head.startswith(b"PK") else
                "not an .npz archive")
        raise _refuse(trace, f"is {kind}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "logits" not in data.files:
                found = ", ".join(data.files) or "nothing"
                raise _refuse(trace, f"the archive has no array 'logits' (found: {found})")
            raw = data["logits"]
    except ConfigError:
        raise
    except ValueError as err:  # object arrays (pickles) or a malformed member
        raise _refuse(trace, f"'logits' cannot be read without pickle or is malformed ({err})"
                      ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise _refuse(trace, f"is a corrupt archive ({type(err).__name__}: {err})") from None
    if raw.dtype.kind not in "iuf":
        raise _refuse(trace, f"'logits' has dtype {raw.dtype} (need integers or floats)")
    if raw.ndim != 3:
        raise _refuse(trace, f"'logits' has shape {raw.shape} ({raw.ndim} dimensions, need 3)")
    if 0 in raw.shape:
        raise _refuse(trace, f"'logits' has shape {raw.shape} (no steps, tokens or experts)")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.asarray(raw, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise _refuse(trace, f"'logits' has {bad} of {arr.size} values NaN, infinite or "
                             "beyond float32")
    return arr


def check_trace(trace: str, num_experts: int, tokens_per_step: int) -> None:
    """Refuse a trace that cannot feed this config (read it, match its shape).

    Parameters
    ----------
    trace : str
        ``traffic.trace``.
    num_experts : int
        ``router.num_experts``: must equal the trace's experts.
    tokens_per_step : int
        ``batch.num_sequences * batch.seq_length``: must equal the trace's
        tokens per step. Its steps are cycled, so any number >= 1 will do.

    Raises
    ------
    ConfigError
        Naming ``traffic.trace``, what does not match and what is allowed.

    Examples
    --------
    The built-in trace holds 512 tokens a step over 16 experts:

    >>> check_trace("builtin", num_experts=16, tokens_per_step=512)
    >>> check_trace("builtin", num_experts=8, tokens_per_step=512)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: traffic.trace = 'builtin': holds 16 experts per token, ...
    """
    _, tokens, experts = read_trace(trace).shape
    if experts != num_experts:
        raise ConfigError(f"traffic.trace = {trace!r}: holds {experts} experts per token, but "
                          f"router.num_experts = {num_experts}; allowed: a trace with "
                          f"{num_experts} experts")
    if tokens != tokens_per_step:
        raise ConfigError(f"traffic.trace = {trace!r}: holds {tokens} tokens per step, but the "
                          f"batch has {tokens_per_step} (batch.num_sequences x "
                          f"batch.seq_length); allowed: a trace with {tokens_per_step} tokens "
                          "per step")
