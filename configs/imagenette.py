r"""Imagenette with fastbook's progressive resizing: ResNet-50, 4 epochs at 128 px, 5 at 224.

  progressive train --config=configs/imagenette.py --workdir=/tmp/progressive/imagenette

Prepare the dataset once first (needs TensorFlow: `pip install -e ".[prepare]"`;
training reads it without TensorFlow):

  tfds build imagenette/320px-v2 --data_dir=~/tensorflow_datasets --file_format=array_record

and pass `--config.data.data_dir=...` if it is not TFDS's usual directory. The tiny
variant the tests use (under mock data):

  progressive train --config=configs/imagenette.py:smoke --workdir=/tmp/imagenette_smoke

The schedule is fastbook's (chapter 7, "Progressive Resizing"): an xresnet50 from
scratch, 4 epochs at 128 px with batch 128, then 5 at 224 px with batch 64, Adam and a
fresh one-cycle of LR 3e-3 in each stage. Here the model is torchvision's ResNet-50
(v1.5) with the last norm of every block starting at zero, as xresnet's does; xresnet's
deep stem and pooled shortcuts are not reproduced. Augmentation follows fastai's
Imagenette training script: random-resized-crop (area 0.35..1) and flip to 224 px on the
host, then the zoom to the stage size on the device; evaluation resizes the centred 87.5%
of the shorter side to 224 px (fastai's `val_xtra=0.14`: resize to 256, crop 224).
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config variant {arg!r}; use 'smoke' or nothing.")
  config = default.get_config()

  config.data.name = "imagenette/320px-v2"  # Shorter side 320 px, fastai's v2 split.
  config.data.builder_config = "default"  # The config is in the name.
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.image_size = 224  # The largest stage; smaller stages zoom it down.
  config.data.augment = "rrc_flip"
  config.data.rrc_min_scale = 0.35
  config.data.eval_crop = 0.875
  config.data.num_workers = 8  # JPEG decoding is ~3 ms per image: feed a GPU in parallel.

  config.model.name = "resnet50"
  config.model.width = 1.0
  config.model.small_stem = False
  config.model.zero_init_residual = True

  # fastai's Adam defaults: betas (0.9, 0.99) with momentum cycled over opt.moms,
  # eps 1e-5, decoupled weight decay 0.01 on everything but norms and biases.
  config.opt.name = "adamw"
  config.opt.lr_max = 3e-3
  config.opt.weight_decay = 0.01
  config.opt.b2 = 0.99
  config.opt.eps = 1e-5
  config.opt.cycle = "stage"

  config.stages = (
      dict(size=128, epochs=4, batch_size=128),
      dict(size=224, epochs=5, batch_size=64),
  )
  config.batch_size = 128
  config.eval_sizes = (128, 160, 192, 224)
  config.eval_batch_size = 256
  config.log_every_steps = 20
  config.activation_stats_every = 0
  config.checkpoint_every_steps = 200

  if smoke:
    config.eval_bn_images = 0
    config.data.image_size = 32
    config.data.num_workers = 0
    config.model.name = "simple_cnn"
    config.model.channels = (8, 16, 32)
    config.model.zero_init_residual = False
    config.stages = (dict(size=16, steps=4, batch_size=16), dict(size=32, steps=4, batch_size=8))
    config.batch_size = 16
    config.eval_sizes = (16, 32)
    config.eval_batch_size = 32
    config.log_every_steps = 4
    config.checkpoint_every_steps = 0
  return config
