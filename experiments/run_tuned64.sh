#!/usr/bin/env bash
# Claims 2 and 5 for all three model families at 64 px (configs/antialias.py:tuned64_*):
# six sweeps (simple CNN, VGG-11, ResNet-18; scale_shapes and photographs) side by side,
# each training --workers points at a time, then each aggregated:
#
#   bash experiments/run_tuned64.sh ROOT DATA_DIR [WORKERS] [SECONDS] [--set=... sweep flags]
#
# Sized for a GPU host (on a 2-core CPU, ResNet-18 at 64 px trains at about 10 images/s).
# WORKERS (default 3) points per sweep run at once, each in its own process sharing the
# accelerator. SECONDS (default: none) stops every sweep with SIGTERM after that long (and
# SIGKILLs what still runs a minute later): the running points checkpoint, finished ones
# are aggregated, and the same command resumes. PYTHON (default python) runs the sweeps.
# The photographs are prepared once before their sweeps start (three sweeps preparing
# one dataset would collide). Extra arguments go to every sweep.
set -uo pipefail
ROOT=${1:?ROOT}; DATA_DIR=${2:?DATA_DIR}; WORKERS=${3:-3}; SECONDS_LEFT=${4:-0}
shift $(( $# < 4 ? $# : 4 ))
cd "$(dirname "$0")/.."
mkdir -p "$ROOT"
start=$(date +%s)
common=(--set=progress_bar=False "--set=data.data_dir=$DATA_DIR" --workers="$WORKERS" "$@")
PYTHON=${PYTHON:-python}
pids=()
stopped_at=0
launch() {  # launch VARIANT: one sweep in the background, its output in ROOT/VARIANT.log
  "$PYTHON" -m progressive.sweep --config="configs/antialias.py:$1" --workdir="$ROOT/$1" \
      "${common[@]}" >"$ROOT/$1.log" 2>&1 &
  pids+=($!)
  echo "$(( $(date +%s) - start )) s: started $1"
}
for family in resnet18 vgg11 simple_cnn; do launch "tuned64_$family"; done
"$PYTHON" -c "from progressive.data import photos; photos.prepare('default', '$DATA_DIR')" \
    >"$ROOT/prepare_photos.log" 2>&1 || { echo "preparing photos failed: see $ROOT/prepare_photos.log"; }
for family in resnet18 vgg11 simple_cnn; do launch "tuned64_${family}_photos"; done
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
echo "$(( $(date +%s) - start )) s: sweeps ended; aggregating"
for family in resnet18 vgg11 simple_cnn; do
  for data in "" _photos; do
    variant="tuned64_$family$data"
    timeout 90 "$PYTHON" -m progressive.sweep --config="configs/antialias.py:$variant" \
        --workdir="$ROOT/$variant" "${common[@]}" --aggregate_only >>"$ROOT/$variant.log" 2>&1 &
  done
done
wait
echo "$(( $(date +%s) - start )) s: done"
