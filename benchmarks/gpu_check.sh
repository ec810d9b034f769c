#!/usr/bin/env bash
# The GPU checks, in one run on a machine with CuPy and an NVIDIA GPU:
# the GPU tests, a CLI run on the cupy backend, and the engine benchmark
# (generic array code and the CUDA kernel, against PyTorch on CUDA).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Run from the repository root; routesim is imported from the checkout
# (PYTHONPATH), so nothing needs installing beyond numpy, scipy, xarray,
# matplotlib, tqdm, zarr, cupy, pytest and hypothesis.
set -u
out=${1:-gpu_check_out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py=${PYTHON:-python3}
{
  nvidia-smi -L
  $py -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)"
  echo "== GPU tests"
  timeout 300 $py -m pytest -q -p no:cacheprovider -o addopts="" -rs \
      tests/test_gpu.py tests/test_cli.py tests/test_learner.py tests/test_learner_family.py -k "gpu or cupy or cli"
  echo "== CLI on the cupy backend"
  timeout 120 $py -m routesim run examples/quickstart.toml --backend cupy --out "$out/quickstart_cupy" --no-progress
  echo "== engine benchmark, cupy, CUDA kernel"
  timeout 150 $py benchmarks/bench_engine.py --backend cupy --kernel cuda --steps 100 --rounds 4
  echo "== sparse kernel (CPU, Numba) against the dense kernel on this machine's CPU"
  timeout 150 $py benchmarks/bench_engine.py --sparse --steps 6 --no-torch
  echo "== engine benchmark, cupy, generic array code"
  timeout 150 $py benchmarks/bench_engine.py --backend cupy --kernel generic --steps 50 --rounds 2 --no-torch
} 2>&1 | tee "$out/gpu_check.log"
