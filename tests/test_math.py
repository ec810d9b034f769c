"""routesim._math: one copy of softmax, sigmoid, softplus and normal_cdf, checked
against Python's math module, on NumPy and array-api-strict, at the edges."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from routesim import _math
from routesim.gates import gate

PACKAGE = Path(_math.__file__).parent
Z = [-800.0, -100.0, -30.0, -2.5, -1e-3, 0.0, 1e-3, 2.5, 30.0, 100.0, 800.0]


def _ref_sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _ref_softplus(z: float) -> float:
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def _namespaces():
    out = [np]
    try:
        import array_api_strict
        out.append(array_api_strict)
    except ImportError:  # pragma: no cover
        pass
    return out


@pytest.mark.parametrize("xp", _namespaces(), ids=lambda m: m.__name__)
def test_elementwise_functions_match_math_module(xp):
    z = xp.asarray(Z, dtype=xp.float64)
    sig = np.asarray(_math.sigmoid(xp, z))
    sp = np.asarray(_math.softplus(xp, z))
    cdf = np.asarray(_math.normal_cdf(xp, z / 10.0))
    for i, v in enumerate(Z):
        assert sig[i] == pytest.approx(_ref_sigmoid(v), rel=1e-12, abs=1e-300)
        assert sp[i] == pytest.approx(_ref_softplus(v), rel=1e-12, abs=1e-300)
        assert cdf[i] == pytest.approx(0.5 * math.erfc(-v / 10.0 / math.sqrt(2.0)), rel=1e-12,
                                       abs=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_gate_has_no_overflow_far_left(dtype):
    # exp(1000) overflows both dtypes: the plain 1 / (1 + exp(-z)) warns (an error here)
    z = np.array([-1000.0, -88.0, 0.0, 88.0, 1000.0], dtype=dtype)
    s = gate(np, "sigmoid", z)
    assert s.dtype == dtype
    assert 0.0 <= s[0] < 1e-37 and s[2] == 0.5 and s[-1] == 1.0
    assert np.all(np.diff(s) >= 0)
    # inside the range it is exactly 1 / (1 + exp(-z)), the engine's numbers
    inside = np.linspace(-80, 80, 321).astype(dtype)
    assert np.array_equal(_math.sigmoid(np, inside), 1.0 / (1.0 + np.exp(-inside)))


def test_softmax_rows_match_a_python_loop_and_survive_huge_logits():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(5, 7)) * 4.0
    got = _math.softmax(np, z)
    for row, out in zip(z, got):
        e = [math.exp(v) for v in row]
        assert out.tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-12)
    big = _math.softmax(np, np.array([[1000.0, 1000.0, -1000.0]]))
    assert big.tolist() == [[0.5, 0.5, 0.0]]


def test_normal_cdf_keeps_the_far_tail():
    # (1 + erf(u / sqrt 2)) / 2 rounds to 0 at -30; ndtr keeps 4.9e-198
    assert float(_math.normal_cdf(np, np.array(-30.0))) == pytest.approx(
        0.5 * math.erfc(30.0 / math.sqrt(2.0)), rel=1e-12)


def _defined_functions():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                yield path.relative_to(PACKAGE).as_posix(), node.name


def test_each_function_is_defined_once():
    names = {"softmax", "_softmax", "sigmoid", "_sigmoid", "softplus", "_softplus",
             "normal_cdf", "_normal_cdf", "logsumexp"}
    where = sorted((p, n) for p, n in _defined_functions() if n in names)
    assert all(p == "_math.py" for p, _ in where), where
    assert {n for _, n in where} == {"softmax", "sigmoid", "softplus", "normal_cdf"}
