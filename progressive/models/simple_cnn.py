"""fastai's simple CNN: a stack of stride-2 convolutions with growing channels.

fastbook ch. 13 builds it as `conv(1, 8, ks=5), conv(8, 16), conv(16, 32), ...`, each a
stride-2 convolution with padding `ks // 2`, then batch norm and ReLU. Here the head is
configurable: `"gap"` (global average pool then dense) runs at every input size, which
is what progressive resizing needs; `"flatten"` ties the weights to one input size.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from progressive.models import layers


class SimpleCNN(nn.Module):
  """`[B, H, W, C]` images to `[B, num_classes]` float32 logits."""

  num_classes: int
  channels: Sequence[int] = (16, 32, 64, 128)
  first_kernel: int = 5
  kernel: int = 3
  batch_norm: bool = True
  head: str = "gap"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    for i, features in enumerate(self.channels):
      kernel = self.first_kernel if i == 0 else self.kernel
      x = layers.ConvNormAct(
          features,
          kernel,
          stride=2,
          batch_norm=self.batch_norm,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          name=f"conv{i}",
      )(x, train)
    return layers.Head(self.num_classes, self.head, dtype=self.dtype, name="head")(x)


def min_input_size(channels: Sequence[int]) -> int:
  """Smallest input side with at least one pixel left per halving: `2 ** depth`."""
  return 2 ** len(channels)
