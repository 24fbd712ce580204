"""XResNet as fastai 2.7 defines it (`fastai.vision.models.xresnet`): He et al.'s "Bag of
Tricks" ResNet-D.

It differs from torchvision's ResNet (`progressive.models.resnet`) in three places:

- the stem is three 3x3 conv-norm-ReLU layers of 32, 32 and 64 channels, the first with
  stride 2, then the same 3x3 stride-2 max pool (padding 1);
- a shortcut that subsamples average-pools first (torch's `AvgPool2d(2, ceil_mode=True)`,
  `CeilAvgPool`), then a 1x1 conv at stride 1 and norm where the channels change; a
  shortcut that keeps the shape is the identity;
- the last norm of every block starts at scale 0 (fastai's `NormType.BatchZero`), always.

The blocks are otherwise torchvision's: two 3x3 convs (`expansion=1`, XResNet-18/34) or a
1x1, 3x3, 1x1 bottleneck widening 4x (`expansion=4`, XResNet-50), the stride in the
(first) 3x3 conv of each stage's first block, stages 2-4. The head is a global average
pool and a dense layer (fastai's dropout before it has p=0).

`width` is fastai's `widen`: the stages have `int(64 w), int(128 w), ...` channels (times
`expansion` at a block's output), while the stem keeps 32, 32, 64 channels, so a narrow
network has a 1x1 projection in its first block, as fastai's does.

`downsample` (see `layers`) applies to the strided convolutions (the stem's first conv
and each stage's strided 3x3) and the published pools: the stem's max pool and the
shortcut's average pool. Under `"stride"` the shortcut keeps its ceil-mode pool, which
rounds odd sides up as the strided conv does. `"max"` and `"avg"` make it a 2x2 stride-2
max or average pool that rounds odd sides down, as the main branch's pool then does.
`"blur"` makes it BlurPool. `subsample_stem=False` keeps the stem's first conv strided
whatever `downsample` says, and `dilation` applies to the blocks' convs.

Initialisation is the zoo's (Flax's LeCun-normal kernels, norm biases at 0), not
fastai's (Kaiming-normal convolution and linear kernels, norm biases at 1e-3).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from progressive.models import layers

STEM = (32, 32, 64)  # fastai's `stem_szs`: not scaled by `width`.
STAGES = (64, 128, 256, 512)


class CeilAvgPool(nn.Module):
  """torch's `AvgPool2d(window, stride, ceil_mode=True)` without padding (fastai's shortcut).

  `[B, H, W, C]` to `[B, H', W', C]` with `H' = ceil((H - window) / stride) + 1`, less one
  if that window would start past the map. A window cut by the map's edge averages the
  pixels it covers (torch divides by the window clipped to the map); for 2x2 windows at an
  odd side, the last row or column alone.
  """

  window: int = 2
  stride: int = 2

  def pads(self, n: int) -> tuple[int, int]:
    """Padding before and after a side of `n` px: floor arithmetic then gives torch's
    ceil-mode output size (`progressive.models.geometry` reads it)."""
    out = (n - self.window + self.stride - 1) // self.stride + 1
    if (out - 1) * self.stride >= n:  # torch: the last window starts inside the map.
      out -= 1
    return 0, max(0, (out - 1) * self.stride + self.window - n)

  @nn.compact
  def __call__(self, x):
    pads = [self.pads(n) for n in x.shape[1:3]]
    window, stride = (self.window,) * 2, (self.stride,) * 2
    y = nn.avg_pool(x, window, stride, pads, count_include_pad=False)
    return y.astype(x.dtype)


class ResBlock(nn.Module):
  """fastai's `ResBlock`: `[B, H, W, C]` to `[B, H / stride, W / stride, features * expansion]`.

  `expansion=1`: two 3x3 convs; `expansion=4`: 1x1 to `features`, 3x3, 1x1 to
  `4 * features`. The shortcut is `shortcut`'s.
  """

  features: int
  conv: Callable[..., nn.Module]  # ConvNormAct with the model's settings bound.
  expansion: int = 1
  stride: int = 1
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  residual = True  # For `progressive.models.geometry`: the output sums two branches.

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = self.features * self.expansion
    if self.expansion == 1:
      y = self.conv(self.features, 3, stride=self.stride, name="conv1")(x, train)
      y = self.conv(out, 3, act=False, zero_init_norm=True, name="conv2")(y, train)
    else:
      y = self.conv(self.features, 1, name="conv1")(x, train)
      y = self.conv(self.features, 3, stride=self.stride, name="conv2")(y, train)
      y = self.conv(out, 1, act=False, zero_init_norm=True, name="conv3")(y, train)
    return nn.relu(y + shortcut(self, x, out, train))


def shortcut(block: ResBlock, x, features: int, train: bool):
  """fastai's `idpath`: subsampled by `block.stride` with a pool first (`CeilAvgPool`, or
  the pool or BlurPool `block.downsample` names), then a 1x1 conv and norm to `features`
  channels if they change; the identity where neither changes.

  Submodules are named `shortcut*` so `progressive.models.geometry` can tell the branches apart.
  """
  if block.stride > 1:
    if block.downsample == "stride":
      x = CeilAvgPool(block.stride, block.stride, name="shortcut_pool")(x)
    else:
      name = "shortcut_blur" if block.downsample == "blur" else "shortcut_pool"
      x = layers.subsample(
          x, block.downsample, block.stride, blur_size=block.blur_size,
          blur_padding=block.blur_padding, name=name,
      )
  if x.shape[-1] != features:
    x = block.conv(features, 1, act=False, name="shortcut")(x, train)
  return x


def stage_widths(width: float) -> tuple[int, ...]:
  """Channels of the four stages before expansion: fastai's `int(c * widen)`, at least 1."""
  return tuple(max(1, int(c * width)) for c in STAGES)


class XResNet(nn.Module):
  """`[B, H, W, C]` images to `[B, num_classes]` float32 logits.

  `stage_sizes` blocks per stage at `stage_widths(width)` channels, times `expansion` at
  each block's output.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  expansion: int = 1
  width: float = 1.0
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
  subsample_stem: bool = True  # False: the first stem conv keeps its stride whatever `downsample`.
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    sampling = {
        "downsample": self.downsample, "blur_size": self.blur_size,
        "blur_padding": self.blur_padding,
    }
    conv = functools.partial(
        layers.ConvNormAct, batch_norm=self.batch_norm, dtype=self.dtype,
        bn_axis_name=self.bn_axis_name, **sampling,
    )
    stem_sampling = {} if self.subsample_stem else {"downsample": "stride"}
    x = conv(STEM[0], 3, stride=2, **stem_sampling, name="stem0")(x, train)
    for i, features in enumerate(STEM[1:], start=1):
      x = conv(features, 3, name=f"stem{i}")(x, train)
    x = layers.PoolSite(
        "max", 3, 2, 1, **sampling, max_blur_pool=self.max_blur_pool, name="stem_pool"
    )(x)
    block_conv = functools.partial(conv, dilation=self.dilation)
    for i, (num_blocks, features) in enumerate(zip(self.stage_sizes, stage_widths(self.width))):
      for b in range(num_blocks):
        x = ResBlock(
            features, block_conv, self.expansion, stride=2 if i > 0 and b == 0 else 1,
            **sampling, name=f"stage{i + 1}_block{b}",
        )(x, train)
    head = layers.Head(
        self.num_classes, self.head, dtype=self.dtype, hidden=tuple(self.head_hidden),
        grid=self.head_grid, name="head",
    )
    return head(x)


XResNet18 = functools.partial(XResNet, stage_sizes=(2, 2, 2, 2), expansion=1)
XResNet34 = functools.partial(XResNet, stage_sizes=(3, 4, 6, 3), expansion=1)
XResNet50 = functools.partial(XResNet, stage_sizes=(3, 4, 6, 3), expansion=4)


def min_input_size() -> int:
  """Smallest input side with at least one pixel left per halving (five of them): 32."""
  return 2**5
