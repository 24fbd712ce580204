"""Building blocks shared by every model: conv-norm-activation and classifier heads."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

HEADS = ("gap", "flatten")


class ConvNormAct(nn.Module):
  """Convolution (padding `kernel // 2`), optional batch norm, ReLU.

  A convolution followed by batch norm has no bias: the norm's shift makes it redundant.
  Batch-norm statistics are reduced over `bn_axis_name` in training, so a data-parallel
  step normalises with the statistics of the whole global batch.
  """

  features: int
  kernel: int
  stride: int = 1
  batch_norm: bool = True
  act: bool = True
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    pad = self.kernel // 2
    x = nn.Conv(
        self.features,
        (self.kernel, self.kernel),
        strides=(self.stride, self.stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=not self.batch_norm,
        dtype=self.dtype,
        name="conv",
    )(x)
    if self.batch_norm:
      x = nn.BatchNorm(
          use_running_average=not train,
          momentum=0.9,
          epsilon=1e-5,
          dtype=self.dtype,
          axis_name=self.bn_axis_name if train else None,
          name="bn",
      )(x)
    return nn.relu(x) if self.act else x


class Head(nn.Module):
  """Classifier head: `"gap"` averages over space first, `"flatten"` does not."""

  num_classes: int
  kind: str = "gap"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.kind == "gap":
      x = jnp.mean(x, axis=(1, 2))
    elif self.kind == "flatten":
      spatial = x.shape[1:3]
      x = x.reshape((x.shape[0], -1))
      if self.has_variable("params", "dense"):
        expected = self.get_variable("params", "dense")["kernel"].shape[0]
        if expected != x.shape[-1]:
          raise ValueError(
              f"The 'flatten' head was built for {expected} input features but got "
              f"{x.shape[-1]} (a {spatial[0]}x{spatial[1]} feature map): it only runs at the "
              "input size it was initialised at. Use head='gap' to run at every size."
          )
    else:
      raise ValueError(f"head must be one of {HEADS}, got {self.kind!r}.")
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="dense")(x)
    return jnp.asarray(x, jnp.float32)
