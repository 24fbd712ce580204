"""Trains a model with progressive resizing: `progressive train --config=... --workdir=...`
(or `progressive train ...`).

Kept short on purpose: the logic lives in `progressive.training.train`, importable in a notebook.
"""

import os
import shlex
import signal
import sys

from absl import flags

from progressive import cli
from progressive.data import pipeline
from progressive.training import checkpoints, parallel, train


def define_flags(fv: flags.FlagValues) -> None:
  """The flags besides `--config` (which `cli` defines)."""
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.",
                      flag_values=fv, required=True)
  flags.DEFINE_bool("force", False, "Continue a workdir's run under a changed config, or start "
                    "over when no checkpoint in it can be restored.", flag_values=fv)


def _main(fv: flags.FlagValues) -> int | None:
  """Trains; 128 + signal number if stopped by a signal (after a checkpoint); 1 (with one
  line on stderr) if the loss diverged or a checkpoint could not be written."""
  try:
    summary = train.train_and_evaluate(fv.config, fv.workdir, force=fv.force)
  except train.NonFiniteLossError as e:
    sys.exit(f"Training stopped: {e}")
  except (checkpoints.CheckpointWriteError, pipeline.UnreadableExampleError) as e:
    cli.fail(e)  # A full disk or a file broken mid-run: not a usage error (2).
    return 1
  if summary.interrupted:
    return 128 + signal.Signals[summary.interrupted].value
  parallel.log(f"Analyse it: progressive analyze --workdir={shlex.quote(os.path.abspath(fv.workdir))}")
  return None


COMMAND = cli.Command(
    "train", __doc__, define_flags, _main, config="Config file, e.g. configs/default.py[:smoke]."
)
