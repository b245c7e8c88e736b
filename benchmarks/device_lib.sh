# What the device scripts (gpu_sweep.sh, foreign_ops.sh, quantized_e2e_gpu.sh) share: the
# installs into /tmp/site, the device's report, and steps under time limits. Source it after
# setting `out` (the folder for logs and results) and, where wanted, `steps` (a regular
# expression over step names: only those run; all by default) and `tail_lines` (lines of
# a step's log printed after it; 40 by default).
#
# Wheels go in with --no-deps, so nothing replaces the image's torch or triton; there is
# no network on the GPU machine, so what it lacks comes as wheels in .whl/.

site=/tmp/site
steps=${steps:-.}
failed=0
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}

install_wheels() {  # WHEEL...
  [ $# -eq 0 ] && return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$@"
}

# DIR...: baseboard (.) and plugin packages from this checkout; their entry points are
# found through the metadata pip writes
install_checkout() {
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade \
    --target "$site" "$@"
}

report_device() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
}

# step NAME SECONDS COMMAND...: COMMAND under a time limit, its output in $out/NAME.log and
# the log's tail printed; a failure or a timeout sets `failed` (in this shell: a step run in
# the background reports through ran_cases instead)
step() {
  local name=$1 limit=$2
  shift 2
  [[ $name =~ $steps ]] || return 0
  echo "=== $name ($SECONDS s in)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n "${tail_lines:-40}" "$out/$name.log"
  if [ "$rc" -eq 124 ]; then echo "=== $name: stopped after ${limit}s"; failed=1
  elif [ "$rc" -ne 0 ]; then echo "=== $name FAILED (exit $rc)"; failed=1; fi
}

# ran_cases NAME: step NAME's pytest summary says cases passed and none failed (a library
# that does not load turns every case into a skip: that is no pass)
ran_cases() {
  [[ $1 =~ $steps ]] || return 0
  local summary
  summary=$(tail -1 "$out/$1.log" 2>/dev/null)
  if [[ ! $summary =~ (^| )[0-9]+\ passed ]] || [[ $summary =~ failed|error ]]; then
    echo "=== $1: no pass (${summary:-no summary})"
    failed=1
  fi
}
