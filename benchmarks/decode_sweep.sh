#!/usr/bin/env bash
# The one-launch decode (in-kernel merge, rotary and KV write fused) on the GPU, in one
# device call (under 10 minutes):
#   1. the GPU tests of the engine, the models and the fused layers;
#   2. the kernels of a 0.5B decode step, fused forms on and off (decode_kernels.py);
#   3. paged decode attention against SDPA (ops.py --only attention);
#   4. the 0.5B and 8B shapes end to end at batch 1, this tree and the commit BEFORE (an
#      argument, default HEAD~1) each from its own install, in the same run.
# Wheels as in gpu_sweep.sh (.whl/base: gguf, pluggy, pytest, iniconfig at least).
#
# Usage, on the GPU machine from the repository root:
#   bash benchmarks/decode_sweep.sh [OUTDIR] [BEFORE]
set -uo pipefail
out=${1:-${OUT:-/tmp/sweep}}
before=${2:-HEAD~1}
tail_lines=8
source "$(dirname "$0")/device_lib.sh"
install_wheels .whl/base/*.whl || exit 1
install_checkout . || exit 1
report_device
git log -1 --format='tree at %h %s'

e2e=(python3 benchmarks/e2e_gpu.py --batches 1 --peer-batches "" --repeats 2)
step gpu_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/engine/test_engine_gpu.py tests/models/test_fused_layers_gpu.py \
  tests/models/test_models_gpu.py
step decode_kernels 120 python3 benchmarks/decode_kernels.py --json "$out/decode_kernels.json"
step attention 120 python3 benchmarks/ops.py --only attention --json "$out/ops_attention.json"
step e2e_qwen 120 "${e2e[@]}" --models qwen2.5-0.5b --json "$out/e2e_qwen.json"

# the commit before, installed apart (a site of its own: two baseboard installs on one
# path would register every entry point twice)
rm -rf /tmp/before && mkdir -p /tmp/before && git archive "$before" | tar -x -C /tmp/before
site=/tmp/site_before
install_wheels .whl/base/*.whl && install_checkout /tmp/before
site=/tmp/site
step e2e_qwen_before 120 env PYTHONPATH=/tmp/site_before "${e2e[@]}" --models qwen2.5-0.5b \
  --commit "$(git rev-parse --short "$before")" --json "$out/e2e_qwen_before.json"
step e2e_llama 200 "${e2e[@]}" --models llama3-8b --json "$out/e2e_llama.json"
echo "done in $SECONDS s"
exit $failed
