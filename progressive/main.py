"""Trains a model with progressive resizing: `python -m progressive.main --config=... --workdir=...`.

Kept short on purpose: the logic lives in `progressive.train`, importable in a notebook.
"""

import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from progressive import compilation, parallel, train
from progressive.workdir import WorkdirError
from progressive.config_validation import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/default.py[:smoke].")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
flags.DEFINE_bool("force", False, "Continue a workdir's run under a changed config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
  parallel.initialize_distributed(FLAGS.config.distributed)
  try:
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, force=FLAGS.force)
  except (ConfigError, WorkdirError, compilation.MemoryLimitError) as e:
    sys.exit(f"Error: {e}")
  except train.NonFiniteLossError as e:
    sys.exit(f"Training stopped: {e}")
  if summary.interrupted:
    sys.exit(128 + signal.Signals[summary.interrupted].value)


if __name__ == "__main__":
  app.run(main)
