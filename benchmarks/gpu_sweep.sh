#!/usr/bin/env bash
# The GPU checks and measurements still open, in one device call (under 10 minutes):
#   1. the GPU tests of the engine, the models and the fused layers;
#   2. `baseboard serve` against LLM.generate at concurrency 32 on the 0.5B shape, the
#      median of three rounds each, with the server's and the engine's process CPU;
#   3. the quantized GEMMs against bf16 and gemlite (the weight-only GEMV's loop changed
#      at 80f8094);
#   4. the 0.5B shape end to end at batch 1 (the 1600 tok/s target).
# Each step has its own time limit, so a slow one cannot hide the others.
#
# What the device image lacks comes from wheels in .whl/base (no network there), installed
# with --no-deps so nothing replaces its torch or triton: gguf, fastapi, starlette,
# uvicorn, uvloop, httptools, pydantic, pydantic-core, annotated-types, annotated-doc,
# typing-inspection, opentelemetry-api, importlib-metadata, zipp, anyio, sniffio, h11,
# click, prometheus-client, openai, httpx2, httpcore2, truststore, idna, distro, jiter;
# and gemlite (an sdist on the index: `pip wheel --no-deps gemlite==0.6.0.post2`).
# Fetch them, on a machine with network, from the repository root:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl/base NAMES
#
# Usage, on the GPU machine from the repository root: bash benchmarks/gpu_sweep.sh [OUTDIR]
# (OUTDIR defaults to $OUT, else /tmp/sweep).
set -uo pipefail
out=${1:-${OUT:-/tmp/sweep}}
tail_lines=6
source "$(dirname "$0")/device_lib.sh"
install_wheels .whl/base/*.whl || exit 1
install_checkout . || exit 1
report_device

serve=(python3 benchmarks/serve.py --shape qwen2.5-0.5b --concurrency 32 --requests 192
       --max-tokens 128 --clients 8)
step gpu_tests 120 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/engine/test_engine_gpu.py tests/models/test_fused_layers_gpu.py \
  tests/models/test_models_gpu.py
step serve 150 "${serve[@]}" --json "$out/serve.json"
step quant_gemm 240 python3 benchmarks/quant_gemm.py --out "$out/quant_gemm.json"
step e2e_qwen 140 python3 benchmarks/e2e_gpu.py --models qwen2.5-0.5b --batches 1 \
  --peer-batches "" --repeats 2 --json "$out/e2e_qwen.json"
echo "done in $SECONDS s"
exit $failed
