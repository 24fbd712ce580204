r"""Claim 7: the train/test resolution discrepancy (Touvron et al. 2019, FixRes).

  progressive sweep --config=configs/fixres.py --workdir=/tmp/fixres
  progressive sweep --config=configs/fixres.py:smoke --workdir=/tmp/fixres_smoke

The simple CNN on `scale_shapes` (stored at 64 px), trained at one size, 32 or 48 px,
either with random-resized-crop and flip (`rrc`: a crop of 35-100% of the image's area
zoomed to the training size, so objects look larger than in the whole image) or with
flip only (`flip`: the whole image, as at test time). Each is tested on whole images at
every size from 24 to 80 px (above 64 px the stored images are upsampled). FixRes
predicts that the `rrc` points do best at a test size above their training size (the
`best_size` column), by about the zoom of an average crop (1/sqrt(0.675) ~ 1.2 here), and
the `flip` points at their training size.
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

TRAIN_SIZES = (32, 48)
EPOCHS = 5
SEEDS = (0, 1)


def _smoke(arg: str | None) -> bool:
  return spec.parse_arg(arg, smoke=False).smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = _smoke(arg)
  config = default.get_config("smoke" if smoke else None)
  config.stages = (dict(size=24, steps=12),) if smoke else (dict(size=32, epochs=EPOCHS),)
  config.eval_sizes = (16, 24, 32, 40) if smoke else (24, 32, 40, 48, 56, 64, 72, 80)
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  sizes, length, seeds = ((24,), {"steps": 12}, (0,)) if _smoke(arg) else (
      TRAIN_SIZES, {"epochs": EPOCHS}, SEEDS)
  points = []
  for size in sizes:
    for augment in ("rrc_flip", "flip"):
      points.append({
          "name": f"{augment.split('_')[0]}{size}",
          "stages": (dict(size=size, **length),),
          "data.augment": augment,
      })
  return spec.with_seeds(points, seeds)
