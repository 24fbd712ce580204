r"""Claims 2 and 5: strided vs max-pooled vs blurred subsampling, for three model families.

  python -m progressive.sweep --config=configs/antialias.py --workdir=/tmp/antialias
  python -m progressive.sweep --config=configs/antialias.py:simple_cnn --workdir=/tmp/antialias_cnn
  python -m progressive.sweep --config=configs/antialias.py:smoke --workdir=/tmp/antialias_smoke

Every point trains one model at 64 px on `scale_shapes` (one stage; the argument picks
the model families, default all three) with `downsample` in stride / max / blur (filter
3 and 5), then reports accuracy at every size, jaggedness along 1-pixel shifts and the
consistency between two random shifts (Azulay & Weiss; Zhang): does blurring before
subsampling make the network more shift invariant, and at what cost? VGG subsamples only
by max pools, so it has no separate `max` point (its `stride` is the published max pool).
"""

import ml_collections

from configs import default

MODELS = {
    "simple_cnn": {"model.name": "simple_cnn"},
    "vgg11": {"model.name": "vgg11", "model.width": 0.25},
    "resnet18": {"model.name": "resnet18", "model.width": 0.25, "model.small_stem": True},
}
MODES = (
    {"model.downsample": "stride"},
    {"model.downsample": "max"},
    {"model.downsample": "blur", "model.blur_size": 3},
    {"model.downsample": "blur", "model.blur_size": 5},
)
EPOCHS = 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  config = default.get_config("smoke" if smoke else None)
  config.stages = (dict(size=32, steps=8),) if smoke else (dict(size=64, epochs=EPOCHS),)
  config.eval_sizes = (24, 32) if smoke else (32, 48, 64)
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  if arg == "smoke":
    families, modes = ["simple_cnn"], (MODES[0], MODES[2])
  else:
    families, modes = [arg] if arg in MODELS else list(MODELS), MODES
  points = []
  for family in families:
    for mode in modes:
      if family.startswith("vgg") and mode["model.downsample"] == "max":
        continue  # VGG subsamples only by max pools: "max" is its "stride", the same network.
      name = f"{family}_{mode['model.downsample']}{mode.get('model.blur_size', '')}"
      points.append({"name": name, **MODELS[family], **mode})
  return points
