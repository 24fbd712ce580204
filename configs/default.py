r"""Default experiment: progressive resizing of a simple CNN on `scale_shapes`.

  python -m progressive.main --config=configs/default.py --workdir=/tmp/progressive/default

Three stages, 32 -> 48 -> 64 px, on the built-in dataset (stored at 64 px), one one-cycle
SGD schedule over the whole run; evaluated at every size after every stage. A few
minutes on a laptop CPU. The tiny variant the tests use (under a minute on a CPU):

  python -m progressive.main --config=configs/default.py:smoke --workdir=/tmp/progressive/smoke

Any field can be overridden on the command line, e.g. `--config.opt.lr_max=0.2`.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Initialisation and data order.

  config.data = ml_collections.ConfigDict()
  # "scale_shapes" (built in, generated on first use) or a TFDS image classification
  # dataset prepared in array_record format, e.g. "cifar10", "imagenette/320px-v2".
  config.data.name = "scale_shapes"
  # scale_shapes: "default" (64 px) or "small" (32 px). TFDS: "default" (the dataset's
  # default) or one of its configs, the same as name="imagenette/320px-v2".
  config.data.builder_config = "default"
  config.data.data_dir = config_dict.placeholder(str)  # None: TFDS's usual directory.
  config.data.train_split = "train"
  config.data.eval_split = "test"  # Evaluated after every stage (Imagenette: "validation").
  # Side of the square uint8 images the host hands to the device, which zooms them to
  # each stage's size. None: the stored size (scale_shapes must keep it; cifar10: 32).
  config.data.image_size = config_dict.placeholder(int)
  # Training augmentation on the host: "none", "flip" (horizontal, p=1/2) or "rrc_flip"
  # (random-resized-crop to image_size, then flip). Evaluation never augments.
  config.data.augment = "none"
  config.data.rrc_min_scale = 0.35  # rrc_flip: smallest crop area fraction (fastai's min_scale).
  # Evaluation (and augment="none"): the centred square of this fraction of the shorter
  # side, resized to image_size. 1.0: the whole (square) image; 0.875: ImageNet style.
  config.data.eval_crop = 1.0
  # Per-channel normalisation in [0, 1] units. None: the dataset's own
  # (progressive.data.pipeline.NORMALIZATION; ImageNet's for datasets not listed there).
  config.data.mean = config_dict.placeholder(tuple)
  config.data.std = config_dict.placeholder(tuple)
  config.data.num_workers = 0  # Grain worker processes decoding examples (0: threads here).

  config.model = ml_collections.ConfigDict()
  # simple_cnn, vgg11, vgg16, vgg (layers from vgg_layers), resnet18, resnet34, resnet50.
  config.model.name = "simple_cnn"  # A model in progressive.models.MODELS.
  config.model.channels = (32, 64, 128, 256)  # simple_cnn: one stride-2 conv per entry.
  config.model.first_kernel = 5  # simple_cnn: fastai used 5 for the first conv, then 3.
  config.model.kernel = 3  # simple_cnn: kernel of the other convs.
  config.model.width = 1.0  # vgg, resnet: channel multiplier (0.125 for quick CPU runs).
  config.model.vgg_layers = ()  # vgg: e.g. (64, "M", 128, "M"); ints are 3x3 convs, "M" pools.
  config.model.batch_norm = True  # A norm after every conv (which then has no bias).
  config.model.head = "gap"  # "gap" runs at every size; "flatten" ties it to one.
  config.model.head_hidden = ()  # Hidden dense widths in the head; VGG's own: (4096, 4096).
  config.model.dtype = "float32"  # Compute dtype; "bfloat16" on GPU/TPU. Params stay f32.
  # How every subsampling site subsamples: "stride" (as published), "max", "avg" or
  # "blur" (anti-aliased, Zhang 2019); see progressive/models/layers.py.
  config.model.downsample = "stride"
  config.model.blur_size = 3  # BlurPool filter size, 1 (plain subsampling) to 7.
  config.model.blur_padding = "reflect"  # BlurPool padding: "reflect" or "zero".
  config.model.small_stem = False  # resnet: one 3x3 stride-1 conv, no pool (32 px inputs).
  config.model.zero_init_residual = False  # resnet: last norm of each block starts at 0.
  config.model.dilation = 1  # Dilation of every conv but the first (resnet: block convs).

  config.opt = ml_collections.ConfigDict()
  config.opt.name = "sgd"  # "sgd" or "adamw".
  config.opt.lr_max = 0.4  # One-cycle peak LR.
  config.opt.weight_decay = 5e-4  # On kernels only.
  config.opt.nesterov = True  # sgd only.
  config.opt.b2 = 0.99  # adamw only.
  config.opt.eps = 1e-5  # adamw only.
  config.opt.cycle = "run"  # One cycle over the whole "run", or restarted every "stage".
  config.opt.div = 25.0  # Start LR = lr_max / div.
  config.opt.div_final = 1e5  # Final LR = lr_max / div_final.
  config.opt.pct_start = 0.25  # Fraction of the cycle spent warming up.
  config.opt.moms = (0.95, 0.85, 0.95)  # Momentum (Adam's beta1) start, middle, end.

  # Progressive resizing: each stage trains at `size` for `epochs` (or `steps`) with
  # `batch_size` (default: config.batch_size). Images are zoomed, not cropped.
  config.stages = (
      dict(size=32, epochs=3),
      dict(size=48, epochs=2),
      dict(size=64, epochs=2),
  )
  config.require_increasing_sizes = True  # Stage sizes must grow (progressive resizing).
  config.batch_size = 128  # Global batch, split evenly over the local devices.
  config.eval_sizes = (32, 48, 64)  # Also evaluated at each stage's own size.
  config.eval_batch_size = 500
  config.eval_every_steps = 0  # 0: evaluate only at the end of each stage.
  config.log_every_steps = 20  # Train metrics are fetched from the device this often.
  # Every N steps, fastai's ActivationStats of every layer with parameters on the
  # training batch, into activation_stats.jsonl (0: off).
  config.activation_stats_every = 20
  config.checkpoint_every_steps = 200  # 0: checkpoint only at the end of each stage.
  config.max_to_keep = 3  # Checkpoints kept on disk.
  config.progress_bar = True
  config.skip_nonfinite = False  # True: skip steps with a NaN/inf loss instead of stopping.
  # Compile every stage's step ahead of time in a background thread while training.
  config.compile_ahead = True
  # A directory for JAX's persistent compilation cache: reruns compile nothing.
  config.compilation_cache_dir = config_dict.placeholder(str)
  # Start from the parameters of another run (its workdir or a checkpoint folder).
  config.init_from = config_dict.placeholder(str)

  # Multi-process runs (several hosts, or processes on one): each process reads its own
  # shard of the data. `initialize=True` alone lets JAX read the cluster from the
  # environment (Cloud TPU, Slurm, ...); else give all three fields below.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False
  config.distributed.coordinator_address = config_dict.placeholder(str)  # "host:port"
  config.distributed.num_processes = config_dict.placeholder(int)
  config.distributed.process_id = config_dict.placeholder(int)

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
    config.opt.lr_max = 0.2
  elif arg:
    raise ValueError(f"Unknown config variant {arg!r}; use 'smoke' or nothing.")
  return config
