#!/usr/bin/env bash
# `baseboard serve` against LLM.generate, before and after a change, in one device call:
# the 0.5B shape at concurrency 32 (benchmarks/serve.py, three rounds a run), the two
# trees' runs alternating so that a drift of the machine touches both.
#
# Usage, on the GPU machine from the repository root, with the earlier tree unpacked
# beside it (here: `git archive COMMIT | tar -x -C .whl/before`, carried with .whl):
#   bash benchmarks/serve_ab.sh OUTDIR BEFORE_DIR [RUNS] [SERVE.PY OPTIONS...]
# (the options replace --requests 192 --clients 8). Wheels as gpu_sweep.sh says, in
# .whl/base.
set -uo pipefail
out=$1 before=$2 runs=${3:-2}
load=("${@:4}")
[ ${#load[@]} -eq 0 ] && load=(--requests 192 --clients 8)
tail_lines=8
source "$(dirname "$0")/device_lib.sh"
install_wheels .whl/base/*.whl || exit 1
install_checkout . || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade \
  --target /tmp/site_before "$before" || exit 1
report_device

# serve.py starts `python -m baseboard.cli` in its own tree, whose baseboard comes first
serve=(python3 benchmarks/serve.py --shape qwen2.5-0.5b --concurrency 32 --max-tokens 128
       "${load[@]}")
for run in $(seq "$runs"); do
  (cd "$before" && PYTHONPATH=/tmp/site_before:$site step "serve_before_$run" 200 \
    "${serve[@]}" --json "$out/serve_before_$run.json"; exit $failed) || failed=1
  step "serve_after_$run" 200 "${serve[@]}" --json "$out/serve_after_$run.json"
done
echo "done in $SECONDS s"
exit $failed
