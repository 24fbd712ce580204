r"""`progressive sweep`: train, print or aggregate the points of a config file's sweep.

  progressive sweep --config=configs/antialias.py:smoke --workdir=/tmp/antialias
  progressive sweep --config=configs/antialias.py --workdir=DIR --print_commands
  progressive sweep --config=configs/antialias.py --workdir=DIR --aggregate_only
  progressive sweep --config=configs/antialias.py --workdir=DIR --status
  progressive sweep --config=configs/antialias.py --workdir=DIR --set=data.data_dir=/data

A config file that sweeps defines `get_sweep(arg)` beside `get_config(arg)`: a list of
override dicts, one per point, whose keys are dotted config fields
(`{"model.downsample": "blur", "model.blur_size": 3}`) and an optional `"name"`
(`progressive.sweeps.spec`). Every point trains into `DIR/<name>/`; a finished point is
skipped and a partial one resumes. A finished point whose `config.json` differs from
what the sweep now gives it in a field that changes training (the sweep file was edited,
or an extended tuning grid moved the choice) stops the sweep before anything trains,
naming every such point and field: move those folders aside to rerun them. Aggregation
reads whatever has finished, so points trained elsewhere (`--print_commands` for a
cluster) count too, and writes `DIR/results.csv`, `DIR/results.md` and `DIR/results.png`.
`--workers=N` trains N points at a time, each in its own process: on a GPU host, where
one small model leaves the accelerator and most cores idle. `--status` prints where the
sweep stands and changes nothing, so it runs beside the sweep: each tuning run and point
finished, diverged, partway (at which step) or not started, each tuning cell's mean
metric and the choice, and the training time so far with about how much is left.

`with_seeds(points, seeds)` repeats every point per seed; aggregation then adds the mean
and standard deviation over the seeds of points whose overrides differ only in `seed`.
A config file may also define `get_ensemble_sizes(arg)`: each point then reports the
multi-size test-time ensemble over those sizes (overridden by `--ensemble_sizes`).

A config file may define `get_tuning(arg)`, e.g. `{"field": "opt.lr_max", "grid": [0.1,
0.2, 0.4], "metric": "acc@64"}`: every arm (the points that differ only in `seed`) is
first trained once per grid value and tuning seed (`seeds`, at least 2) on a validation
slice of the training split (`train_split`/`eval_split`, default
`train[:90%]`/`train[90%:]`, into `DIR/tuning/<arm>__<field>=<value>_seed<seed>/`); the
value with the best mean validation `metric` is then the arm's setting for all its seeds on the configured splits (the test split is
never used to choose). `DIR/tuning/choice.json` keeps the choice; aggregation reports
the grid. `--tuning_from=DIR1` takes DIR1's choice instead, arm by arm name (a check of
convergence at twice the budget, at the first budget's rates).
"""

import signal

from absl import flags

from progressive import cli
from progressive.sweeps import aggregate, run, spec, status, tuning


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags (`--config` is a sweep file's path, not a loaded config)."""
  define = {"flag_values": fv}
  flags.DEFINE_string("config", None, "Config file with get_sweep, e.g. "
                      "configs/antialias.py[:smoke].", required=True, **define)
  flags.DEFINE_string("workdir", None, "Sweep directory: one folder per point, results.* at the "
                      "top.", required=True, **define)
  flags.DEFINE_bool("print_commands", False, "Print one `progressive train` command per point.",
                    **define)
  flags.DEFINE_bool("aggregate_only", False, "Only aggregate what has finished.", **define)
  flags.DEFINE_bool("status", False, "Print where the sweep stands (each tuning run and point "
                    "finished, diverged, partway or not started; the tuning choice; the time "
                    "so far and about what is left), reading only: safe beside the running "
                    "sweep.", **define)
  flags.DEFINE_multi_string("set", [], "field=value applied to every point, e.g. "
                            "data.data_dir=/data.", **define)
  flags.DEFINE_integer("shift_images", 0, "Test images for the shift measures (0: every one).",
                       **define)
  flags.DEFINE_integer("max_shift", 4, "Largest shift in pixels for the shift measures.",
                       **define)
  flags.DEFINE_list("ensemble_sizes", None, "Sizes of the multi-size test-time ensemble "
                    "(default: the config file's get_ensemble_sizes(arg); empty: none).",
                    **define)
  flags.DEFINE_bool("tune_only", False, "Only the tuning grid: write DIR/tuning.csv and the "
                    "choice, train no point (e.g. to check a grid before the seeds).", **define)
  flags.DEFINE_list("tuning_grid", None, "With --tune_only: these values instead of the config's "
                    "tuning grid, e.g. 0.05,0.1 (to check below or above it).", **define)
  flags.DEFINE_string("tuning_from", None, "Another sweep's workdir: each arm takes the value "
                      "that sweep chose for its arm of the same name, and no tuning runs (a "
                      "check at twice the budget, at the first budget's rates).", **define)
  flags.DEFINE_integer("workers", 1, "Points trained at a time, each in its own process (a GPU "
                       "host's cores; small models leave an accelerator mostly idle).", **define)
  flags.DEFINE_integer("bn_images", 1024, "Training images for the scale controls' columns "
                       "(acc_bn@S, acc_canvas@S, acc_canvas_bn@S; 0: none).", **define)
  flags.DEFINE_integer("canvas_topk", 0, "Azulay & Weiss's canvas protocol on the shift images "
                       "with top-k jaggedness (aw_jag_top<k>, aw_changed_top<k>, aw_acc_top<k>; "
                       "0: off; a forward pass per pixel of two periods per image).", **define)


def _load(flag: str, common) -> spec.Sweep:
  """`spec.load`; an error raised in the sweep file itself (a syntax error, a failed
  import, an exception in `get_config` or `get_sweep`) as one line naming the file and
  line, as every command reports its config file's."""
  try:
    return spec.load(flag, common)
  except Exception as e:  # pylint: disable=broad-exception-caught
    message = cli.config_load_error(e, spec.split_flag(flag)[0])
    if message is None:
      raise
    raise cli.Error(message) from e


def _main(fv: flags.FlagValues) -> int | None:
  """Prints the commands, aggregates, or trains every unfinished point and aggregates; 128
  + the signal's number if a signal stopped the sweep (the training points checkpointed)."""
  try:  # A bad sweep file, --set or --ensemble_sizes fails here, before any point trains.
    sweep = _load(fv.config, spec.parse_overrides(fv.set))
    if fv.status:
      if fv.print_commands or fv.aggregate_only or fv.tune_only or fv.tuning_grid:
        raise ValueError("--status only reads the sweep folder: it goes with neither "
                         "--print_commands, --aggregate_only, --tune_only nor --tuning_grid.")
      print(status.report(sweep, fv.workdir, tuning_from=fv.tuning_from))
      return None
    if fv.tune_only and sweep.tuning is None:
      raise run.nothing_to_tune(sweep)
    grid = [spec.parse_overrides([f"value={v}"])["value"] for v in fv.tuning_grid or ()]
    tuning.check_grid(fv.workdir, grid, fv.tune_only)
    if fv.tuning_from:  # Checked and written before anything trains.
      if fv.tune_only or grid:
        raise ValueError(run.BORROW_OR_TUNE)
      tuning.borrow(sweep, fv.workdir, fv.tuning_from)
    settings = dict(num_shift_images=fv.shift_images, max_shift=fv.max_shift,
                    bn_images=fv.bn_images, canvas_topk=fv.canvas_topk)
    if fv.ensemble_sizes is not None:
      settings["ensemble_sizes"] = tuple(int(s) for s in fv.ensemble_sizes)
    if fv.workers < 1:
      raise ValueError(f"--workers must be at least 1, got {fv.workers}.")
  except (OSError, KeyError, ValueError) as e:
    raise cli.Error(e.args[0] if isinstance(e, KeyError) else e) from e
  if fv.print_commands:
    print("\n".join(run.train_commands(sweep, fv.workdir)))
  elif fv.aggregate_only:
    aggregate.aggregate(sweep, fv.workdir, **settings)
  else:
    try:
      run.run_sweep(sweep, fv.workdir, workers=fv.workers, tune_only=fv.tune_only,
                    tuning_grid=grid, tuning_from=fv.tuning_from, **settings)
    except run.Stopped as e:
      print(e)
      return 128 + signal.Signals[e.signal_name].value
  return None


COMMAND = cli.Command("sweep", __doc__, define_flags, _main)


def main(argv=None):
  cli.run(COMMAND, argv)


if __name__ == "__main__":
  main()
