"""Model zoo: `build(config.model, num_classes=...)` returns a Flax Linen module."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from progressive.models import simple_cnn
from progressive.models.layers import HEADS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _simple_cnn(config: Mapping[str, Any], num_classes: int, bn_axis_name: str | None):
  return simple_cnn.SimpleCNN(
      num_classes=num_classes,
      channels=tuple(config["channels"]),
      first_kernel=config["first_kernel"],
      kernel=config["kernel"],
      batch_norm=config["batch_norm"],
      head=config["head"],
      dtype=DTYPES[config["dtype"]],
      bn_axis_name=bn_axis_name,
  )


# name -> (constructor, smallest input side the model accepts).
MODELS = {
    "simple_cnn": (_simple_cnn, lambda config: simple_cnn.min_input_size(config["channels"])),
}


def build(config: Mapping[str, Any], *, num_classes: int, bn_axis_name: str | None = None):
  """Builds the model named by `config.name` with `num_classes` outputs.

  `bn_axis_name` is the device axis over which a data-parallel training step reduces
  batch-norm statistics; leave it `None` outside `shard_map` (evaluation, notebooks).
  """
  if config["name"] not in MODELS:
    raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {config['name']!r}.")
  constructor, _ = MODELS[config["name"]]
  return constructor(config, num_classes, bn_axis_name)


def min_input_size(config: Mapping[str, Any]) -> int:
  """The smallest image side the configured model can take."""
  _, min_size = MODELS[config["name"]]
  return min_size(config)


__all__ = ["DTYPES", "HEADS", "MODELS", "build", "min_input_size"]
