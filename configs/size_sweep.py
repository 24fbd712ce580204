r"""Claim 1: train at one fixed size, test at every size (the train x test size matrix).

  progressive sweep --config=configs/size_sweep.py --workdir=/tmp/size_sweep
  progressive sweep --config=configs/size_sweep.py:smoke --workdir=/tmp/size_sweep_smoke

One point per training size; each trains the default simple CNN on `scale_shapes` at
that size only (same number of epochs for every size) and is evaluated at every size in
`eval_sizes`, overall and per class family: shapes (outline cues, scale invariant)
against textures (fixed-period cues, which alias or vanish when the size changes).
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

TRAIN_SIZES = (32, 48, 64)
EPOCHS = 5


def _smoke(arg: str | None) -> bool:
  return spec.parse_arg(arg, smoke=False).smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = _smoke(arg)
  config = default.get_config("smoke" if smoke else None)
  size = TRAIN_SIZES[-1] if not smoke else 32
  config.stages = (dict(size=size, steps=12) if smoke else dict(size=size, epochs=EPOCHS),)
  config.eval_sizes = (16, 24, 32) if smoke else (16, 24, 32, 40, 48, 56, 64)
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  smoke = _smoke(arg)
  sizes = (16, 32) if smoke else TRAIN_SIZES
  steps_or_epochs = {"steps": 12} if smoke else {"epochs": EPOCHS}
  return [
      {"name": f"train{s}", "stages": (dict(size=s, **steps_or_epochs),)} for s in sizes
  ]
