"""Analyses a run: `python -m progressive.analyze --workdir=DIR` writes `DIR/analysis/`.

    python -m progressive.analyze --workdir=/tmp/progressive/default
    python -m progressive.analyze --workdir=/tmp/run --num_images=2000 --per_bin=120 \
        --sizes=16,24,32,48,64,96 --shift_mode=edge --compare=/tmp/run32,/tmp/run64

`report.md` links every figure and the JSON behind it (docs/ANALYSIS.md). The defaults
keep a smoke run's analysis to seconds on a CPU; raise the counts for real runs.
"""

import sys

from absl import app, flags, logging

from progressive import analysis
from progressive.analysis import shift

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's workdir (config.json, checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step to analyse (default: the latest).")
flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/analysis).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, if not the one in the run's config.")
flags.DEFINE_integer("num_images", 64, "Test images for size matrix, ensemble and shifts.")
flags.DEFINE_list("sizes", None, "Test sizes (default: every stage and eval size).")
flags.DEFINE_integer("canvas_size", None, "Object-scale canvas (default: the stage size).")
flags.DEFINE_integer("per_bin", 12, "Rendered scenes per object-scale bin.")
flags.DEFINE_integer("shift_size", None, "Input size for the shift analyses (default: stage size).")
flags.DEFINE_enum("shift_mode", None, shift.MODES, "How shifted views are made (default: "
                  "render for scale_shapes, reflect for other datasets).")
flags.DEFINE_integer("max_shift", 4, "Sweep and consistency offsets up to this many pixels.")
flags.DEFINE_list("direction", ["1", "0"], "Sweep direction dx,dy.")
flags.DEFINE_integer("topk", 1, "Jaggedness counts the true class entering or leaving the top-k.")
flags.DEFINE_integer("stats_images", 64, "Batch for activation statistics.")
flags.DEFINE_bool("stats_train", False, "Batch norm with batch statistics for activation stats.")
flags.DEFINE_list("compare", [], "More workdirs: their latest checkpoints become size-matrix rows.")
flags.DEFINE_integer("seed", 0, "Seed of rendered scenes and random shifts.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    run = analysis.load_run(FLAGS.workdir, FLAGS.step, data_dir=FLAGS.data_dir)
    compare = {}
    for workdir in FLAGS.compare:
      other = analysis.load_run(workdir, data_dir=FLAGS.data_dir)
      compare[f"{workdir} ({other.train_size} px)"] = other
  except analysis.RunError as e:
    sys.exit(f"Error: {e}")
  options = analysis.Options(
      num_images=FLAGS.num_images,
      sizes=[int(s) for s in FLAGS.sizes] if FLAGS.sizes else None,
      canvas_size=FLAGS.canvas_size,
      per_bin=FLAGS.per_bin,
      shift_size=FLAGS.shift_size,
      shift_mode=FLAGS.shift_mode,
      max_shift=FLAGS.max_shift,
      direction=tuple(int(d) for d in FLAGS.direction),
      topk=FLAGS.topk,
      stats_images=FLAGS.stats_images,
      stats_train=FLAGS.stats_train,
      compare=compare,
      seed=FLAGS.seed,
  )
  print(analysis.describe(run))
  path = analysis.write_report(run, FLAGS.out, options)
  print(f"Wrote {path}")


if __name__ == "__main__":
  app.run(main)
