"""Fixed costs: ``import routesim``, building a sweep's points, a sweep of a tiny config.

    python benchmarks/bench_overheads.py

Prints, with the machine's load average:

* the wall time of ``python -c "import routesim"`` and of ``import numpy`` alone
  (best of 3 fresh processes), and which heavy modules the import loaded;
* ``config_from_dict`` of a 2000-point sweep and of a 300-point 4-axis grid, per point
  (best of 3);
* ``simulate`` of 2000 points x 20 steps of a tiny config (T = 256, N = 16, K = 2),
  in points per second, and the share of the time spent in compiled routing.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from routesim import config_from_dict  # noqa: E402


def _fresh(code: str) -> float:
    env = dict(os.environ, PYTHONPATH=ROOT)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def tiny(points: int, steps: int = 20):
    """A sign-controller sweep over ``points`` rates of a tiny config."""
    return config_from_dict({
        "run": {"steps": steps, "seed": 0, "record_displacement": False},
        "batch": {"num_sequences": 1, "seq_length": 256},
        "router": {"num_experts": 16, "topk": 2},
        "controller": {"type": "sign"},
        "sweep": {"controller.bias_update_rate":
                  [float(x) for x in np.logspace(-4, -2, points)]}})


def main() -> int:
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t_np = _fresh("import numpy")
    t_rs = _fresh("import routesim")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, routesim; print([m for m in ('xarray', 'scipy', "
         "'numba', 'matplotlib', 'pandas') if m in sys.modules])"],
        check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    print(f"import numpy: {t_np:.3f} s; import routesim: {t_rs:.3f} s "
          f"(routesim beyond numpy: {t_rs - t_np:.3f} s); heavy modules loaded: "
          f"{heavy.stdout.strip()}")
    tiny(10)
    best = min(_timed(lambda: tiny(2000)) for _ in range(3))
    print(f"config_from_dict, 2000-point sweep: {best / 2000 * 1e3:.3f} ms per point")
    grid = {"router": {"num_experts": 16, "topk": 2}, "sweep": {"parameters": {
        "controller.bias_update_rate": [1e-4, 1e-3, 1e-2, 1e-1],
        "traffic.noise_scale": [0.5, 1.0, 2.0, 4.0, 8.0],
        "traffic.skew": ["uniform", "linear", "zipf"],
        "traffic.seq_correlation": [0.0, 0.1, 0.2, 0.3, 0.4]}}}
    best = min(_timed(lambda: config_from_dict(grid)) for _ in range(3))
    print(f"config_from_dict, 4-axis grid of 300 points: {best / 300 * 1e3:.3f} ms per point")
    import routesim

    routesim.simulate(tiny(4, 2), progress=False)  # compile / load the kernels
    cfg = tiny(2000)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    routesim.simulate(cfg, progress=False)
    prof.disable()
    dt = time.perf_counter() - t0
    st = pstats.Stats(prof)
    routing = sum(v[3] for k, v in st.stats.items() if k[2] == "_route_tasks")
    total = sum(v[2] for v in st.stats.values())
    print(f"simulate 2000 points x 20 steps (T=256, N=16, K=2): {dt:.2f} s (profiled), "
          f"{2000 / dt:.0f} points/s; compiled routing {100 * routing / max(total, 1e-9):.0f} % "
          f"of the profiled time")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
