r"""Default experiment: progressive resizing of a simple CNN on `scale_shapes`.

  progressive train --config=configs/default.py --workdir=/tmp/progressive/default

Three stages, 32 -> 48 -> 64 px, on the built-in dataset (stored at 64 px), one one-cycle
SGD schedule over the whole run; evaluated at every size after every stage. A few
minutes on a laptop CPU. The tiny variant the tests use (under a minute on a CPU):

  progressive train --config=configs/default.py:smoke --workdir=/tmp/progressive/smoke

Every field of a config is below, at its default, with what it means; any can be
overridden on the command line, e.g. `--config.opt.lr_max=0.2`. `progressive.config` checks
them and says which may change when a run resumes; its defaults equal these (a test keeps
the two in step), and fill in fields a stored config lacks.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Every field at its default; `arg="smoke"`: the tiny run the tests use."""
  config = ml_collections.ConfigDict()
  # Initialisation and data order.
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  # "scale_shapes", "photos" (built in); "folder"; a TFDS name prepared as array_record: "cifar10".
  data.name = "scale_shapes"
  # "default"; built in: "small", "sweep32" (32 px), "colour" (photos), controls; TFDS: its configs.
  data.builder_config = "default"
  # None: TFDS's usual directory; name="folder": ROOT of ROOT/<split>/<class>/<image>.
  data.data_dir = config_dict.placeholder(str)
  # The split trained on; TFDS slices work, e.g. "train[:90%]" to keep a validation slice.
  data.train_split = "train"
  # Evaluated after every stage (Imagenette: "validation"); tune on "train[90%:]", never on test.
  data.eval_split = "test"
  # Side of the square images the host gives the device (zoomed there); None: the stored size.
  data.image_size = config_dict.placeholder(int)
  # Training only, on the host: "none", "flip", "rrc_flip" (random-resized-crop, then flip) or
  # "shift_flip" (a random shift of up to data.max_shift px per axis, edges repeated, then flip).
  data.augment = "none"
  # rrc_flip: smallest crop area fraction (fastai's min_scale).
  data.rrc_min_scale = 0.35
  # shift_flip only: the largest shift, px of the host's images (e.g. the model's total stride).
  data.max_shift = config_dict.placeholder(int)
  # Mixup on the device: lam ~ Beta(alpha, alpha) per image, as fastai's MixUp (0: off; fastai 0.4).
  data.mixup_alpha = 0.0
  # CutMix on the device, as fastai's CutMix (0: off; fastai 1.0); both on: one per shard, p=1/2.
  data.cutmix_alpha = 0.0
  # Evaluation: the centred square of this fraction of the shorter side (ImageNet style: 0.875).
  data.eval_crop = 1.0
  # Per-channel, in [0, 1] units. None: the dataset's own (pipeline.NORMALIZATION, or ImageNet's).
  data.mean = config_dict.placeholder(tuple)
  # Per-channel, as data.mean.
  data.std = config_dict.placeholder(tuple)
  # Grain worker processes decoding examples (0: threads in this process).
  data.num_workers = 0
  # Folders and TFDS: leave out (and count) files the index cannot decode, and use a readable
  # neighbour for one that fails later, instead of stopping (may change on resume with --force).
  data.skip_unreadable = False
  # name="none" (a network imported without data): its classes, e.g. ImageNet's synset ids.
  data.class_names = config_dict.placeholder(tuple)

  config.model = model = ml_collections.ConfigDict()
  # progressive.models.MODELS: simple_cnn, vgg11, vgg16, vgg (vgg_layers), resnet18, 34, 50,
  # xresnet18, 34, 50 (fastai's).
  model.name = "simple_cnn"
  # simple_cnn: one stride-2 conv per entry.
  model.channels = (32, 64, 128, 256)
  # simple_cnn: fastai used 5 for the first conv, then 3.
  model.first_kernel = 5
  # simple_cnn: kernel of the other convs.
  model.kernel = 3
  # vgg, resnet: channel multiplier (0.125 for quick CPU runs); xresnet: fastai's widen.
  model.width = 1.0
  # vgg: e.g. (64, "M", 128, "M"); ints are 3x3 convs, "M" pools.
  model.vgg_layers = ()
  # A norm after every conv (which then has no bias).
  model.batch_norm = True
  # "gap" and "adaptive" (torchvision's VGG: a head_grid^2 average pool) run at every size;
  # "flatten" ties the weights to one.
  model.head = "gap"
  # Hidden dense widths in the head; VGG's own: (4096, 4096).
  model.head_hidden = ()
  # head="adaptive": the side of the average-pooled map it flattens (VGG's 7).
  model.head_grid = 7
  # Compute dtype; "bfloat16" on GPU/TPU. Params stay float32.
  model.dtype = "float32"
  # Every subsampling site: "stride" (as published), "max", "avg" or "blur" (Zhang 2019).
  model.downsample = "stride"
  # BlurPool filter size, 1 (plain subsampling) to 7.
  model.blur_size = 3
  # BlurPool padding: "reflect" or "zero".
  model.blur_padding = "reflect"
  # downsample="blur" at a published max pool: stride 1 with its window, "same", or "zhang" 2x2.
  model.max_blur_pool = "same"
  # resnet: downsample applies to the stem conv too; False keeps it strided (antialiased-cnns).
  model.subsample_stem = True
  # resnet: one 3x3 stride-1 conv, no pool (32 px inputs).
  model.small_stem = False
  # resnet: the last norm of each block starts at 0 (xresnet: always).
  model.zero_init_residual = False
  # Dilation of every conv but the first (resnet: the block convs).
  model.dilation = 1

  config.opt = opt = ml_collections.ConfigDict()
  # "sgd" or "adamw".
  opt.name = "sgd"
  # One-cycle peak learning rate.
  opt.lr_max = 0.4
  # On kernels only.
  opt.weight_decay = 5e-4
  # Label smoothing eps: fastai's LabelSmoothingCrossEntropy (0: off; fastai 0.1).
  opt.label_smoothing = 0.0
  # sgd only.
  opt.nesterov = True
  # adamw only.
  opt.b2 = 0.99
  # adamw only.
  opt.eps = 1e-5
  # One cycle over the whole "run", or restarted every "stage".
  opt.cycle = "run"
  # Start LR = lr_max / div.
  opt.div = 25.0
  # Final LR = lr_max / div_final.
  opt.div_final = 1e5
  # Fraction of the cycle spent warming up.
  opt.pct_start = 0.25
  # Momentum (Adam's beta1) at the start, middle and end.
  opt.moms = (0.95, 0.85, 0.95)
  # The body's peak LR is lr_max / lr_body_div, the head's lr_max (fastai's fine_tune: 100).
  opt.lr_body_div = 1.0
  # A frozen stage still trains the body's batch-norm scale and offset (fastai's train_bn).
  opt.train_bn = True

  # Each trains at `size` (zoomed) for `epochs` or `steps`, optionally with its own `batch_size`
  # (and frozen, reset_opt, lr_factor, div, pct_start, lr_body_div: progressive.schedules).
  config.stages = (dict(size=32, epochs=3), dict(size=48, epochs=2), dict(size=64, epochs=2))
  # Stage sizes must grow (progressive resizing).
  config.require_increasing_sizes = True
  # Global batch, split evenly over the local devices.
  config.batch_size = 128
  # Evaluated at these sizes, and at each stage's own.
  config.eval_sizes = (32, 48, 64)
  # Global evaluation batch.
  config.eval_batch_size = 500
  # Evaluation's test-time augmentation: "none", or "flip" (mean softmax of image and mirror).
  config.eval_tta = "none"
  # 0: evaluate only at the end of each stage.
  config.eval_every_steps = 0
  # accuracy_bn at other sizes: batch-norm statistics recomputed from this many images (0: off).
  config.eval_bn_images = 1024
  # Train metrics are fetched from the device this often.
  config.log_every_steps = 20
  # Every N steps, fastai's ActivationStats of the training batch, in activation_stats.jsonl.
  config.activation_stats_every = 20
  # 0: checkpoint only at the end of each stage.
  config.checkpoint_every_steps = 200
  # Checkpoints kept on disk.
  config.max_to_keep = 3
  # A progress bar on the terminal.
  config.progress_bar = True
  # True: skip steps whose loss or update is NaN/inf (over half of the last 50 stops the run).
  config.skip_nonfinite = False
  # Compile every stage's step ahead of time in a background thread while training.
  config.compile_ahead = True
  # A directory for JAX's persistent compilation cache: reruns compile nothing.
  config.compilation_cache_dir = config_dict.placeholder(str)
  # Start from the parameters of another run (its workdir or a checkpoint folder).
  config.init_from = config_dict.placeholder(str)

  # Set by `progressive import` (progressive.models.pretrained); None in a trained run.
  config.pretrained = pretrained = ml_collections.ConfigDict()
  # The architecture imported, e.g. "resnet50" (progressive.models.pretrained.ARCHS).
  pretrained.arch = config_dict.placeholder(str)
  # Where the weights came from: "torchvision", "timm" or "antialiased-cnns".
  pretrained.library = config_dict.placeholder(str)
  # The weights file imported, as given.
  pretrained.weights = config_dict.placeholder(str)
  # Its SHA-256.
  pretrained.sha256 = config_dict.placeholder(str)
  # The source's standard view: shorter side resized to resize_px, the centre crop_px cropped.
  pretrained.resize_px = config_dict.placeholder(int)
  # The side of that view, and the size the network is evaluated at.
  pretrained.crop_px = config_dict.placeholder(int)
  # Resampling of that resize: "bilinear" or "bicubic".
  pretrained.interpolation = config_dict.placeholder(str)

  # Multi-process runs (several hosts, or processes on one); each process reads its own shard.
  config.distributed = distributed = ml_collections.ConfigDict()
  # jax.distributed.initialize(): alone, from the environment (TPU, Slurm); or the fields below.
  distributed.initialize = False
  # "host:port" of process 0.
  distributed.coordinator_address = config_dict.placeholder(str)
  # How many processes.
  distributed.num_processes = config_dict.placeholder(int)
  # This process, 0 to num_processes - 1.
  distributed.process_id = config_dict.placeholder(int)

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
    config.activation_stats_every = 0  # A program per stage to trace; tests switch it on.
    config.checkpoint_every_steps = 0
    config.eval_bn_images = 0  # Keeps the smoke run quick; tests switch it on.
    config.opt.lr_max = 0.2
  elif arg:
    raise ValueError(f"Unknown config variant {arg!r}; use 'smoke' or nothing.")
  return config
