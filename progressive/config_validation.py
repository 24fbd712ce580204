"""Checking a config before anything is prepared or compiled.

Every error names the field, the value it has and what it may be, so a typo in a
command-line override fails in a second instead of after a dataset build and a compile.
"""

from collections.abc import Mapping
from typing import Any

from etils import epath

from progressive import models, schedules
from progressive.data import pipeline
from progressive.optim import OPTIMIZERS

STAGE_KEYS = ("size", "epochs", "steps", "batch_size")
CYCLES = ("run", "stage")


class ConfigError(ValueError):
  """A config value that cannot work, with the field and the allowed values."""


def _positive_int(value, field: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{field} must be a positive integer, got {value!r}.")
  return value


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
    if config.require_increasing_sizes and previous is not None and size <= previous:
      raise ConfigError(
          f"{field}.size={size} does not grow from the previous stage ({previous}); "
          "stage sizes must increase, or set config.require_increasing_sizes=False."
      )
    previous = size


def _check_batch(value, field: str, num_devices: int) -> None:
  _positive_int(value, field)
  if value % num_devices:
    raise ConfigError(
        f"{field}={value} does not divide evenly over {num_devices} devices; use a "
        f"multiple of {num_devices}."
    )


def _check_choice(value, field: str, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f"{field} must be one of {sorted(allowed)}, got {value!r}.")


def validate(config, num_devices: int) -> None:
  """Raises `ConfigError` naming the first field that cannot work."""
  _check_choice(config.data.name, "config.data.name", pipeline.DATASETS)
  try:
    pipeline.dataset_info(config.data)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  model = config.model
  _check_choice(model.name, "config.model.name", models.MODELS)
  _check_choice(model.head, "config.model.head", models.HEADS)
  _check_choice(model.dtype, "config.model.dtype", models.DTYPES)
  if not model.channels:
    raise ConfigError("config.model.channels must list at least one width.")
  for i, width in enumerate(model.channels):
    _positive_int(width, f"config.model.channels[{i}]")
  for field in ("first_kernel", "kernel"):
    _positive_int(model[field], f"config.model.{field}")

  opt = config.opt
  _check_choice(opt.name, "config.opt.name", OPTIMIZERS)
  _check_choice(opt.cycle, "config.opt.cycle", CYCLES)
  if not opt.lr_max > 0:
    raise ConfigError(f"config.opt.lr_max must be positive, got {opt.lr_max!r}.")
  if opt.weight_decay < 0:
    raise ConfigError(f"config.opt.weight_decay must be >= 0, got {opt.weight_decay!r}.")
  if not 0 < opt.pct_start < 1:
    raise ConfigError(f"config.opt.pct_start must be in (0, 1), got {opt.pct_start!r}.")
  if len(opt.moms) != 3 or not all(0 <= m < 1 for m in opt.moms):
    raise ConfigError(f"config.opt.moms must be three values in [0, 1), got {opt.moms!r}.")
  for field in ("div", "div_final"):
    if not opt[field] > 0:
      raise ConfigError(f"config.opt.{field} must be positive, got {opt[field]!r}.")

  _check_batch(config.batch_size, "config.batch_size", num_devices)
  _check_batch(config.eval_batch_size, "config.eval_batch_size", num_devices)
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
  for field in ("eval_every_steps", "checkpoint_every_steps"):
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

  info = pipeline.dataset_info(config.data)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  for stage in plan:
    if stage.batch_size > info.num_train:
      raise ConfigError(
          f"config.stages[{stage.index}] batch size {stage.batch_size} exceeds the "
          f"{info.num_train} training examples of {info.name}."
      )
