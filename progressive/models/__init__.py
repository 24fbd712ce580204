"""Model zoo: `build(config.model, num_classes=...)` returns a Flax Linen module.

Every model takes the same switches (`downsample`, `blur_size`, `blur_padding`,
`batch_norm`, `head`, `head_hidden`, `head_grid`, `dtype`, `dilation`), and the models
with pooling sites (VGG, ResNet, XResNet) `max_blur_pool`; `layers` documents what
`downsample` does at each subsampling site.
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from progressive.models import resnet, simple_cnn, vgg, xresnet
from progressive.models.layers import (
  BLUR_PADDINGS,
  BLUR_SIZES,
  DOWNSAMPLE_MODES,
  HEADS,
  MAX_BLUR_POOLS,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

VGG_PRESETS = {"vgg11": vgg.VGG11_LAYERS, "vgg16": vgg.VGG16_LAYERS}
RESNET_PRESETS = {
    "resnet18": ((2, 2, 2, 2), resnet.BasicBlock),
    "resnet34": ((3, 4, 6, 3), resnet.BasicBlock),
    "resnet50": ((3, 4, 6, 3), resnet.Bottleneck),
}
# fastai's XResNets: blocks per stage and block expansion.
XRESNET_PRESETS = {
    "xresnet18": ((2, 2, 2, 2), 1),
    "xresnet34": ((3, 4, 6, 3), 1),
    "xresnet50": ((3, 4, 6, 3), 4),
}


def _common(config: Mapping[str, Any], bn_axis_name: str | None) -> dict[str, Any]:
  return dict(
      batch_norm=config["batch_norm"],
      head=config["head"],
      head_hidden=tuple(config["head_hidden"]),
      head_grid=config["head_grid"],
      dtype=DTYPES[config["dtype"]],
      bn_axis_name=bn_axis_name,
      downsample=config["downsample"],
      blur_size=config["blur_size"],
      blur_padding=config["blur_padding"],
      dilation=config["dilation"],
  )


def vgg_layers(config: Mapping[str, Any]) -> tuple[int | str, ...]:
  """The layer list of a VGG config: a preset's, or `config.vgg_layers` for `"vgg"`."""
  if config["name"] in VGG_PRESETS:
    return VGG_PRESETS[config["name"]]
  return tuple(config["vgg_layers"])


def _simple_cnn(config, num_classes, bn_axis_name):
  return simple_cnn.SimpleCNN(
      num_classes=num_classes,
      channels=tuple(config["channels"]),
      first_kernel=config["first_kernel"],
      kernel=config["kernel"],
      **_common(config, bn_axis_name),
  )


def _vgg(config, num_classes, bn_axis_name):
  return vgg.VGG(
      num_classes=num_classes,
      spec=vgg_layers(config),
      width=config["width"],
      max_blur_pool=config["max_blur_pool"],
      **_common(config, bn_axis_name),
  )


def _resnet(config, num_classes, bn_axis_name):
  stage_sizes, block = RESNET_PRESETS[config["name"]]
  return resnet.ResNet(
      num_classes=num_classes,
      stage_sizes=stage_sizes,
      block=block,
      width=config["width"],
      small_stem=config["small_stem"],
      zero_init_residual=config["zero_init_residual"],
      max_blur_pool=config["max_blur_pool"],
      subsample_stem=config["subsample_stem"],
      **_common(config, bn_axis_name),
  )


def _xresnet(config, num_classes, bn_axis_name):
  stage_sizes, expansion = XRESNET_PRESETS[config["name"]]
  return xresnet.XResNet(
      num_classes=num_classes,
      stage_sizes=stage_sizes,
      expansion=expansion,
      width=config["width"],
      max_blur_pool=config["max_blur_pool"],
      subsample_stem=config["subsample_stem"],
      **_common(config, bn_axis_name),
  )


def _vgg_min_size(config):
  return vgg.min_input_size(vgg_layers(config))


def _resnet_min_size(config):
  return resnet.min_input_size(config["small_stem"])


# name -> (constructor, smallest input side the model accepts).
MODELS = {
    "simple_cnn": (_simple_cnn, lambda c: simple_cnn.min_input_size(c["channels"])),
    **{name: (_vgg, _vgg_min_size) for name in ("vgg", *VGG_PRESETS)},
    **{name: (_resnet, _resnet_min_size) for name in RESNET_PRESETS},
    **{name: (_xresnet, lambda c: xresnet.min_input_size()) for name in XRESNET_PRESETS},
}


def build(config: Mapping[str, Any], *, num_classes: int, bn_axis_name: str | None = None):
  """Builds the model named by `config.name` with `num_classes` outputs.

  `bn_axis_name` is the device axis over which a data-parallel training step reduces
  batch-norm statistics; leave it `None` outside `shard_map` (evaluation, notebooks).
  """
  if config["name"] not in MODELS:
    raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {config['name']!r}.")
  constructor, _ = MODELS[config["name"]]
  model = constructor(config, num_classes, bn_axis_name)
  return _BUILT.setdefault(model, model)


# Every distinct module `build` has made in this process, mapped to itself: one object per
# architecture, so that `model.apply` of two builds compares equal (a bound method compares
# its module by identity). A train state holds `apply` as a static field and jitted functions are
# cached by it: the runs of a sweep then share their traced and compiled programs.
_BUILT: dict = {}


def min_input_size(config: Mapping[str, Any]) -> int:
  """The smallest image side the configured model can take (every size above works too)."""
  _, min_size = MODELS[config["name"]]
  return min_size(config)


__all__ = [
    "BLUR_PADDINGS",
    "BLUR_SIZES",
    "DOWNSAMPLE_MODES",
    "DTYPES",
    "HEADS",
    "MAX_BLUR_POOLS",
    "MODELS",
    "XRESNET_PRESETS",
    "build",
    "min_input_size",
    "vgg_layers",
]
