r"""Default experiment: progressive resizing of a simple CNN on `scale_shapes`.

  progressive train --config=configs/default.py --workdir=/tmp/progressive/default

Three stages, 32 -> 48 -> 64 px, on the built-in dataset (stored at 64 px), one one-cycle
SGD schedule over the whole run; evaluated at every size after every stage. A few
minutes on a laptop CPU. The tiny variant the tests use (under a minute on a CPU):

  progressive train --config=configs/default.py:smoke --workdir=/tmp/progressive/smoke

Any field can be overridden on the command line, e.g. `--config.opt.lr_max=0.2`; the
fields, their defaults and what they mean are in `progressive.config.FIELDS`.
"""

import ml_collections

from progressive import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = config_lib.default_config()
  if arg == "smoke":
    config.data.builder_config = "small"
    config.model.channels = (8, 16, 32)
    config.stages = (
        dict(size=16, steps=8),
        dict(size=24, steps=8),
        dict(size=32, steps=8),
    )
    config.batch_size = 64
    config.eval_sizes = (16, 32)
    config.eval_batch_size = 128
    config.log_every_steps = 4
    config.activation_stats_every = 4
    config.checkpoint_every_steps = 0
    config.eval_bn_images = 0  # Keeps the smoke run quick; tests switch it on.
    config.opt.lr_max = 0.2
  elif arg:
    raise ValueError(f"Unknown config variant {arg!r}; use 'smoke' or nothing.")
  return config
