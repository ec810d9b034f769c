"""One grid through every entry point: simulate, routesim run, routesim sweep, dask, stored config.

    python analysis/entry_points.py            # the built-in grid (axes not in alphabetical order)
    python analysis/entry_points.py --record   # the same grid, metrics only, every 3rd step
    python analysis/entry_points.py my.toml

Each result is compared with ``simulate(cfg)`` by ``xarray.testing.assert_identical``;
the script stops at the first difference. Needs the ``dask`` extra.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import xarray as xr
from distributed import Client, LocalCluster

from routesim import config_from_dict, load, load_config, simulate
from routesim.sweep import run_sweep

GRID = '''# A grid whose axes are not in alphabetical order.
[run]
steps = 20
replicas = 2
seed = 3

[batch]
num_sequences = 4
seq_length = 64

[traffic]
skew = "zipf"

[router]
num_experts = 16
topk = 2

[sweep]
mode = "grid"
"traffic.noise_scale" = [0.5, 2.0]
"controller.type" = ["sign", "proportional"]
"controller.bias_update_rate" = [0.001, 0.01]
'''


def main():
    out = Path(tempfile.mkdtemp())
    if len(sys.argv) > 1 and sys.argv[1] != "--record":
        toml = Path(sys.argv[1])
    else:
        toml = out / "grid.toml"
        record = 'record = "metrics"\nrecord_every = 3\n' if sys.argv[1:] == ["--record"] else ""
        toml.write_text(GRID.replace("seed = 3\n", "seed = 3\n" + record))
    cfg = load_config(toml)
    print("points:", list(cfg.point_labels()))
    print("record:", cfg.run.record, "every", cfg.run.record_every, "steps")
    reference = simulate(cfg, progress=False)
    results = {}
    subprocess.run([sys.executable, "-m", "routesim", "run", str(toml), "--out", str(out / "run"), "--no-plot"], check=True,
                   capture_output=True)
    results["routesim run"] = load(out / "run" / "results.zarr")
    for chunk, workers in ((1, 1), (3, 2), (8, 2)):
        d = out / f"sweep_{chunk}_{workers}"
        subprocess.run([sys.executable, "-m", "routesim", "sweep", str(toml), "--out", str(d),
                        "--chunk", str(chunk),
                        "--workers", str(workers), "--no-progress"], check=True, capture_output=True)
        results[f"routesim sweep --chunk {chunk} --workers {workers}"] = load(d / "results.zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        results["run_sweep on a dask LocalCluster (2 processes)"] = run_sweep(
            cfg, out / "dask", points_per_chunk=3, executor=client, progress=False)
    stored = config_from_dict(json.loads(results["routesim run"].attrs["config"]))
    results["simulate(config from results.zarr attrs)"] = simulate(stored, progress=False)
    for name, ds in results.items():
        xr.testing.assert_identical(ds, reference)
        print(f"identical to simulate(cfg): {name}")


if __name__ == "__main__":
    main()
