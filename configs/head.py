r"""Global-average-pool head against flatten head: what a change of input size does to each.

  progressive sweep --config=configs/head.py --workdir=/tmp/head
  progressive sweep --config=configs/head.py:smoke --workdir=/tmp/head_smoke

Both train the simple CNN at 32 px on `scale_shapes`. The `gap` head averages the last
feature map, so the same weights run at every size and are tested at all of them; the
`flatten` head's dense layer is tied to the feature-map size, so it runs at 32 px only
(any other size is an error, by construction).
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

EPOCHS = 4


def _smoke(arg: str | None) -> bool:
  return spec.parse_arg(arg, smoke=False).smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = _smoke(arg)
  config = default.get_config("smoke" if smoke else None)
  config.stages = (dict(size=32, steps=8),) if smoke else (dict(size=32, epochs=EPOCHS),)
  config.eval_sizes = (16, 24, 32) if smoke else (16, 24, 32, 48, 64)
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  return [
      {"name": "gap", "model.head": "gap"},
      {"name": "flatten", "model.head": "flatten", "eval_sizes": (32,)},
  ]
