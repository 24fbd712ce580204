r"""CIFAR-10 with progressive resizing: ResNet-18 (CIFAR stem, half width), 16 -> 24 -> 32 px.

  progressive train --config=configs/cifar10.py --workdir=/tmp/progressive/cifar10

Prepare the dataset once first (needs TensorFlow: `pip install -e ".[prepare]"`;
training reads it without TensorFlow):

  tfds build cifar10 --data_dir=~/tensorflow_datasets --file_format=array_record

and pass `--config.data.data_dir=...` if it is not TFDS's usual directory. The tiny
variant the tests use (under mock data):

  progressive train --config=configs/cifar10.py:smoke --workdir=/tmp/cifar10_smoke

Images are stored at 32 px; the host random-resized-crops and flips each training image
at 32 px (fastai's Imagenette recipe: area 0.35..1, ratio 3/4..4/3) and the device zooms
the batch to the stage size: 6 epochs at 16 px, 6 at 24, 8 at 32, one one-cycle SGD
schedule over all 20. The model is the usual CIFAR ResNet-18 (3x3 stride-1 stem, no
pool; with the simple CNN, CIFAR-10 stays far below what progressive resizing can show)
at half width (32..256 channels, 2.8M parameters), a quarter of the full model's
compute, so an epoch takes seconds on a GPU and minutes on a laptop CPU.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown config variant {arg!r}; use 'smoke' or nothing.")
  config = default.get_config()

  config.data.name = "cifar10"
  config.data.builder_config = "default"  # cifar10 has a single config.
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_size = 32  # As stored.
  config.data.augment = "rrc_flip"
  config.data.rrc_min_scale = 0.35
  config.data.eval_crop = 1.0  # The whole 32 px image.
  config.data.num_workers = 4  # PNG decoding and cropping, ~0.1 ms per image.

  config.model.name = "resnet18"
  config.model.width = 0.5
  config.model.small_stem = True
  config.model.zero_init_residual = True

  config.opt.name = "sgd"
  config.opt.lr_max = 0.4  # For batch 512, as in cifar10-fast (Page 2018).
  config.opt.weight_decay = 5e-4
  config.opt.cycle = "run"

  config.stages = (
      dict(size=16, epochs=6),
      dict(size=24, epochs=6),
      dict(size=32, epochs=8),
  )
  config.batch_size = 512
  config.eval_sizes = (16, 24, 32)
  config.eval_batch_size = 1000
  config.log_every_steps = 50
  config.activation_stats_every = 0
  config.checkpoint_every_steps = 500

  if smoke:
    config.eval_bn_images = 0
    config.data.num_workers = 0
    config.model.name = "simple_cnn"
    config.model.channels = (8, 16, 32)
    config.model.zero_init_residual = False
    config.stages = (dict(size=16, steps=4), dict(size=32, steps=4))
    config.batch_size = 16
    config.eval_sizes = (16, 32)
    config.eval_batch_size = 32
    config.log_every_steps = 4
    config.checkpoint_every_steps = 0
    config.opt.lr_max = 0.1
  return config
