#!/usr/bin/env bash
# Runs every sweep behind experiments/FINDINGS.md at the CPU-scale settings it reports,
# then rebuilds FINDINGS.md from their results.md:
#
#   bash experiments/run_findings.sh /tmp/exp /tmp/tfds
#
# ROOT (default /tmp/exp) gets one folder per sweep; DATA_DIR (default: TFDS's usual
# directory) is where scale_shapes is generated on first use. Finished points are
# skipped, so an interrupted run resumes where it stopped. On a 2-core CPU it takes
# about twelve hours (the reruns about 60-90 minutes each) without the VGG-11 and ResNet-18
# reruns. WORKERS (default 1) sets --workers for those.
set -euo pipefail
ROOT=${1:-/tmp/exp}
DATA_DIR=${2:-}
cd "$(dirname "$0")/.."
common=(--set=progress_bar=False --shift_images=200)
[[ -n "$DATA_DIR" ]] && common+=("--set=data.data_dir=$DATA_DIR")
sweep() { progressive sweep "${common[@]}" "$@"; }

sweep --config=configs/progressive_vs_fixed.py --workdir="$ROOT/progressive_vs_fixed"
# Claim 3 rerun: tuned arms, five seeds (about 45 minutes here on its five-value grid;
# the photos variant, three values, about 40).
sweep --config=configs/progressive_resizing.py --workdir="$ROOT/progressive_resizing" --shift_images=64
sweep --config=configs/progressive_resizing.py:photos --workdir="$ROOT/progressive_resizing_photos" --shift_images=64
# Claim 3's second budget (every stage twice as long; about 45 minutes here, the photos
# variant, with its wider grid, about 80).
sweep --config=configs/progressive_resizing.py:long --workdir="$ROOT/progressive_resizing_long" --shift_images=64
sweep --config=configs/progressive_resizing.py:photos_long --workdir="$ROOT/progressive_resizing_photos_long" --shift_images=64
# Grid checks one step beyond the ends of the grids that chose an end (a few minutes each).
# The first one is the check that widened the first budget's grid (FINDINGS says how).
sweep --config=configs/progressive_resizing.py --workdir="$ROOT/progressive_resizing_edges" \
    --tune_only --tuning_grid=0.1,1.6
sweep --config=configs/progressive_resizing.py:photos --workdir="$ROOT/progressive_resizing_photos_edges" \
    --tune_only --tuning_grid=0.1,1.6
sweep --config=configs/progressive_resizing.py:long --workdir="$ROOT/progressive_resizing_long_edges" \
    --tune_only --tuning_grid=1.6
# Claims 1, 4 and 7 rerun with the controls, and claims 2 and 5 rerun: tuned, five seeds
# (each about 90 minutes here, the two run side by side on two cores).
sweep --config=configs/train_test_size.py --workdir="$ROOT/train_test_size" --shift_images=64
sweep --config=configs/train_test_size.py:photos --workdir="$ROOT/train_test_size_photos" --shift_images=64
# Its grid chose its lowest rate for seven of eight arms: the same tuning runs below it.
sweep --config=configs/train_test_size.py --workdir="$ROOT/train_test_size_lower" --tune_only --tuning_grid=0.05,0.1
# The photographs' grid chose an end for every arm: the same tuning runs beyond both.
sweep --config=configs/train_test_size.py:photos --workdir="$ROOT/train_test_size_photos_edges" \
    --tune_only --tuning_grid=0.1,1.6
sweep --config=configs/antialias.py:rerun --workdir="$ROOT/antialias_rerun" --shift_images=0
sweep --config=configs/antialias.py:rerun_photos --workdir="$ROOT/antialias_rerun_photos" --shift_images=0
# The same for VGG-11 and ResNet-18 (WORKERS points at a time; on an H200 the tuning of
# all four took under 7 minutes, docs/BENCHMARKS.md; on two CPU cores ResNet-18's two
# take about 5-6 hours, a point about 9 minutes of one core).
for variant in rerun_vgg11 rerun_vgg11_photos rerun_resnet18 rerun_resnet18_photos; do
  sweep --config=configs/antialias.py:$variant --workdir="$ROOT/antialias_$variant" --shift_images=0 \
      --workers="${WORKERS:-1}"
done
# VGG-11 on photographs chose the lowest rate for two arms: the same tuning runs below it.
sweep --config=configs/antialias.py:rerun_vgg11_photos --workdir="$ROOT/antialias_rerun_vgg11_photos_lower" \
    --tune_only --tuning_grid=0.0125
# Claim 6 rerun: a learning-rate grid per arm (45 runs of 96 steps), five seeds (about an hour).
sweep --config=configs/stability.py:rerun --workdir="$ROOT/stability_rerun" --shift_images=64
sweep --config=configs/stability.py:rerun_photos --workdir="$ROOT/stability_rerun_photos" --shift_images=64
sweep --config=configs/fixres.py --workdir="$ROOT/fixres"
sweep --config=configs/size_sweep.py --workdir="$ROOT/size_sweep"
# Every model family at 32 px (the config's 64 px does not fit the CPU budget); VGG
# takes nothing under 32 px (five 2x2 poolings).
at32="--set=stages=({'size': 32, 'epochs': 4},)"
sweep --config=configs/antialias.py:simple_cnn --workdir="$ROOT/antialias32" "$at32" \
    "--set=eval_sizes=(16, 24, 32, 48)"
for model in vgg11 resnet18; do
  sweep --config=configs/antialias.py:$model --workdir="$ROOT/antialias32_$model" "$at32" \
      "--set=eval_sizes=(32, 40, 48, 64)"
done
sweep --config=configs/stability.py --workdir="$ROOT/stability"
sweep --config=configs/head.py --workdir="$ROOT/head"
# Not in FINDINGS yet: claims 2 and 5 for all three families at 64 px, sized for a GPU host
# (bash experiments/run_side_by_side.sh "$ROOT" "$DATA_DIR" 3 0 configs/antialias.py:tuned64_{simple_cnn,vgg11,resnet18}{,_photos};
# see FINDINGS' "Not yet measured").
python experiments/make_findings.py "$ROOT"
