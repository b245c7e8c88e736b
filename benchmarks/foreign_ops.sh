#!/usr/bin/env bash
# FlagGems and Liger on the GPU, in one device call: the conformance kit for both plugin
# packages (examples/baseboard-flaggems, examples/baseboard-liger), then their ops beside
# the built-in Triton kernels and torch (benchmarks/foreign_ops.py).
#
# The libraries come from wheels in .whl/ (no network on the GPU machine), installed with
# --no-deps so nothing replaces the image's torch or triton:
#   flag_gems-5.0.2-py3-none-any.whl
#   liger_kernel-0.8.5-py3-none-any.whl
#   sqlalchemy-2.0.48-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl
#       (flag_gems imports it at import time, for its tuning cache)
#   greenlet-3.5.6-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
#       (sqlalchemy's dependency on x86_64)
# and .whl/base/*.whl where present (pytest, pluggy, iniconfig, ... that the image lacks).
# FlagGems' other pins (numpy 1.26.4, packaging, PyYAML) are met by what transformers
# brings. Fetch them, on a machine with network, from the repository root:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     flag-gems==5.0.2 liger-kernel==0.8.5 sqlalchemy==2.0.48 greenlet
#
# Usage, on the GPU machine from the repository root:
#   bash benchmarks/foreign_ops.sh [OUTDIR [STEPS]]
# (OUTDIR defaults to $OUT, else /tmp/foreign_ops; STEPS, a regular expression over the
# step names below, picks the steps to run, all by default). Each step has a time limit, so
# a slow one cannot hide the others; exits non-zero if a step failed or ran out of time.
# FlagGems' GEMM autotuning takes most of a first run (see kit_flaggems_gemm below); the
# GEMM steps alone, resumed with the tuning of the run before:
#   mkdir -p .diag && cp -r FILES_OF_THE_LAST_RUN/flaggems_cache .diag/
#   bash benchmarks/foreign_ops.sh "$OUT" 'kit_flaggems_gemm|bench_gemm'   (carry .diag)
set -uo pipefail
out=${1:-${OUT:-/tmp/foreign_ops}}
steps=${2:-.}
source "$(dirname "$0")/device_lib.sh"
wheels=(.whl/flag_gems-*.whl .whl/liger_kernel-*.whl .whl/sqlalchemy-*.whl .whl/greenlet-*.whl)
if [ -d .whl/base ]; then wheels+=(.whl/base/*.whl); fi
install_wheels "${wheels[@]}" || exit 1
install_checkout . examples/baseboard-flaggems examples/baseboard-liger || exit 1
report_device
step plugins 60 python3 -c "
from baseboard.core.settings import read_settings
from baseboard.frontend.plan import load_catalog
for r in load_catalog(read_settings({})).plugins.report:
    print(r.name, r.status, r.distribution, r.version, r.error or '')"
step kit_liger 180 python3 -m pytest -q -rs -p no:cacheprovider --baseboard-plugin liger
ran_cases kit_liger
step bench_rows 180 python3 benchmarks/foreign_ops.py \
  --ops rms_norm,fused_add_rms_norm,rotary_embedding,silu_and_mul --json "$out/foreign_ops_rows.json"
step kit_flaggems_rows 180 python3 -m pytest -q -rs -p no:cacheprovider \
  --baseboard-plugin flaggems -k "not gemm or signature"
ran_cases kit_flaggems_rows
# FlagGems autotunes each new GEMM key (M, N, K rounded to 32, dtype, strides) over up to
# 216 compiled tile configurations, about 150 s a key on an H200, and the kit's 18 GEMM
# cases make dozens of keys. So they run as nine steps in parallel (a dtype and a shape
# each, with and without bias; compiling is what takes the time, and the host has the
# cores), each with its own FlagGems cache (FLAGGEMS_CACHE_DIR: its tuning database), kept
# in $out/flaggems_cache and taken up again from .diag/flaggems_cache where a run before
# left it there (copy the last run's files there and carry .diag): a run that stops at its
# time limit hands its tuned keys to the next one.
shards=()
for dtype in float32 bfloat16 float16; do
  for shape in K64-N128 K96-N80 K257-N129; do
    shard=$dtype-$shape cases="gemm and $dtype-$shape"
    if [ $dtype = float16 ]; then cases="$cases and not bfloat16"; fi
    cache=$out/flaggems_cache/$shard
    mkdir -p "$cache"
    if [ -d ".diag/flaggems_cache/$shard" ]; then cp -r ".diag/flaggems_cache/$shard/." "$cache/"; fi
    shards+=("kit_flaggems_gemm_$shard")
    tail_lines=1 step "kit_flaggems_gemm_$shard" 540 env FLAGGEMS_CACHE_DIR="$cache" \
      python3 -m pytest -q -rs -p no:cacheprovider --baseboard-plugin flaggems -k "$cases" &
  done
done
wait
for shard in "${shards[@]}"; do ran_cases "$shard"; done
step bench_gemm 300 python3 benchmarks/foreign_ops.py --ops gemm --json "$out/foreign_ops_gemm.json"
exit $failed
