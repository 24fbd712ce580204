#!/usr/bin/env bash
# Runs every sweep behind experiments/FINDINGS.md, one after another, then rebuilds it:
#
#   bash experiments/run_findings.sh /tmp/exp [DATA_DIR]
#
# ROOT (default /tmp/exp) gets one folder per sweep, named as its copy under
# experiments/results/; DATA_DIR (default: TFDS's usual directory) is where the built-in
# datasets are generated on first use. Finished points are skipped, so an interrupted run
# resumes where it stopped (the sessions that wrote FINDINGS.md ran this list in the
# background at nice 19, across sessions). On two CPU cores each sweep takes hours:
# train_test_size took 2 h 20 min of one core. The sweeps behind HISTORY.md are in this
# file's history (commit 9725734).
set -euo pipefail
ROOT=${1:-/tmp/exp}
DATA_DIR=${2:-}
cd "$(dirname "$0")/.."
common=(--set=progress_bar=False)
[[ -n "$DATA_DIR" ]] && common+=("--set=data.data_dir=$DATA_DIR")
sweep() { progressive sweep "--config=$2" "--workdir=$ROOT/$1" "${common[@]}"; }

# Claims 1, 4 and 7, then the same arms at twice the budget (the convergence check).
sweep train_test_size_fresh configs/train_test_size.py
sweep train_test_size_long configs/train_test_size.py:long
# Claim 3: progressive resizing against fixed sizes and zoom augmentation, equal FLOPs and steps.
sweep progressive_resizing_fresh configs/progressive_resizing.py
# Claims 2 and 5: stride, max-pooling and blurs, with an equal-FLOPs stride baseline.
sweep antialias_rerun_fresh configs/antialias.py:rerun
# Claim 6: batch norm, one-cycle and batch size, dead units after each ReLU.
sweep stability_rerun_fresh configs/stability.py:rerun
# Claim 5: the stride^2 argument (shift augmentation), and depth at a fixed total stride.
sweep translation configs/translation.py
sweep depth configs/depth.py:tuned64
# Claim 1 inside one object: a self-similar part against a fixed-period part.
sweep parts configs/parts.py
python experiments/make_findings.py "$ROOT"
