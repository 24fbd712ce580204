"""FLOPs counted from a model's traced architecture, the same on every backend.

`forward_macs(model, size)` traces `model.apply` on one `[1, size, size, 3]` image
(`jax.make_jaxpr` of abstract shapes: nothing is compiled or run) and adds up the
multiply-adds of every convolution (`conv_general_dilated`) and matrix product
(`dot_general`, the dense layers) in the program, from their shapes alone:

    conv:  output elements * (kernel elements / output channels)
           (= out_h * out_w * c_out * k_h * k_w * c_in / groups)
    dense: output elements * the contracted size   (= c_in * c_out for one image)

Pooling, blurring, batch norm and the activations are not counted (their cost is linear
in the activations, small beside the convolutions'). A multiply-add is 2 FLOPs, as XLA
counts them. `train_flops` is the standard convention for training: the backward pass
costs twice the forward (gradients with respect to the activations and to the weights),
so one training image costs `3 * 2 * forward_macs` FLOPs. Because the count reads shapes
and not a compiled program, it does not depend on the backend, the device or XLA's
fusion choices, unlike XLA's own `cost_analysis` (which the sweeps keep beside it).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp

from progressive import models

COUNTED = ("conv_general_dilated", "dot_general")
BACKWARD_FACTOR = 2  # Backward FLOPs per forward FLOP, by the standard convention.


def _eqn_macs(eqn) -> int:
  """Multiply-adds of one convolution or matrix product (0 for any other equation)."""
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    out = eqn.outvars[0].aval.shape
    kernel = eqn.invars[1].aval.shape
    out_channels = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
    return math.prod(out) * math.prod(kernel) // out_channels
  if name == "dot_general":
    (contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
  return 0


def _module_path(eqn) -> str:
  """The module that applied an equation, without the root (`SimpleCNN/conv0/conv` -> `conv0/conv`)."""
  return "/".join(str(eqn.source_info.name_stack).split("/")[1:])


def _count(jaxpr, times: int, out: dict[str, int]) -> None:
  for eqn in jaxpr.eqns:
    macs = _eqn_macs(eqn)
    if macs:
      path = _module_path(eqn)
      out[path] = out.get(path, 0) + times * macs
    inner = list(jex.core.jaxprs_in_params(eqn.params))
    if not inner:
      continue
    if eqn.primitive.name == "while":
      counted = {}
      for sub in inner:
        _count(sub, 1, counted)
      if counted:
        raise ValueError("A while loop around convolutions or matrix products has no fixed trip "
                         "count: its FLOPs cannot be counted from the architecture.")
    elif eqn.primitive.name == "cond":  # The costliest branch.
      branches = []
      for sub in inner:
        branches.append({})
        _count(sub, times, branches[-1])
      for path, macs in max(branches, key=lambda b: sum(b.values())).items():
        out[path] = out.get(path, 0) + macs
    else:  # jit, custom_jvp_call, remat, ...; a scan runs its body `length` times.
      for sub in inner:
        _count(sub, times * int(eqn.params.get("length", 1)), out)


def traced_macs(fn: Callable, *args) -> dict[str, int]:
  """Multiply-adds of every convolution and matrix product of `fn(*args)`, by the module
  path that applies them (`{"conv0/conv": ..., "head/dense": ...}`). `args` may be
  `jax.ShapeDtypeStruct`s: only shapes are read."""
  out = {}
  _count(jax.make_jaxpr(fn)(*args).jaxpr, 1, out)
  return out


def layer_macs(model: Any, size: int, channels: int = 3) -> dict[str, int]:
  """Per layer, the multiply-adds of one `[size, size, channels]` image through `model`
  (a Flax module taking `[B, H, W, C]`; inference mode, the same layers as training).
  Remembered per model and size (a sweep counts them for every point)."""
  try:
    hash(model)
  except TypeError:  # A module with a field that cannot be hashed: counted afresh.
    return _layer_macs.__wrapped__(model, int(size), int(channels))
  return dict(_layer_macs(model, int(size), int(channels)))


@functools.lru_cache(maxsize=64)
def _layer_macs(model: Any, size: int, channels: int) -> dict[str, int]:
  image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  return traced_macs(lambda v, x: model.apply(v, x), variables, image)


def forward_macs(model: Any, size: int, channels: int = 3) -> int:
  """Multiply-adds of one image's forward pass at `size` (`layer_macs`, summed)."""
  return sum(layer_macs(model, size, channels).values())


def train_flops(model: Any, size: int, channels: int = 3) -> int:
  """Training FLOPs of one image at `size`: forward and backward, `(1 + 2) * 2 * forward_macs`
  (a multiply-add is 2 FLOPs; backward is twice the forward, by the standard convention)."""
  return (1 + BACKWARD_FACTOR) * 2 * forward_macs(model, size, channels)


def config_train_flops(model_config, size: int, num_classes: int, channels: int = 3) -> int:
  """`train_flops` of the model a config's `model` group builds (`models.build`): what a
  sweep file needs to give one arm another arm's training FLOPs. Remembered as
  `layer_macs` is (a sweep file's hooks ask again for the same arms)."""
  return train_flops(models.build(model_config, num_classes=num_classes), size, channels)
