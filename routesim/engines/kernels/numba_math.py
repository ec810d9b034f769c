"""Float32 elementary functions and the counter hash, for the Numba kernels.

Vectorisable (no libm calls) float32 ``log``, ``exp``, ``log1p`` and
``sin``/``cos`` after Cephes, accurate to about one unit in the last place,
bit casts as LLVM intrinsics, and the SplitMix64 counter hash and
Box-Muller transform of :func:`routesim.rng.standard_normal`, element by
element. Numba is optional: without it this module imports but is unusable.
"""

from __future__ import annotations

import math

import numpy as np

try:  # Numba is optional (the ``fast`` extra)
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only where Numba is absent
    ir = types = None

    def njit(*args, **kwargs):
        return args[0] if args and callable(args[0]) else (lambda f: f)

    def intrinsic(f):
        return f

__all__ = ["logf", "expf", "log1pf", "sincosf", "gate1", "hash_pairs", "box_muller",
           "bm_pairs", "order_key", "FASTMATH"]

F = np.float32
U = np.uint64
I32 = np.int32
FASTMATH = {"nsz", "contract"}
_INL = dict(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
_OPT = dict(fastmath=FASTMATH, error_model="numpy", cache=True)

# ----------------------------------------------------------------------------
# Bit casts and float32 elementary functions (vectorisable, no libm calls)
# ----------------------------------------------------------------------------


@intrinsic
def _mantissa(typingctx, x):
    """Mantissa of a positive float32 in [0.5, 1)."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        b = builder.bitcast(args[0], i32)
        b = builder.or_(builder.and_(b, ir.Constant(i32, 0x7FFFFF)),
                        ir.Constant(i32, 0x3F000000))
        return builder.bitcast(b, ir.FloatType())

    return sig, codegen


@intrinsic
def _exponent(typingctx, x):
    """Exponent ``e`` of a positive normal float32 with ``x = m * 2**e``, m in [0.5, 1)."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        b = builder.bitcast(args[0], i32)
        e = builder.sub(builder.lshr(b, ir.Constant(i32, 23)), ir.Constant(i32, 126))
        return builder.sitofp(e, ir.FloatType())

    return sig, codegen


@intrinsic
def _ldexp(typingctx, y, n):
    """``y * 2**n`` for an integer-valued float32 ``n`` (no range checks)."""
    sig = types.float32(types.float32, types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        b = builder.bitcast(args[0], i32)
        k = builder.shl(builder.fptosi(args[1], i32), ir.Constant(i32, 23))
        return builder.bitcast(builder.add(b, k), ir.FloatType())

    return sig, codegen


@intrinsic
def order_key(typingctx, x, tie):
    """A unique int64 ordered like float32 ``x``, ties ordered by ``-tie`` (0 <= tie < 2**31)."""
    sig = types.int64(types.float32, types.int64)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        b = builder.bitcast(args[0], i32)
        negzero = builder.icmp_signed("==", b, ir.Constant(i32, -(2**31)))
        b = builder.select(negzero, ir.Constant(i32, 0), b)  # -0.0 ties with +0.0
        flip = builder.and_(builder.ashr(b, ir.Constant(i32, 31)), ir.Constant(i32, 0x7FFFFFFF))
        key = builder.shl(builder.sext(builder.xor(b, flip), i64), ir.Constant(i64, 32))
        return builder.or_(key, builder.sub(ir.Constant(i64, 0x7FFFFFFF), args[1]))

    return sig, codegen


HALF, ONE, TWO, ZERO = F(0.5), F(1.0), F(2.0), F(0.0)
_SQRTHF = F(0.707106781186547524)
_LP = [F(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                      1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                      3.3333331174e-1)]
L0, L1, L2, L3, L4, L5, L6, L7, L8 = _LP
_Q1, _Q2 = F(-2.12194440e-4), F(0.693359375)
_FOPI = F(1.27323954473516)
_DP1, _DP2, _DP3 = F(0.78515625), F(2.4187564849853515625e-4), F(3.77489497744594108e-8)
_C0, _C1, _C2 = F(2.443315711809948e-5), F(-1.388731625493765e-3), F(4.166664568298827e-2)
_S0, _S1, _S2 = F(-1.9515295891e-4), F(8.3321608736e-3), F(-1.6666654611e-1)
_LOG2E = F(1.44269504088896341)
_E0, _E1, _E2, _E3, _E4, _E5 = (F(1.9875691500e-4), F(1.3981999507e-3), F(8.3334519073e-3),
                                F(4.1665795894e-2), F(1.6666665459e-1), F(5.0000001201e-1))
_XMAX, _XMIN, _B128 = F(88.0), F(-87.0), F(128.0)
_INV24 = F(1.0 / (1 << 24))
_TWO_PI = F(2.0 * math.pi)
_NTWO = F(-2.0)


@njit(**_INL)
def logf(x):
    """Natural log of a positive float32 (Cephes ``logf``)."""
    e = _exponent(x)
    m = _mantissa(x)
    small = m < _SQRTHF
    e = e - ONE if small else e
    m = (m + m - ONE) if small else (m - ONE)
    z = m * m
    y = ((((((((L0 * m + L1) * m + L2) * m + L3) * m + L4) * m + L5) * m + L6) * m + L7)
         * m + L8) * m * z
    y = y + _Q1 * e
    y = y - HALF * z
    return m + y + _Q2 * e


@njit(**_INL)
def expf(x):
    """``exp`` of a float32, clamped to [-87, 88] (Cephes ``expf``)."""
    x = x if x > _XMIN else _XMIN
    x = x if x < _XMAX else _XMAX
    n = F(I32(x * _LOG2E + HALF + _B128)) - _B128
    x = x - n * _Q2
    x = x - n * _Q1
    z = x * x
    y = (((((_E0 * x + _E1) * x + _E2) * x + _E3) * x + _E4) * x + _E5) * z + x + ONE
    return _ldexp(y, n)


@njit(**_INL)
def log1pf(x):
    """``log(1 + x)`` for float32 x in [0, 1] (log of the rounded sum, corrected)."""
    u = ONE + x
    d = u - ONE
    corr = (x - d) / u if d != ZERO else ZERO
    return (logf(u) + corr) if d != ZERO else x


@njit(**_INL)
def sincosf(x):
    """``(sin x, cos x)`` for float32 x in [0, 2 pi] (Cephes ``sinf``/``cosf``)."""
    y = TWO * F(I32(x * _FOPI * HALF + HALF))
    x = ((x - y * _DP1) - y * _DP2) - y * _DP3
    z = x * x
    cp = ((_C0 * z + _C1) * z + _C2) * z * z - HALF * z + ONE
    sp = ((_S0 * z + _S1) * z + _S2) * z * x + x
    swap = (y == F(2.0)) | (y == F(6.0))
    s = cp if swap else sp
    c = sp if swap else cp
    s = -s if ((y == F(4.0)) | (y == F(6.0))) else s
    c = -c if ((y == F(2.0)) | (y == F(4.0))) else c
    return s, c


@njit(**_INL)
def gate1(z, gate):
    """Monotone gates: sigmoid (0) and sqrt(softplus) (2), as the array code computes them."""
    if gate == 0:
        return ONE / (ONE + expf(-z))
    sp = (z if z > ZERO else ZERO) + log1pf(expf(-abs(z)))
    return math.sqrt(sp)


# ----------------------------------------------------------------------------
# Random numbers (rng.standard_normal, element by element)
# ----------------------------------------------------------------------------
_M1 = U(0xBF58476D1CE4E5B9)
_M2 = U(0x94D049BB133111EB)
_GOLD = U(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S40, _S8 = U(30), U(27), U(31), U(40), U(8)
_M24 = U(0xFFFFFF)


@njit(**_OPT)
def hash_pairs(base, idx0, m, u1i, u2i):
    """24-bit Box-Muller inputs of pair indices ``idx0 .. idx0 + m - 1``."""
    for j in range(m):
        x = base + (idx0 + U(j)) * _GOLD
        x = x ^ (x >> _S30)
        x = x * _M1
        x = x ^ (x >> _S27)
        x = x * _M2
        x = x ^ (x >> _S31)
        u1i[j] = I32(x >> _S40)
        u2i[j] = I32((x >> _S8) & _M24)


@njit(**_INL)
def box_muller(i1, i2):
    """``(r cos, r sin)`` of one hash, as ``rng.standard_normal`` in float32."""
    u1 = (F(i1) + HALF) * _INV24
    u2 = (F(i2) + HALF) * _INV24
    r = math.sqrt(_NTWO * logf(u1))
    s, c = sincosf(_TWO_PI * u2)
    return r * c, r * s


@njit(**_OPT)
def bm_pairs(m, u1i, u2i, ea, eb):
    """Noise of both experts of ``m`` pairs."""
    for j in range(m):
        ea[j], eb[j] = box_muller(u1i[j], u2i[j])
