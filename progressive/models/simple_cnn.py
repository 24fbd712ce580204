"""fastai's simple CNN: a stack of stride-2 convolutions with growing channels.

fastbook ch. 13 builds it as `conv(1, 8, ks=5), conv(8, 16), conv(16, 32), ...`, each a
stride-2 convolution with padding `ks // 2`, then batch norm and ReLU. Here the head is
configurable: `"gap"` (global average pool then dense) runs at every input size, which
is what progressive resizing needs; `"flatten"` ties the weights to one input size.
Every convolution is a strided-conv site for `downsample` (see `layers`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from progressive.models import layers


class SimpleCNN(nn.Module):
  """`[B, H, W, C]` images to `[B, num_classes]` float32 logits.

  `dilation` applies to every convolution but the first.
  """

  num_classes: int
  channels: Sequence[int] = (16, 32, 64, 128)
  first_kernel: int = 5
  kernel: int = 3
  batch_norm: bool = True
  head: str = "gap"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  dilation: int = 1
  head_hidden: Sequence[int] = ()
  head_grid: int = 7

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    for i, features in enumerate(self.channels):
      x = layers.ConvNormAct(
          features,
          self.first_kernel if i == 0 else self.kernel,
          stride=2,
          batch_norm=self.batch_norm,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          dilation=1 if i == 0 else self.dilation,
          downsample=self.downsample,
          blur_size=self.blur_size,
          blur_padding=self.blur_padding,
          name=f"conv{i}",
      )(x, train)
    head = layers.Head(
        self.num_classes, self.head, dtype=self.dtype, hidden=tuple(self.head_hidden),
        grid=self.head_grid, name="head",
    )
    return head(x)


def min_input_size(channels: Sequence[int]) -> int:
  """Smallest input side with at least one pixel left per halving: `2 ** depth`."""
  return 2 ** len(channels)
