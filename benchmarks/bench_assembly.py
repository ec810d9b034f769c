"""Dataset assembly of a many-point sweep: one step, many points.

    python benchmarks/bench_assembly.py              # 2000 points
    python benchmarks/bench_assembly.py --points 8000

A one-step run spends almost nothing in the engine, so its time is the set-up
(building the points) and the assembly of the Dataset
(:func:`routesim.results.build_dataset`), both of which must grow linearly in
the number of points. xarray's one-time imports are paid by a warm-up run
first. The last line is the time per point of the assembly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from routesim import config_from_dict, results, run, simulate  # noqa: E402


def config(points: int):
    return config_from_dict({
        "run": {"steps": 1, "record_displacement": False},
        "batch": {"num_sequences": 2, "seq_length": 16},
        "router": {"num_experts": 8, "topk": 2},
        "sweep": {"controller.bias_update_rate": [1e-4 * (i + 1) for i in range(points)]}})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args(argv)
    simulate(config(2), progress=False)  # warm-up: xarray's lazy imports
    spent = {}
    original = results.build_dataset

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = original(*a, **k)
        spent["build"] = time.perf_counter() - t0
        return out

    t0 = time.perf_counter()
    cfg = config(args.points)
    print(f"{args.points}-point config built and checked: {time.perf_counter() - t0:.3f} s")
    run.build_dataset = timed
    try:
        t0 = time.perf_counter()
        simulate(cfg, progress=False)
        total = time.perf_counter() - t0
    finally:
        run.build_dataset = original
    print(f"{args.points}-point one-step simulate: {total:.3f} s, "
          f"of which build_dataset {spent['build']:.3f} s")
    print(f"assembly per point: {spent['build'] / args.points * 1e6:.1f} us")


if __name__ == "__main__":
    main()
