#!/usr/bin/env bash
# Several sweeps side by side on one host (a GPU host), each training --workers points at
# a time, then each aggregated:
#
#   bash experiments/run_side_by_side.sh ROOT DATA_DIR WORKERS SECONDS CONFIG[:VARIANT]... [-- sweep flags]
#
# e.g. claims 2 and 5 for VGG-11 and ResNet-18 on both datasets:
#
#   bash experiments/run_side_by_side.sh /tmp/exp /tmp/tfds 3 0 configs/antialias.py:rerun_{vgg11,resnet18}{,_photos} \
#       -- --shift_images=0 --set=compilation_cache_dir=/tmp/jaxcache
#
# Each sweep gets ROOT/<config file stem>_<variant> (antialias_rerun_vgg11) and its log
# beside it. The built-in datasets the sweeps read are prepared one after another first
# (two sweeps preparing one dataset would collide). WORKERS points per sweep run at once,
# each in its own process sharing the accelerator; with a shared compilation_cache_dir
# every architecture's programs are compiled once for all of them (the learning rate is
# not part of a program). SECONDS (0: no limit) stops every sweep with SIGTERM after that
# long (and SIGKILLs what still runs a minute later): the running points checkpoint,
# finished ones are aggregated, and the same command resumes. It exits 1 if any sweep
# was stopped or failed (see its log), else 0. PYTHON (default python) runs the sweeps.
set -uo pipefail
ROOT=${1:?ROOT}; DATA_DIR=${2:?DATA_DIR}; WORKERS=${3:?WORKERS}; SECONDS_LEFT=${4:?SECONDS}
shift 4
specs=()
while (( $# )) && [[ "$1" != "--" ]]; do specs+=("$1"); shift; done
(( $# )) && shift  # The "--".
(( ${#specs[@]} )) || { echo "No sweep given: name at least one CONFIG[:VARIANT]." >&2; exit 2; }
cd "$(dirname "$0")/.."
mkdir -p "$ROOT"
start=$(date +%s)
common=(--set=progress_bar=False "--set=data.data_dir=$DATA_DIR" --workers="$WORKERS" "$@")
PYTHON=${PYTHON:-python}
workdir() {  # configs/antialias.py:rerun_vgg11 -> ROOT/antialias_rerun_vgg11
  local file=${1%%:*} variant=${1#*:}
  local stem; stem=$(basename "$file" .py)
  [[ "$variant" == "$1" ]] && echo "$ROOT/$stem" || echo "$ROOT/${stem}_$variant"
}
"$PYTHON" - "$DATA_DIR" "${specs[@]}" <<'EOF' || exit 2
import sys
from progressive.data import pipeline
from progressive.sweeps import spec
data_dir, flags = sys.argv[1], sys.argv[2:]
datas = [spec.load(flag, {"data.data_dir": data_dir}).base.data for flag in flags]
for data in pipeline.prepare_builtins(datas):
  print(f"prepared {data.name}/{data.builder_config} in {data_dir}")
EOF
pids=()
for spec in "${specs[@]}"; do
  dir=$(workdir "$spec")
  "$PYTHON" -m progressive sweep --config="$spec" --workdir="$dir" "${common[@]}" >"$dir.log" 2>&1 &
  pids+=($!)
  echo "$(( $(date +%s) - start )) s: started $spec in $dir"
done
stopped_at=0
while :; do
  running=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
  (( running )) || break
  if (( SECONDS_LEFT > 0 && $(date +%s) - start >= SECONDS_LEFT )); then
    echo "$(( $(date +%s) - start )) s: stopping every sweep (SIGTERM)"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    SECONDS_LEFT=0
    stopped_at=$(date +%s)
  fi
  if (( stopped_at > 0 && $(date +%s) - stopped_at >= 60 )); then
    echo "$(( $(date +%s) - start )) s: SIGKILL to what still runs"
    for pid in "${pids[@]}"; do pkill -KILL -P "$pid"; kill -KILL "$pid"; done 2>/dev/null
    stopped_at=0
  fi
  sleep 2
done
echo "$(( $(date +%s) - start )) s: sweeps ended"
status=0
for i in "${!specs[@]}"; do  # A sweep that finished has aggregated; a stopped one does now.
  wait "${pids[$i]}" && continue
  status=1
  spec=${specs[$i]}; dir=$(workdir "$spec")
  echo "${spec} stopped or failed (see $dir.log); aggregating what finished"
  timeout 120 "$PYTHON" -m progressive sweep --config="$spec" --workdir="$dir" "${common[@]}" \
      --aggregate_only >>"$dir.log" 2>&1 &
done
wait
echo "$(( $(date +%s) - start )) s: done"
exit $status
