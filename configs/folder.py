r"""Progressive resizing on your own images: a folder per class, no preparation step.

  progressive train --config=configs/folder.py --config.data.data_dir=ROOT \
      --workdir=/tmp/progressive/folder

ROOT holds `ROOT/train/<class>/<image>` and `ROOT/val/<class>/<image>` (torchvision's
`ImageFolder` layout; Imagenette's download unpacks to exactly this), any format PIL
reads. Other split folder names: `--config.data.train_split=... --config.data.eval_split=...`;
a validation slice of the training folder for tuning: `--config.data.eval_split='train[90%:]'`.
The first run reads every file's header once and caches the index (see
`progressive.data.folder`); a file that is not an image stops it with its name, or is left
out and counted with `--config.data.skip_unreadable=True`.

ResNet-18 (torchvision's, v1.5) from scratch, 128 -> 160 -> 192 px, each training batch
random-resized-cropped and decoded on the host straight at the stage's size (JPEGs at
reduced DCT scale), evaluation at 192 px from the centred 87.5% of the shorter side.
Without a GPU, start with the `cpu` variant: ResNet-18 at a quarter width, 32 -> 48 -> 64 px,
350 steps of 32 images (a few minutes on a laptop's CPU):

  progressive train --config=configs/folder.py:cpu --config.data.data_dir=ROOT \
      --workdir=/tmp/progressive/folder_cpu
  progressive analyze --workdir=/tmp/progressive/folder_cpu

The tiny variant the tests use:

  progressive train --config=configs/folder.py:smoke --config.data.data_dir=ROOT \
      --workdir=/tmp/progressive/folder_smoke
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "cpu", "smoke"):
    raise ValueError(f"Unknown config variant {arg!r}; use 'cpu', 'smoke' or nothing.")
  config = default.get_config()
  config.data.name = "folder"
  config.data.builder_config = "default"
  config.data.data_dir = None  # Set on the command line: the dataset's root.
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.image_size = 192
  config.data.augment = "rrc_flip"
  config.data.rrc_min_scale = 0.35
  config.data.eval_crop = 0.875
  config.data.num_workers = 8

  config.model.name = "resnet18"
  config.model.width = 1.0
  config.model.zero_init_residual = True

  config.opt.lr_max = 0.4
  config.stages = (
      dict(size=128, epochs=6),
      dict(size=160, epochs=4),
      dict(size=192, epochs=3),
  )
  config.batch_size = 128
  config.eval_sizes = (128, 160, 192, 224)
  config.eval_batch_size = 250
  config.activation_stats_every = 0
  config.checkpoint_every_steps = 500

  if arg == "cpu":  # A first run on a laptop CPU: minutes, not hours.
    config.data.image_size = 64
    config.data.num_workers = 0  # Decoded on the host's threads.
    config.model.width = 0.25
    config.opt.lr_max = 0.2
    config.stages = (
        dict(size=32, steps=150),
        dict(size=48, steps=100),
        dict(size=64, steps=100),
    )
    config.batch_size = 32
    config.eval_sizes = (32, 48, 64, 80)
    config.eval_batch_size = 100
    config.eval_bn_images = 256
    config.checkpoint_every_steps = 100

  if arg == "smoke":
    config.data.image_size = 32
    config.data.num_workers = 0
    config.model.name = "simple_cnn"
    config.model.channels = (8, 16, 32)
    config.model.zero_init_residual = False
    config.stages = (dict(size=16, steps=4), dict(size=32, steps=4))
    config.batch_size = 16
    config.eval_sizes = (16, 32)
    config.eval_batch_size = 32
    config.eval_bn_images = 0
    config.log_every_steps = 2
    config.checkpoint_every_steps = 0
    config.progress_bar = False
  return config
