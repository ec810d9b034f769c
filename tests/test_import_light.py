"""``import routesim`` loads neither xarray, scipy, Numba nor matplotlib (the CLI pays it)."""

from __future__ import annotations

import subprocess
import sys


def test_import_routesim_leaves_the_heavy_modules_for_later():
    code = ("import sys, routesim; "
            "print(sorted(m for m in ('xarray', 'scipy', 'numba', 'matplotlib', 'pandas') "
            "if m in sys.modules)); "
            "routesim.simulate; routesim.theory.expected_load; print('xarray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"  # and the lazy names resolve
