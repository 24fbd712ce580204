"""Checking a config before anything is prepared or compiled.

Every error names the field, the value it has and what it may be, so a typo in a
command-line override fails in a second instead of after a dataset build and a compile.
"""

import copy
import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import ml_collections
from etils import epath
from ml_collections import config_dict

from progressive import errors, models, schedules
from progressive.data import augment, pipeline
from progressive.optim import OPTIMIZERS

STAGE_KEYS = ("size", "epochs", "steps", "batch_size", "frozen", "reset_opt", "lr_factor", "div",
              "pct_start", "lr_body_div")
CYCLES = ("run", "stage")
EVAL_TTA = ("none", "flip")  # Test-time augmentation of every evaluation (steps.eval_step).

ON_RESUME = ("control", "resumable", "fixed")
MAX_INT = 2**63 - 1  # The largest integer a field may hold (int64).
MAX_STEPS = 2**31 - 1  # The most steps a run may take: the train state counts them in int32.


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: its dotted name and default, and when a run may change it.

  `on_resume`: "control" may differ between invocations on one workdir without --force
  (it steers the run's bookkeeping, not what it computes); "resumable" may change when a
  checkpoint is resumed with --force (it changes what is still to come, not the shape or
  meaning of the saved state); "fixed" may not change. `placeholder`: the type a field
  whose default is None takes (`config_dict.placeholder`).
  """

  name: str
  default: Any
  on_resume: str = "fixed"
  placeholder: type | None = None


# The config schema: every field, in the order `default_config()` lists them. Their meanings
# are in configs/default.py, which writes these defaults out (tests/test_config.py compares).
FIELDS = (
    Field("seed", 0),
    # config.data
    Field("data.name", "scale_shapes"),
    Field("data.builder_config", "default"),
    Field("data.data_dir", None, "control", str),
    Field("data.train_split", "train"),
    Field("data.eval_split", "test"),
    Field("data.image_size", None, placeholder=int),
    Field("data.augment", "none"),
    Field("data.rrc_min_scale", 0.35),
    Field("data.max_shift", None, placeholder=int),
    Field("data.mixup_alpha", 0.0),
    Field("data.cutmix_alpha", 0.0),
    Field("data.eval_crop", 1.0),
    Field("data.mean", None, placeholder=tuple),
    Field("data.std", None, placeholder=tuple),
    Field("data.num_workers", 0),
    Field("data.skip_unreadable", False, "resumable"),
    Field("data.class_names", None, placeholder=tuple),
    # config.model
    Field("model.name", "simple_cnn"),
    Field("model.channels", (32, 64, 128, 256)),
    Field("model.first_kernel", 5),
    Field("model.kernel", 3),
    Field("model.width", 1.0),
    Field("model.vgg_layers", ()),
    Field("model.batch_norm", True),
    Field("model.head", "gap"),
    Field("model.head_hidden", ()),
    Field("model.head_grid", 7),
    Field("model.dtype", "float32"),
    Field("model.downsample", "stride"),
    Field("model.blur_size", 3),
    Field("model.blur_padding", "reflect"),
    Field("model.max_blur_pool", "same"),
    Field("model.subsample_stem", True),
    Field("model.small_stem", False),
    Field("model.zero_init_residual", False),
    Field("model.dilation", 1),
    # config.opt
    Field("opt.name", "sgd"),
    Field("opt.lr_max", 0.4),
    Field("opt.weight_decay", 5e-4),
    Field("opt.label_smoothing", 0.0),
    Field("opt.nesterov", True),
    Field("opt.b2", 0.99),
    Field("opt.eps", 1e-5),
    Field("opt.cycle", "run"),
    Field("opt.div", 25.0),
    Field("opt.div_final", 1e5),
    Field("opt.pct_start", 0.25),
    Field("opt.moms", (0.95, 0.85, 0.95)),
    Field("opt.lr_body_div", 1.0),
    Field("opt.train_bn", True),
    # The run
    Field("stages", (dict(size=32, epochs=3), dict(size=48, epochs=2), dict(size=64, epochs=2)),
          "resumable"),
    Field("require_increasing_sizes", True),
    Field("batch_size", 128),
    Field("eval_sizes", (32, 48, 64), "resumable"),
    Field("eval_batch_size", 500, "resumable"),
    Field("eval_tta", "none", "resumable"),
    Field("eval_every_steps", 0, "control"),
    Field("eval_bn_images", 1024, "control"),
    Field("log_every_steps", 20, "control"),
    Field("activation_stats_every", 20, "control"),
    Field("checkpoint_every_steps", 200, "control"),
    Field("max_to_keep", 3, "control"),
    Field("progress_bar", True, "control"),
    Field("skip_nonfinite", False, "resumable"),
    Field("compile_ahead", True, "control"),
    Field("compilation_cache_dir", None, "control", str),
    Field("init_from", None, "resumable", str),
    # config.pretrained
    Field("pretrained.arch", None, placeholder=str),
    Field("pretrained.library", None, placeholder=str),
    Field("pretrained.weights", None, placeholder=str),
    Field("pretrained.sha256", None, placeholder=str),
    Field("pretrained.resize_px", None, placeholder=int),
    Field("pretrained.crop_px", None, placeholder=int),
    Field("pretrained.interpolation", None, placeholder=str),
    # config.distributed
    Field("distributed.initialize", False, "control"),
    Field("distributed.coordinator_address", None, "control", str),
    Field("distributed.num_processes", None, "control", int),
    Field("distributed.process_id", None, "control", int),
)
FIELDS_BY_NAME = {field.name: field for field in FIELDS}
assert len(FIELDS_BY_NAME) == len(FIELDS) and all(f.on_resume in ON_RESUME for f in FIELDS)

# Fields that may differ between invocations on one workdir without --force.
RUN_CONTROL_FIELDS = tuple(f.name for f in FIELDS if f.on_resume == "control")
# Fields a checkpoint can be resumed under when they change (with --force).
RESUMABLE_FIELDS = RUN_CONTROL_FIELDS + tuple(f.name for f in FIELDS if f.on_resume == "resumable")


def _json(value):
  """`value` as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(value))


def default_config() -> ml_collections.ConfigDict:
  """A config holding every field of `FIELDS` at its default."""
  config = ml_collections.ConfigDict()
  for field in FIELDS:
    *parents, leaf = field.name.split(".")
    node = config
    for parent in parents:
      if parent not in node:
        node[parent] = ml_collections.ConfigDict()
      node = node[parent]
    if field.default is None:
      node[leaf] = config_dict.placeholder(field.placeholder)
    else:
      node[leaf] = copy.deepcopy(field.default)
  return config


def with_defaults(config_json: Mapping[str, Any]) -> dict:
  """A copy of a JSON config (a stored `config.json`, perhaps written before some fields
  existed) with every field it lacks at its default; present values are kept."""
  config = copy.deepcopy(dict(config_json))
  for field in FIELDS:
    *parents, leaf = field.name.split(".")
    node = config
    for parent in parents:
      node = node.setdefault(parent, {})
    if leaf not in node:
      node[leaf] = _json(field.default)
  return config


def field_names(config) -> list[str]:
  """The dotted names of a config's fields (a `ConfigDict` or a JSON-like dict)."""
  names = []
  for key, value in config.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      names += [f"{key}.{name}" for name in field_names(value)]
    else:
      names.append(key)
  return names


class ConfigError(errors.Error, ValueError):
  """A config value that cannot work, with the field and the allowed values."""


def _positive_int(value, field: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{field} must be a positive integer, got {value!r}.")
  return value


def _numbers(value, name: str):
  """`(dotted name, number)` of every number in a config value: in its fields, in dicts
  (a stage) and in tuples (`opt.moms`, `stages`)."""
  if isinstance(value, (Mapping, ml_collections.ConfigDict)):
    for key, item in value.items():
      yield from _numbers(item, f"{name}.{key}")
  elif isinstance(value, (tuple, list)):
    for i, item in enumerate(value):
      yield from _numbers(item, f"{name}[{i}]")
  elif isinstance(value, numbers.Real) and not isinstance(value, bool):
    yield name, value


def _check_numbers(config) -> None:
  """Every number is finite (no NaN, no infinity: `1e999` reads as infinity) and an
  integer fits in 64 bits, so none overflows in a conversion later."""
  for name, value in _numbers(config, "config"):
    if isinstance(value, numbers.Integral):
      if abs(int(value)) <= MAX_INT:
        continue
      problem, fix = "does not fit in 64 bits", "give a smaller one"
    elif math.isfinite(value):
      continue
    elif math.isnan(value):
      problem, fix = "is not a number", "give a finite one"
    else:
      problem, fix = "is infinite (a float beyond 1.8e308 reads as inf)", "give a finite one"
    field = name.removeprefix("config.").split("[")[0]
    if field == "stages":
      example = "a stage is e.g. dict(size=32, epochs=2)"
    elif name == f"config.{field}":
      example = f"its default is {FIELDS_BY_NAME[field].default!r}"
    else:
      example = f"config.{field} defaults to {FIELDS_BY_NAME[field].default!r}"
    raise ConfigError(f"{name}={value!r} {problem}; {fix} ({example}).")


def _check_lengths(config, num_train: int) -> None:
  """The stages' steps add up to at most `MAX_STEPS` (a large `epochs` or `steps` would
  overflow the step count)."""
  total = 0
  for i, stage in enumerate(config.stages):
    key = "steps" if stage.get("steps") is not None else "epochs"
    batch_size = stage.get("batch_size") or config.batch_size
    total += stage[key] if key == "steps" else stage[key] * (num_train // batch_size)
    if total > MAX_STEPS:
      raise ConfigError(
          f"config.stages[{i}].{key}={stage[key]!r} makes the run longer than {MAX_STEPS} "
          f"steps, the most a run can count; give fewer {key}."
      )


def _check_stages(config, min_size: int, num_devices: int) -> None:
  stages = config.stages
  if not stages:
    raise ConfigError("config.stages must list at least one stage, e.g. [dict(size=32, epochs=1)].")
  previous = None
  for i, stage in enumerate(stages):
    field = f"config.stages[{i}]"
    if not isinstance(stage, Mapping):
      raise ConfigError(f"{field} must be a dict with keys {STAGE_KEYS}, got {stage!r}.")
    unknown = set(stage) - set(STAGE_KEYS)
    if unknown:
      raise ConfigError(f"{field} has unknown keys {sorted(unknown)}; allowed: {STAGE_KEYS}.")
    size = _positive_int(stage.get("size"), f"{field}.size")
    if size < min_size:
      raise ConfigError(
          f"{field}.size={size} is below {min_size}, the smallest input "
          f"config.model ({config.model.name} with its depth) can take."
      )
    has_epochs, has_steps = stage.get("epochs") is not None, stage.get("steps") is not None
    if has_epochs == has_steps:
      raise ConfigError(f"{field} must set exactly one of 'epochs' or 'steps', got {dict(stage)!r}.")
    if has_steps:
      _positive_int(stage["steps"], f"{field}.steps")
    elif not isinstance(stage["epochs"], (int, float)) or stage["epochs"] <= 0:
      raise ConfigError(f"{field}.epochs must be a positive number, got {stage['epochs']!r}.")
    batch_size = stage.get("batch_size")
    if batch_size is not None:
      _check_batch(batch_size, f"{field}.batch_size", num_devices)
    _check_stage_optimiser(stage, field, config.opt.cycle)
    # A new fit (reset_opt, e.g. fine_tune_stages) may keep the previous stage's size.
    kept = previous is not None and size == previous and stage.get("reset_opt")
    if config.require_increasing_sizes and previous is not None and size <= previous and not kept:
      raise ConfigError(
          f"{field}.size={size} does not grow from the previous stage ({previous}); "
          "stage sizes must increase (a stage with reset_opt=True may keep the size), or set "
          "config.require_increasing_sizes=False."
      )
    previous = size


def _positive_number(value, field: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ConfigError(f"{field} must be a positive number, got {value!r}.")


def _check_stage_optimiser(stage, field: str, cycle: str) -> None:
  """A stage's optimiser keys (progressive.schedules): frozen, reset_opt, lr_factor, div,
  pct_start, lr_body_div."""
  for key in ("frozen", "reset_opt"):
    if key in stage:
      _check_bool(stage[key], f"{field}.{key}")
  for key in ("lr_factor", "div", "lr_body_div"):
    if stage.get(key) is not None:
      _positive_number(stage[key], f"{field}.{key}")
  pct_start = stage.get("pct_start")
  if pct_start is not None and (isinstance(pct_start, bool) or not isinstance(pct_start, (int, float))
                                or not 0 < pct_start < 1):
    raise ConfigError(f"{field}.pct_start must be in (0, 1), got {pct_start!r}.")
  for key in ("div", "pct_start"):
    if stage.get(key) is not None and cycle != "stage":
      raise ConfigError(
          f"{field}.{key} shapes the stage's own one-cycle: it needs "
          f"config.opt.cycle='stage', not {cycle!r}.")


def _check_batch(value, field: str, num_devices: int) -> None:
  _positive_int(value, field)
  if value % num_devices:
    raise ConfigError(
        f"{field}={value} does not divide evenly over {num_devices} devices; use a "
        f"multiple of {num_devices}."
    )


def check_batch_size(value, field: str, num_devices: int, info) -> None:
  """A global batch size: positive, divisible over the devices, no larger than the
  training split of `info` (a `pipeline.DatasetInfo`)."""
  _check_batch(value, field, num_devices)
  if value > info.num_train:
    raise ConfigError(f"{field}={value} exceeds the {info.num_train} training examples of {info.name}.")


def _check_choice(value, field: str, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f"{field} must be one of {sorted(allowed)}, got {value!r}.")


def _check_bool(value, field: str) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f"{field} must be True or False, got {value!r}.")


def _check_model(model) -> None:
  """The fields of `config.model`."""
  get = model.__getitem__
  _check_choice(model.name, "config.model.name", models.MODELS)
  _check_choice(get("head"), "config.model.head", models.HEADS)
  _check_choice(get("dtype"), "config.model.dtype", models.DTYPES)
  _check_choice(get("downsample"), "config.model.downsample", models.DOWNSAMPLE_MODES)
  _check_choice(get("blur_padding"), "config.model.blur_padding", models.BLUR_PADDINGS)
  _check_choice(get("max_blur_pool"), "config.model.max_blur_pool", models.MAX_BLUR_POOLS)
  blur_size = get("blur_size")
  if isinstance(blur_size, bool) or blur_size not in models.BLUR_SIZES:
    raise ConfigError(f"config.model.blur_size must be an integer in 1..7, got {blur_size!r}.")
  for field in ("batch_norm", "small_stem", "zero_init_residual", "subsample_stem"):
    _check_bool(get(field), f"config.model.{field}")
  if get("zero_init_residual") and not get("batch_norm"):
    raise ConfigError(
        "config.model.zero_init_residual=True zeroes the last batch norm of each block; "
        "it needs config.model.batch_norm=True."
    )
  if model.name in models.XRESNET_PRESETS and get("small_stem"):
    raise ConfigError(
        f"config.model.small_stem only applies to resnet18/34/50; {model.name} has fastai's "
        "three-conv stem: leave small_stem False."
    )
  _positive_int(get("dilation"), "config.model.dilation")
  width = get("width")
  if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
    raise ConfigError(f"config.model.width must be a positive number, got {width!r}.")
  _positive_int(get("head_grid"), "config.model.head_grid")
  for i, hidden in enumerate(get("head_hidden")):
    _positive_int(hidden, f"config.model.head_hidden[{i}]")
  channels = get("channels")
  if model.name == "simple_cnn" and not channels:
    raise ConfigError("config.model.channels must list at least one width.")
  for i, channel in enumerate(channels):
    _positive_int(channel, f"config.model.channels[{i}]")
  for field in ("first_kernel", "kernel"):
    _positive_int(get(field), f"config.model.{field}")
  vgg_layers = get("vgg_layers")
  if model.name == "vgg":
    if not any(item != "M" for item in vgg_layers):
      raise ConfigError(
          "config.model.vgg_layers must list at least one conv width for name='vgg', "
          "e.g. (64, 'M', 128, 'M')."
      )
    for i, item in enumerate(vgg_layers):
      if item != "M":
        _positive_int(item, f"config.model.vgg_layers[{i}] (a conv width or 'M')")
  elif vgg_layers:
    raise ConfigError(
        f"config.model.vgg_layers only applies to name='vgg', not {model.name!r}; leave it "
        "empty (the presets have their own layers)."
    )


def _check_fraction(value, field: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
    raise ConfigError(f"{field} must be a number in (0, 1], got {value!r}.")


def _check_data(data) -> pipeline.DatasetInfo:
  """The fields of `config.data`, then the dataset itself: known, prepared, with the splits."""
  get = data.__getitem__
  if not isinstance(get("name"), str) or not get("name"):
    raise ConfigError(
        f"config.data.name must be {pipeline.BUILTIN!r} or a TFDS dataset name such as "
        f"'cifar10' or 'imagenette/320px-v2', got {get('name')!r}."
    )
  if get("name") == pipeline.NONE:
    raise ConfigError(
        "config.data.name='none' is a network imported without data (progressive import): it "
        "cannot be trained or evaluated as it is. To train from it, name a dataset and set "
        "config.init_from to its workdir.")
  _check_choice(get("augment"), "config.data.augment", augment.AUGMENTS)
  if get("augment") == "shift_flip":
    if get("max_shift") is None:
      raise ConfigError(
          "config.data.augment='shift_flip' needs config.data.max_shift, the largest shift "
          "in pixels of the host's images, e.g. the model's total stride (progressive arch "
          "prints it).")
    _positive_int(get("max_shift"), "config.data.max_shift")
  elif get("max_shift") is not None:
    raise ConfigError(
        f"config.data.max_shift={get('max_shift')!r} only applies to augment='shift_flip', not "
        f"{get('augment')!r}; leave it None.")
  _check_fraction(get("rrc_min_scale"), "config.data.rrc_min_scale")
  for field in ("mixup_alpha", "cutmix_alpha"):
    if isinstance(get(field), bool) or not isinstance(get(field), (int, float)) or get(field) < 0:
      raise ConfigError(f"config.data.{field} must be a number >= 0 (0: off), got {get(field)!r}.")
  _check_fraction(get("eval_crop"), "config.data.eval_crop")
  if get("image_size") is not None:
    _positive_int(get("image_size"), "config.data.image_size")
  for field in ("mean", "std"):
    value = get(field)
    if value is None:
      continue
    if (not isinstance(value, (tuple, list)) or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
      raise ConfigError(
          f"config.data.{field} must be None (the dataset's own) or three numbers in [0, 1] "
          f"units, one per RGB channel, got {value!r}."
      )
    if field == "std" and not all(v > 0 for v in value):
      raise ConfigError(f"config.data.std must be positive, got {value!r}.")
  for field in ("train_split", "eval_split"):
    if not isinstance(get(field), str) or not get(field):
      raise ConfigError(f"config.data.{field} must name a split, e.g. 'train', got {get(field)!r}.")
  workers = get("num_workers")
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
    raise ConfigError(
        f"config.data.num_workers must be an integer >= 0 (0: no worker processes), got "
        f"{workers!r}."
    )
  try:
    return pipeline.dataset_info(data)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _check_fields(config) -> None:
  """The config has exactly the fields of `FIELDS`."""
  names = field_names(config)
  for name in names:
    if name not in FIELDS_BY_NAME:
      raise ConfigError(
          f"config.{name} is not a config field; every field is listed, with its default "
          "and meaning, in configs/default.py."
      )
  missing = [name for name in FIELDS_BY_NAME if name not in names]
  if missing:
    raise ConfigError(
        f"The config lacks {', '.join('config.' + n for n in missing)}; start a config from "
        "progressive.config.default_config()."
    )


def validate(config, num_devices: int) -> None:
  """Raises `ConfigError` naming the first field that cannot work."""
  _check_fields(config)
  _check_numbers(config)
  info = _check_data(config.data)

  model = config.model
  _check_model(model)

  opt = config.opt
  _check_choice(opt.name, "config.opt.name", OPTIMIZERS)
  _check_choice(opt.cycle, "config.opt.cycle", CYCLES)
  if not opt.lr_max > 0:
    raise ConfigError(f"config.opt.lr_max must be positive, got {opt.lr_max!r}.")
  if opt.weight_decay < 0:
    raise ConfigError(f"config.opt.weight_decay must be >= 0, got {opt.weight_decay!r}.")
  smoothing = opt.label_smoothing
  if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not (
      0 <= smoothing < 1):
    raise ConfigError(
        f"config.opt.label_smoothing must be a number in [0, 1) (0: off), got {smoothing!r}.")
  if not 0 < opt.pct_start < 1:
    raise ConfigError(f"config.opt.pct_start must be in (0, 1), got {opt.pct_start!r}.")
  if len(opt.moms) != 3 or not all(0 <= m < 1 for m in opt.moms):
    raise ConfigError(f"config.opt.moms must be three values in [0, 1), got {opt.moms!r}.")
  for field in ("div", "div_final"):
    if not opt[field] > 0:
      raise ConfigError(f"config.opt.{field} must be positive, got {opt[field]!r}.")
  _positive_number(opt.lr_body_div, "config.opt.lr_body_div")
  _check_bool(opt.train_bn, "config.opt.train_bn")

  _check_batch(config.batch_size, "config.batch_size", num_devices)
  _check_batch(config.eval_batch_size, "config.eval_batch_size", num_devices)
  _check_choice(config.eval_tta, "config.eval_tta", EVAL_TTA)
  _check_stages(config, models.min_input_size(model), num_devices)
  if model.head == "flatten":
    sizes = {s["size"] for s in config.stages} | set(config.eval_sizes)
    if len(sizes) > 1:
      raise ConfigError(
          f"config.model.head='flatten' ties the weights to one input size, but stages "
          f"and eval_sizes use {sorted(sizes)}; use head='gap' or a single size."
      )
  for i, size in enumerate(config.eval_sizes):
    _positive_int(size, f"config.eval_sizes[{i}]")
    if size < models.min_input_size(model):
      raise ConfigError(
          f"config.eval_sizes[{i}]={size} is below {models.min_input_size(model)}, the "
          "smallest input config.model can take."
      )
  for field in ("eval_every_steps", "checkpoint_every_steps", "activation_stats_every",
                "eval_bn_images"):
    if isinstance(config[field], bool) or not isinstance(config[field], int) or config[field] < 0:
      raise ConfigError(f"config.{field} must be an integer >= 0 (0 turns it off), got {config[field]!r}.")
  _positive_int(config.log_every_steps, "config.log_every_steps")
  _positive_int(config.max_to_keep, "config.max_to_keep")
  if not isinstance(config.skip_nonfinite, bool):
    raise ConfigError(f"config.skip_nonfinite must be True or False, got {config.skip_nonfinite!r}.")
  if config.init_from and not epath.Path(config.init_from).exists():
    raise ConfigError(
        f"config.init_from={config.init_from!r} does not exist; give the workdir of a "
        "run (or one of its checkpoint folders) to take parameters from."
    )

  _check_lengths(config, info.num_train)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  for stage in plan:
    if stage.batch_size > info.num_train:
      raise ConfigError(
          f"config.stages[{stage.index}] batch size {stage.batch_size} exceeds the "
          f"{info.num_train} training examples of {info.name}."
      )
