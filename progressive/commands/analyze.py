"""Analyses a run: `progressive analyze --workdir=DIR` writes `DIR/analysis/`.

    progressive analyze --workdir=/tmp/progressive/default
    progressive analyze --workdir=/tmp/run --num_images=2000 --per_bin=120 \
        --sizes=16,24,32,48,64,96 --shift_mode=edge --compare=/tmp/run32,/tmp/run64

`report.md` links every figure and the JSON and CSV behind it (docs/ANALYSIS.md): for any
dataset, per-class accuracy, the confusion matrix, the top losses, show_batch and the loss
curves besides the scale, shift and activation analyses. The defaults keep a smoke run's
analysis to seconds on a CPU; raise the counts for real runs. `--compare` takes runs of
the same dataset only.
"""

from absl import flags

from progressive import analysis, cli
from progressive.analysis import controls, shift


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags."""
  define = {"flag_values": fv}
  flags.DEFINE_string("workdir", None, "The run's workdir (config.json, checkpoints/).",
                      required=True, **define)
  flags.DEFINE_integer("step", None, "Checkpoint step to analyse (default: the latest).", **define)
  flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/analysis).", **define)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir, if not the one in the run's config.",
                      **define)
  flags.DEFINE_string("images", None, "A folder IMAGES/<class>/<image>, class folders named by "
                      "the run's classes, to analyse on instead of the run's data (a network "
                      "imported without data needs one).", **define)
  flags.DEFINE_integer("num_images", 64, "Test images for size matrix, ensemble and shifts.",
                       **define)
  flags.DEFINE_list("sizes", None, "Test sizes (default: every stage and eval size).", **define)
  flags.DEFINE_integer("canvas_size", None, "Object-scale canvas (default: the stage size).",
                       **define)
  flags.DEFINE_integer("bn_images", 1024, "Training images batch norm is recalibrated on at "
                       "each test size (0: no recalibration control).", **define)
  flags.DEFINE_list("canvas_sizes", None, "Canvas-control sizes: test images cropped or padded, "
                    "never resampled (default: the test sizes).", **define)
  flags.DEFINE_enum("canvas_mode", "edge", controls.CANVAS_MODES, "How the canvas control pads "
                    "a larger canvas.", **define)
  flags.DEFINE_integer("per_bin", 12, "Rendered scenes per object-scale bin.", **define)
  flags.DEFINE_integer("shift_size", None, "Input size for the shift analyses (default: stage "
                       "size).", **define)
  flags.DEFINE_enum("shift_mode", None, shift.MODES, "How shifted views are made (default: "
                    "render for scale_shapes and photos, reflect for other datasets).", **define)
  flags.DEFINE_integer("max_shift", 4, "Sweep and consistency offsets up to this many pixels.",
                       **define)
  flags.DEFINE_list("direction", ["1", "0"], "Sweep direction dx,dy.", **define)
  flags.DEFINE_integer("topk", 1, "Jaggedness counts the true class entering or leaving the "
                       "top-k.", **define)
  flags.DEFINE_integer("stats_images", 64, "Batch for activation statistics.", **define)
  flags.DEFINE_bool("stats_train", False, "Batch norm with batch statistics for activation "
                    "stats.", **define)
  flags.DEFINE_list("compare", [], "More workdirs: their latest checkpoints become size-matrix "
                    "rows.", **define)
  flags.DEFINE_integer("seed", 0, "Seed of rendered scenes and random shifts.", **define)
  flags.DEFINE_integer("interpret_images", None, "Test images for per-class accuracy, the "
                       "confusion matrix and the top losses (default: the whole eval split).",
                       **define)
  flags.DEFINE_integer("top_losses", 9, "Images in the top-losses grid.", **define)
  flags.DEFINE_integer("show_batch_images", 8, "Training inputs shown per stage (0: none).",
                       **define)


def _main(fv: flags.FlagValues) -> None:
  """Loads the run (and `--compare`), writes the report."""
  run = analysis.load_run(fv.workdir, fv.step, data_dir=fv.data_dir, images=fv.images)
  compare = {}
  for workdir in fv.compare:
    other = analysis.load_run(workdir, data_dir=fv.data_dir, images=fv.images)
    analysis.check_comparable(run, other)  # Before any analysis: one line if not.
    compare[f"{workdir} ({other.train_size} px)"] = other
  options = analysis.Options(
      num_images=fv.num_images,
      sizes=[int(s) for s in fv.sizes] if fv.sizes else None,
      canvas_size=fv.canvas_size,
      bn_images=fv.bn_images,
      canvas_sizes=[int(s) for s in fv.canvas_sizes] if fv.canvas_sizes else None,
      canvas_mode=fv.canvas_mode,
      per_bin=fv.per_bin,
      shift_size=fv.shift_size,
      shift_mode=fv.shift_mode,
      max_shift=fv.max_shift,
      direction=tuple(int(d) for d in fv.direction),
      topk=fv.topk,
      stats_images=fv.stats_images,
      stats_train=fv.stats_train,
      compare=compare,
      seed=fv.seed,
      interpret_images=fv.interpret_images,
      top_losses=fv.top_losses,
      show_batch_images=fv.show_batch_images,
  )
  print(analysis.describe(run))
  path = analysis.write_report(run, fv.out, options)
  print(f"Wrote {path}")


COMMAND = cli.Command("analyze", __doc__, define_flags, _main)
