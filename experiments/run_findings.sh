#!/usr/bin/env bash
# Runs every sweep behind experiments/FINDINGS.md, one after another, then rebuilds it:
#
#   bash experiments/run_findings.sh /tmp/exp [DATA_DIR]
#   bash experiments/run_findings.sh --status /tmp/exp    # where each sweep stands
#   bash experiments/run_findings.sh --workers=2 /tmp/exp # two points at a time
#
# ROOT (default /tmp/exp) gets one folder per sweep, named as its copy under
# experiments/results/; DATA_DIR (default: TFDS's usual directory) is where the built-in
# datasets are generated on first use. Finished points are skipped, so an interrupted run
# resumes where it stopped (the sessions that wrote FINDINGS.md ran this list in the
# background at nice 19, across sessions). In the background, lower its scheduling group
# as well as its nice: Linux weighs each session's group (`setsid`, a new terminal)
# equally whatever its processes' nice, so a nice 19 sweep under `setsid` still takes
# half of the machine from the terminal's work. `--status` runs nothing: it prints each
# sweep's `progressive sweep --status` headline (running or not, its runs, the time left),
# safe beside the running script. `--workers=N` passes on to every sweep: N points (or
# tuning runs) train at a time, each in its own process; on two CPU cores two processes
# train 15-35% more images a second than one (docs/BENCHMARKS.md), and on a GPU host
# more. For example:
#   setsid nohup bash -c 'echo 19 > /proc/self/autogroup; exec nice -n 19 \
#     bash experiments/run_findings.sh /tmp/exp' > /tmp/exp.log 2>&1 &
# A machine that is not kept (a new session may start on a bare one) saves the runs that
# have ended into the repository with `python experiments/progress.py save ROOT`, and a new
# one restores them first with `python experiments/progress.py restore ROOT`
# (experiments/progress/README.md). On two CPU cores each sweep takes hours:
# train_test_size took 2 h 20 min of one core. The sweeps behind HISTORY.md are in this
# file's history (commit 9725734).
set -euo pipefail
STATUS=0
WORKERS=()
while [[ ${1:-} == --* ]]; do
  case $1 in
    --status) STATUS=1 ;;
    --workers=*) WORKERS=("$1") ;;
    *) echo "run_findings.sh: unknown option $1 (--status, --workers=N)" >&2; exit 2 ;;
  esac
  shift
done
ROOT=${1:-/tmp/exp}
DATA_DIR=${2:-}
cd "$(dirname "$0")/.."
common=(--set=progress_bar=False)
[[ -n "$DATA_DIR" ]] && common+=("--set=data.data_dir=$DATA_DIR")
sweep() {
  if (( STATUS )); then
    progressive sweep "--config=$2" "--workdir=$ROOT/$1" "${common[@]}" "${@:3}" --status |
      awk 'NR == 1 || /^(Tuning|Points|Time)/'
  else
    progressive sweep "--config=$2" "--workdir=$ROOT/$1" "${common[@]}" "${WORKERS[@]}" "${@:3}"
  fi
}

# The budget the 64 px sweeps need: the simple CNN at 4-32 epochs, on a validation slice.
sweep convergence configs/convergence.py --shift_images=64
sweep convergence_photos configs/convergence.py:photos --shift_images=64

# Every claim at 64 px: the arms of each sweep's primary hypotheses (train_test_size's
# with every size doubled) at the ladder's budget; then each sweep's check of convergence,
# the same arms at twice the budget, two seeds, at the rates the first budget chose.
sweep train_test_size_px64 configs/train_test_size.py:px64
sweep stability_px64 configs/stability.py:px64
sweep progressive_resizing_px64 configs/progressive_resizing.py:px64
sweep antialias_px64 configs/antialias.py:px64 --canvas_topk=5
sweep translation_px64 configs/translation.py:px64 --canvas_topk=5
sweep depth_px64 configs/depth.py:px64 --canvas_topk=5
# Claims 1, 4 and 7 replicated on real photographs at 64 px (the photographs' ladder first).
sweep train_test_size_px64_photos configs/train_test_size.py:px64_photos
sweep train_test_size_px64_photos_long configs/train_test_size.py:px64_photos_long \
  "--tuning_from=$ROOT/train_test_size_px64_photos"
for name in train_test_size stability progressive_resizing antialias translation depth; do
  extra=(); [[ $name == antialias || $name == translation || $name == depth ]] &&
    extra=(--canvas_topk=5)
  sweep "${name}_px64_long" "configs/$name.py:px64_long" "--tuning_from=$ROOT/${name}_px64" \
    "${extra[@]}"
done
# train_test_size's check found only flip64 within a point at 16 epochs, so its `:px64_long`
# is a second budget with every seed (32 epochs), checked in turn at 64 epochs.
for data in "" _photos; do
  sweep "train_test_size_px64${data}_long_check" "configs/train_test_size.py:px64${data}_long_check" \
    "--tuning_from=$ROOT/train_test_size_px64${data}"
done
# Claims 1, 4 and 7 at 32 px, then the same arms at twice the budget (the convergence check).
sweep train_test_size_fresh configs/train_test_size.py
sweep train_test_size_long configs/train_test_size.py:long
sweep train_test_size_long_check configs/train_test_size.py:long_check \
  "--tuning_from=$ROOT/train_test_size_long"
# Claim 3: progressive resizing against fixed sizes and zoom augmentation, equal FLOPs and
# steps, then at twice the budget (the convergence check).
sweep progressive_resizing_fresh configs/progressive_resizing.py
sweep progressive_resizing_long_fresh configs/progressive_resizing.py:long
# Claims 2 and 5 for the deeper families at 64 px, sized for a GPU host (`--workers`).
sweep antialias_px64_vgg11 configs/antialias.py:px64_vgg11 --canvas_topk=5
sweep antialias_px64_resnet18 configs/antialias.py:px64_resnet18 --canvas_topk=5
# Claims 2, 5 and 6 have no 32 px sweep here: the 32 px budgets of claims 1, 4 and 7 (6
# epochs) failed their check of convergence by 20 points, so these claims go straight to
# 64 px (above). Depth at a fixed total stride (claim 5) at the GPU's scale: VGG-11/13/16
# at width 0.25 (`depth:px64` is VGG-11 and -16 at width 0.125, sized for the CPU), for a
# GPU host (`--workers`); on two CPU cores it is days.
sweep depth configs/depth.py:tuned64 --canvas_topk=5
# Claim 1 inside one object: a self-similar part against a fixed-period part.
sweep parts configs/parts.py
sweep parts_long configs/parts.py:long "--tuning_from=$ROOT/parts"
(( STATUS )) || python experiments/make_findings.py "$ROOT"
