"""Building blocks shared by every model: conv-norm-activation, pools, BlurPool, heads.

One switch, `downsample` in `DOWNSAMPLE_MODES`, decides how every model subsamples. It
is applied at two kinds of site:

- a strided convolution (`ConvNormAct` with `stride > 1`):
  `"stride"`: the strided convolution itself;
  `"max"` / `"avg"`: convolution with stride 1, norm, activation, then a max / average
  pool with window and stride `stride` (2x2, stride 2);
  `"blur"`: convolution with stride 1, norm, activation, then `BlurPool(stride)`.
- a pooling layer of the published architecture (`PoolSite`: VGG's pools, ResNet's stem
  pool), with its own window, stride and padding:
  `"stride"`: the published pool, unchanged;
  `"max"` / `"avg"`: a max / average pool with the same window, stride and padding;
  `"blur"`: max pool with the same window and padding but stride 1, then
  `BlurPool(stride)` (Zhang's MaxBlurPool); a published average pool becomes `BlurPool`.
  `max_blur_pool="zhang"` (in `MAX_BLUR_POOLS`) takes antialiased-cnns' stride-1 max
  pool instead: 2x2, unpadded (`nn.MaxPool2d(kernel_size=2, stride=1)` before the
  ResNet stem's `BlurPool`); for VGG's 2x2 pools the two are the same.

So `downsample="stride"` is always the architecture as published. Projection shortcuts
of residual blocks follow the same rule: `"stride"` is the strided 1x1 convolution;
otherwise the block input is subsampled first (pool or `BlurPool`, as in Zhang's
anti-aliased ResNets) and the 1x1 convolution has stride 1.

Pools, `BlurPool` and the heads' pools are Modules with their geometry as attributes, so
`progressive.models.geometry` can read every layer of a running model.
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HEADS = ("gap", "flatten", "adaptive")
DOWNSAMPLE_MODES = ("stride", "max", "avg", "blur")
MAX_BLUR_POOLS = ("same", "zhang")  # The stride-1 max pool of a blurred pooling site.
BLUR_PADDINGS = ("reflect", "zero")
BLUR_SIZES = tuple(range(1, 8))
BN_MOMENTUM = 0.9  # Running averages: new = BN_MOMENTUM * old + (1 - BN_MOMENTUM) * batch.


def blur_filter(size: int) -> np.ndarray:
  """Zhang's `[size, size]` low-pass filter: outer product of a binomial row, sum 1."""
  row = binomial_row(size)
  return np.outer(row, row).astype(np.float32)


def blur_pads(size: int) -> tuple[int, int]:
  """Padding before and after for a filter of `size`: floor and ceil of `(size - 1) / 2`."""
  return (size - 1) // 2, size // 2


def binomial_row(size: int) -> np.ndarray:
  """The 1-D binomial filter of `size` taps, sum 1: `blur_filter` is its outer square."""
  if size not in BLUR_SIZES:
    raise ValueError(f"blur size must be one of {list(BLUR_SIZES)}, got {size!r}.")
  row = np.array([math.comb(size - 1, i) for i in range(size)], np.float64)
  return row / row.sum()


class BlurPool(nn.Module):
  """Anti-aliased subsampling (Zhang 2019): a fixed depthwise blur, then stride.

  `[B, H, W, C]` to `[B, ceil(H / stride), ceil(W / stride), C]`. Padding is `"reflect"`
  or `"zero"`; `size=1` is plain subsampling `x[:, ::stride, ::stride]`. No parameters.

  The filter is separable, so it runs as weighted sums of strided slices along H, then W,
  computing only the kept outputs: the depthwise `conv_general_dilated` it equals (to
  float rounding) ran 7-11x slower forward and backward on XLA's CPU backend (a
  [128, 32, 32, 32] batch, sizes 3 and 5), and slices fuse into elementwise kernels on
  accelerators too.
  """

  size: int = 3
  stride: int = 2
  padding: str = "reflect"

  @nn.compact
  def __call__(self, x):
    if self.padding not in BLUR_PADDINGS:
      raise ValueError(f"blur padding must be one of {list(BLUR_PADDINGS)}, got {self.padding!r}.")
    lo, hi = blur_pads(self.size)
    mode = "reflect" if self.padding == "reflect" else "constant"
    x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), mode=mode)
    row = binomial_row(self.size)
    for axis in (1, 2):  # H, then W: out[i] = sum_a row[a] * x[i * stride + a].
      n = (x.shape[axis] - self.size) // self.stride + 1
      taps = [jax.lax.slice_in_dim(x, a, a + self.stride * (n - 1) + 1, self.stride, axis)
              for a in range(self.size)]
      x = sum(jnp.asarray(w, x.dtype) * tap for w, tap in zip(row, taps)) if self.size > 1 else taps[0]
    return x


class MaxPool(nn.Module):
  """Max pool over a `window x window` square with `stride` and symmetric `padding`."""

  window: int = 2
  stride: int = 2
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    pad = ((self.padding, self.padding), (self.padding, self.padding))
    return nn.max_pool(x, (self.window, self.window), (self.stride, self.stride), pad)


class AvgPool(nn.Module):
  """Average pool like `MaxPool`; padded pixels are left out of the average."""

  window: int = 2
  stride: int = 2
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    pad = ((self.padding, self.padding), (self.padding, self.padding))
    return nn.avg_pool(
        x, (self.window, self.window), (self.stride, self.stride), pad, count_include_pad=False
    )


def subsample(x, mode: str, stride: int, *, blur_size: int, blur_padding: str, name: str):
  """Subsamples `x` by `stride` where a strided conv was: a pool or BlurPool (`mode`).

  Call inside a compact method; the layer becomes a submodule of the caller.
  """
  if mode == "max":
    return MaxPool(stride, stride, name=name)(x)
  if mode == "avg":
    return AvgPool(stride, stride, name=name)(x)
  if mode == "blur":
    return BlurPool(blur_size, stride, blur_padding, name=name)(x)
  raise ValueError(f"downsample must be one of {list(DOWNSAMPLE_MODES)}, got {mode!r}.")


class PoolSite(nn.Module):
  """A pooling layer of a published architecture, replaced according to `downsample`.

  Under `"blur"`, a published max pool keeps its window and padding at stride 1
  (`max_blur_pool="same"`) or becomes antialiased-cnns' 2x2 unpadded one (`"zhang"`).
  """

  kind: str = "max"  # The published pool: "max" or "avg".
  window: int = 2
  stride: int = 2
  padding: int = 0
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  max_blur_pool: str = "same"

  @nn.compact
  def __call__(self, x):
    mode = self.kind if self.downsample == "stride" else self.downsample
    if mode == "max":
      return MaxPool(self.window, self.stride, self.padding, name="max")(x)
    if mode == "avg":
      return AvgPool(self.window, self.stride, self.padding, name="avg")(x)
    if mode != "blur":
      raise ValueError(f"downsample must be one of {list(DOWNSAMPLE_MODES)}, got {mode!r}.")
    if self.max_blur_pool not in MAX_BLUR_POOLS:
      raise ValueError(
          f"max_blur_pool must be one of {list(MAX_BLUR_POOLS)}, got {self.max_blur_pool!r}."
      )
    if self.kind == "max":
      same = self.max_blur_pool == "same"
      window, padding = (self.window, self.padding) if same else (2, 0)
      x = MaxPool(window, 1, padding, name="max")(x)
    return BlurPool(self.blur_size, self.stride, self.blur_padding, name="blur")(x)


class ConvNormAct(nn.Module):
  """Convolution, optional batch norm, optional ReLU; subsampling set by `downsample`.

  Padding defaults to `dilation * (kernel // 2)` ("same" for odd kernels). A convolution
  followed by batch norm has no bias: the norm's shift makes it redundant. Batch-norm
  statistics are reduced over `bn_axis_name` in training, so a data-parallel step
  normalises with the statistics of the whole global batch. With `stride > 1` and
  `downsample != "stride"`, the convolution runs at stride 1 and `subsample` follows the
  activation. `zero_init_norm` starts the norm's scale at 0 (the last norm of a residual
  branch).
  """

  features: int
  kernel: int
  stride: int = 1
  batch_norm: bool = True
  act: bool = True
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  dilation: int = 1
  padding: int | None = None
  downsample: str = "stride"
  blur_size: int = 3
  blur_padding: str = "reflect"
  zero_init_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    pad = self.dilation * (self.kernel // 2) if self.padding is None else self.padding
    separate = self.stride > 1 and self.downsample != "stride"
    stride = 1 if separate else self.stride
    x = nn.Conv(
        self.features,
        (self.kernel, self.kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(self.dilation, self.dilation),
        use_bias=not self.batch_norm,
        dtype=self.dtype,
        name="conv",
    )(x)
    if self.batch_norm:
      x = nn.BatchNorm(
          use_running_average=not train,
          momentum=BN_MOMENTUM,
          epsilon=1e-5,
          dtype=self.dtype,
          axis_name=self.bn_axis_name if train else None,
          scale_init=nn.initializers.zeros if self.zero_init_norm else nn.initializers.ones,
          name="bn",
      )(x)
    if self.act:
      x = nn.relu(x)
    if separate:
      name = "blur" if self.downsample == "blur" else "pool"
      x = subsample(
          x, self.downsample, self.stride, blur_size=self.blur_size,
          blur_padding=self.blur_padding, name=name,
      )
    return x


class GlobalAvgPool(nn.Module):
  """`[B, H, W, C]` to `[B, C]`: the mean over all positions."""

  @nn.compact
  def __call__(self, x):
    return jnp.mean(x, axis=(1, 2))


class Flatten(nn.Module):
  """`[B, H, W, C]` to `[B, H * W * C]`."""

  @nn.compact
  def __call__(self, x):
    return x.reshape((x.shape[0], -1))


def adaptive_cells(n: int, grid: int) -> list[tuple[int, int]]:
  """torch's adaptive pool cells along an axis of `n` pixels, `(start, end)` for each of
  `grid`: `[floor(i n / grid), ceil((i + 1) n / grid))`.

  Neighbouring cells overlap where `grid` does not divide `n`, and repeat pixels where
  `n < grid`.
  """
  return [(i * n // grid, -(-(i + 1) * n // grid)) for i in range(grid)]


class AdaptiveAvgPool(nn.Module):
  """`[B, H, W, C]` to `[B, grid, grid, C]`: torch's `adaptive_avg_pool2d(x, grid)`.

  Output cell `(i, j)` is the mean over the rows and columns of `adaptive_cells`, at
  every `H, W` (larger or smaller than `grid`). Computed as means of slices, one axis
  after the other, so no matrix product can lose precision on an accelerator. The
  `"adaptive"` head flattens its output in the zoo's NHWC order, `(h, w, c)`; torch's
  VGG flattens `(c, h, w)`, so importing one permutes the rows of its first dense kernel.
  """

  grid: int = 7

  @nn.compact
  def __call__(self, x):
    for axis in (1, 2):
      cells = [
          jnp.mean(jax.lax.slice_in_dim(x, lo, hi, axis=axis), axis=axis, keepdims=True)
          for lo, hi in adaptive_cells(x.shape[axis], self.grid)
      ]
      x = jnp.concatenate(cells, axis=axis)
    return x


class Head(nn.Module):
  """Classifier head: `"gap"` averages over space first, `"flatten"` does not,
  `"adaptive"` averages to a `grid x grid` map first (torchvision's VGG classifier input).

  `[B, H, W, C]` features to `[B, num_classes]` float32 logits, through optional hidden
  dense layers with ReLU (`hidden=(4096, 4096)` with `"adaptive"` is VGG's classifier at
  every size, with `"flatten"` at 224 px only).
  """

  num_classes: int
  kind: str = "gap"
  dtype: Any = jnp.float32
  hidden: Sequence[int] = ()
  grid: int = 7

  @nn.compact
  def __call__(self, x):
    if self.kind == "gap":
      x = GlobalAvgPool(name="gap")(x)
    elif self.kind == "adaptive":
      x = AdaptiveAvgPool(self.grid, name="adaptive")(x)
      x = x.reshape((x.shape[0], -1))  # Not `Flatten`: geometry's pool row spans the map.
    elif self.kind == "flatten":
      spatial = x.shape[1:3]
      x = Flatten(name="flatten")(x)
      first = "hidden0" if self.hidden else "dense"
      if self.has_variable("params", first):
        expected = self.get_variable("params", first)["kernel"].shape[0]
        if expected != x.shape[-1]:
          raise ValueError(
              f"The 'flatten' head was built for {expected} input features but got "
              f"{x.shape[-1]} (a {spatial[0]}x{spatial[1]} feature map): it only runs at the "
              "input size it was initialised at. Use head='gap' to run at every size."
          )
    else:
      raise ValueError(f"head must be one of {HEADS}, got {self.kind!r}.")
    for i, features in enumerate(self.hidden):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f"hidden{i}")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="dense")(x)
    return jnp.asarray(x, jnp.float32)
