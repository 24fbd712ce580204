"""VGG (Simonyan & Zisserman 2014): 3x3 convolutions with padding 1 and 2x2 max pools.

A layer list like torchvision's (`64, "M", 128, "M", ...`: an int is a 3x3 conv with that
many channels, times `width`; `"M"` is a 2x2 max pool with stride 2). Every `"M"` is a
pooling site for `downsample` (see `layers`): `"stride"` and `"max"` both keep the max
pool, since VGG subsamples only there. torchvision's classifier is the `"adaptive"` head
(`AdaptiveAvgPool2d((7, 7))`, then flatten) with `head_hidden=(4096, 4096)`, at every
size; at 224 px (7x7x512 features) the pool changes nothing and it equals the
`"flatten"` head. The `"gap"` head runs at every size too. There is no dropout.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from progressive.models import layers

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_LAYERS = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
)


def scaled(channels: int, width: float) -> int:
  """A layer's width under the multiplier `width` (at least 1)."""
  return max(1, int(round(channels * width)))


class VGG(nn.Module):
  """`[B, H, W, C]` images to `[B, num_classes]` float32 logits.

  `dilation` applies to every convolution but the first; `head_hidden` widths are not
  scaled by `width`.
  """

  num_classes: int
  spec: Sequence[int | str] = VGG11_LAYERS  # Ints are 3x3 convs, "M" 2x2 max pools.
  width: float = 1.0
  batch_norm: bool = False
  head: str = "gap"
  head_hidden: Sequence[int] = ()
  head_grid: int = 7
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  max_blur_pool: str = "same"
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    convs = pools = 0
    for item in self.spec:
      if item == "M":
        x = layers.PoolSite(
            "max", 2, 2, downsample=self.downsample, blur_size=self.blur_size,
            blur_padding=self.blur_padding, max_blur_pool=self.max_blur_pool, name=f"pool{pools}",
        )(x)
        pools += 1
      else:
        x = layers.ConvNormAct(
            scaled(item, self.width),
            3,
            batch_norm=self.batch_norm,
            dtype=self.dtype,
            bn_axis_name=self.bn_axis_name,
            dilation=1 if convs == 0 else self.dilation,
            name=f"conv{convs}",
        )(x, train)
        convs += 1
    head = layers.Head(
        self.num_classes, self.head, dtype=self.dtype, hidden=tuple(self.head_hidden),
        grid=self.head_grid, name="head",
    )
    return head(x)


VGG11 = functools.partial(VGG, spec=VGG11_LAYERS)
VGG16 = functools.partial(VGG, spec=VGG16_LAYERS)


def min_input_size(vgg_layers: Sequence[int | str]) -> int:
  """Smallest input side with at least one pixel left per pool: `2 ** pools`."""
  return 2 ** sum(1 for item in vgg_layers if item == "M")
