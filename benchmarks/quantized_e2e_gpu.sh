#!/usr/bin/env bash
# gemlite's GPU tests and conformance cases, then the quantized models end to end
# (quantized_e2e_gpu.py), in one device call. gemlite comes from its wheel in .whl/ (no
# network on the GPU machine; build
# it on a machine with network, from the repository root:
#   pip download --no-deps gemlite==0.6.0.post2
#   pip wheel --no-deps --no-build-isolation gemlite-0.6.0.post2.tar.gz -w .whl/
# ), with .whl/base/*.whl where present (pluggy, pytest, ... that the image lacks); its
# dependencies (numpy, tqdm, triton) are the image's. Without the wheel, the benchmark runs
# its default plans only.
#
# Usage, on the GPU machine from the repository root: bash benchmarks/quantized_e2e_gpu.sh
# [OUTDIR] (default $OUT, else /tmp/quantized_e2e). Exits non-zero if a step failed or ran
# out of time.
set -uo pipefail
out=${1:-${OUT:-/tmp/quantized_e2e}}
tail_lines=60
source "$(dirname "$0")/device_lib.sh"
wheels=(.whl/gemlite-*.whl)
[ -e "${wheels[0]}" ] || wheels=()
if [ -d .whl/base ]; then wheels+=(.whl/base/*.whl); fi
install_wheels "${wheels[@]}" || exit 1
install_checkout . || exit 1
report_device
step gemlite_gpu_tests 240 python3 -m pytest -q -rs -p no:cacheprovider -m "not slow" \
  tests/kernels/test_gemlite_gpu.py tests/kernels/test_gemlite.py
# the conformance kit's cases of gemlite's records (the others of the cuda plugin are
# make test-gpu's)
step gemlite_kit 240 python3 -m pytest -q -rs -p no:cacheprovider --baseboard-plugin cuda \
  -k gemlite
step quantized_e2e 300 python3 benchmarks/quantized_e2e_gpu.py --json "$out/quantized_e2e.json"
exit $failed
