"""ResNet (He et al. 2015) as in torchvision (v1.5: the stride sits in the 3x3 conv).

The standard stem is a 7x7 stride-2 conv, norm, ReLU and a 3x3 stride-2 max pool
(padding 1); `small_stem=True` replaces it with one 3x3 stride-1 conv and no pool, for
32 px inputs. `downsample` (see `layers`) applies to the stem conv, the stem pool, the
first conv with stride 2 of stages 2-4, and their projection shortcuts, so
`downsample="stride"` is the standard ResNet. `zero_init_residual` starts the last norm
of every block at scale 0, so each block starts out as `relu(shortcut(x))`.

With `downsample="blur"` the blocks are Zhang's anti-aliased ones (antialiased-cnns):
the strided 3x3 conv runs at stride 1, then norm, ReLU and `BlurPool`; a projection
shortcut is `BlurPool`, 1x1 conv and norm. `max_blur_pool="zhang"` makes the stem pool
Zhang's too: a 2x2 unpadded max pool at stride 1, then `BlurPool`. `"blur"` also runs
the stem conv at stride 1 then `BlurPool`; `subsample_stem=False` keeps it at stride 2,
as Zhang's published networks (`pool_only=True`) do, so `downsample="blur"`,
`max_blur_pool="zhang"`, `subsample_stem=False` is antialiased-cnns' ResNet.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from progressive.models import layers
from progressive.models.vgg import scaled


class BasicBlock(nn.Module):
  """Two 3x3 convs and a shortcut: `[B, H, W, C]` to `[B, H / stride, W / stride, features]`."""

  features: int
  conv: Callable[..., nn.Module]  # ConvNormAct with the model's settings bound.
  stride: int = 1
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  zero_init_residual: bool = False
  expansion = 1
  residual = True  # Read by `progressive.models.geometry`: the output sums a main and a shortcut branch.

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = self.conv(self.features, 3, stride=self.stride, name="conv1")(x, train)
    y = self.conv(
        self.features, 3, act=False, zero_init_norm=self.zero_init_residual, name="conv2"
    )(y, train)
    return nn.relu(y + shortcut(self, x, self.features * self.expansion, train))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand to `4 * features` channels, and a shortcut."""

  features: int
  conv: Callable[..., nn.Module]
  stride: int = 1
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  zero_init_residual: bool = False
  expansion = 4
  residual = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = self.conv(self.features, 1, name="conv1")(x, train)
    y = self.conv(self.features, 3, stride=self.stride, name="conv2")(y, train)
    out = self.features * self.expansion
    y = self.conv(out, 1, act=False, zero_init_norm=self.zero_init_residual, name="conv3")(y, train)
    return nn.relu(y + shortcut(self, x, out, train))


def shortcut(block, x, features: int, train: bool):
  """The block input, or a projection to `features` channels subsampled by `block.stride`.

  Submodules are named `shortcut*` so `progressive.models.geometry` can tell the branches apart.
  """
  if block.stride == 1 and x.shape[-1] == features:
    return x
  stride = block.stride
  if stride > 1 and block.downsample != "stride":
    name = "shortcut_blur" if block.downsample == "blur" else "shortcut_pool"
    x = layers.subsample(
        x, block.downsample, stride, blur_size=block.blur_size,
        blur_padding=block.blur_padding, name=name,
    )
    stride = 1
  return block.conv(features, 1, stride=stride, act=False, name="shortcut")(x, train)


class ResNet(nn.Module):
  """`[B, H, W, C]` images to `[B, num_classes]` float32 logits.

  `stage_sizes` blocks per stage at `64, 128, 256, 512` channels times `width` (times 4
  at the output of bottleneck blocks). `dilation` applies to the blocks' 3x3 convs.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: type[nn.Module] = BasicBlock
  width: float = 1.0
  small_stem: bool = False
  zero_init_residual: bool = False
  batch_norm: bool = True
  head: str = "gap"
  head_hidden: Sequence[int] = ()
  head_grid: int = 7
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  max_blur_pool: str = "same"
  subsample_stem: bool = True  # False: the stem conv keeps its stride whatever `downsample`.
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    sampling = dict(
        downsample=self.downsample, blur_size=self.blur_size, blur_padding=self.blur_padding
    )
    conv = functools.partial(
        layers.ConvNormAct, batch_norm=self.batch_norm, dtype=self.dtype,
        bn_axis_name=self.bn_axis_name, **sampling,
    )
    stem = scaled(64, self.width)
    if self.small_stem:
      x = conv(stem, 3, name="stem")(x, train)
    else:
      stem_sampling = {} if self.subsample_stem else {"downsample": "stride"}
      x = conv(stem, 7, stride=2, **stem_sampling, name="stem")(x, train)
      x = layers.PoolSite(
          "max", 3, 2, 1, **sampling, max_blur_pool=self.max_blur_pool, name="stem_pool"
      )(x)
    block_conv = functools.partial(conv, dilation=self.dilation)
    for i, num_blocks in enumerate(self.stage_sizes):
      for b in range(num_blocks):
        x = self.block(
            scaled(64 * 2**i, self.width),
            block_conv,
            stride=2 if i > 0 and b == 0 else 1,
            **sampling,
            zero_init_residual=self.zero_init_residual,
            name=f"stage{i + 1}_block{b}",
        )(x, train)
    head = layers.Head(
        self.num_classes, self.head, dtype=self.dtype, hidden=tuple(self.head_hidden),
        grid=self.head_grid, name="head",
    )
    return head(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)


def min_input_size(small_stem: bool) -> int:
  """Smallest input side with at least one pixel left per halving: 32, or 8 (small stem)."""
  return 2**3 if small_stem else 2**5
