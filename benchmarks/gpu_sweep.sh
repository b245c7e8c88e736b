#!/usr/bin/env bash
# The whole GPU check-and-benchmark sweep, in one device call:
#   GPU tests + conformance kit on cuda, op benchmarks, end-to-end benchmarks.
# Needs the wheels of what the device image lacks in .whl/ (pluggy, pytest, iniconfig, gguf).
# Usage (on the GPU machine, from the repository root): bash benchmarks/gpu_sweep.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/sweep}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 \
  || python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . 
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
git rev-parse --short HEAD 2>/dev/null || true
step() { echo "=== $1"; shift; "$@" 2>&1 | tee "$out/$(echo "$1$2" | tr -c 'a-zA-Z0-9' _ | cut -c1-40).log" | tail -25; }
step "gpu tests" python3 -m pytest -q -m gpu -p no:cacheprovider tests
step "conformance kit on cuda" python3 -m pytest -q -p no:cacheprovider --baseboard-plugin cuda --baseboard-plugin baseboard
step "op benchmarks" python3 benchmarks/ops.py --json "$out/ops.json"
step "end to end" python3 benchmarks/e2e_gpu.py --json "$out/e2e.json"
