"""Activation statistics as fastai's `ActivationStats`, recorded during training.

For every module that owns parameters itself (convolutions, batch norms, dense layers;
not the blocks that merely contain them), the output of one forward pass gives:

    mean, std (over every element of the output),
    near_zero = fraction of outputs <= 0.05,
    hist      = counts in 40 bins of width 0.25 over [0, 10] (10 itself in the last bin,
                values outside the range not counted), as torch.histc(o, 40, 0, 10).

With `relu=True` (as training records them) the output of every ReLU is summarised too,
as a layer `<module>/relu` (`relu1`, ... for a module's further ReLUs): the module that
applies it, e.g. `conv0/relu` after `conv0/bn`, or `stage1_block0/relu` after a
residual block's sum. There `near_zero` is the dead-unit measure: fastai's hooks read a
convolution's output, before batch norm and ReLU, where a bias-free convolution is about
half negative by sign alone. The ReLUs are found in the traced program (every
`jax.nn.relu`, wherever a model calls it), so no model declares them.

`activation_stats` is pure and jit-able; `stats_rows` turns its fetched output into the
JSON rows of `workdir/activation_stats.jsonl` (the ReLU rows have the same keys).
Reading them back, and the same statistics of a restored checkpoint:
`progressive.analysis.activations`.
"""

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

STATS_FILE = "activation_stats.jsonl"
HIST_BINS = 40
HIST_RANGE = (0.0, 10.0)
NEAR_ZERO = 0.05
RELU = "relu"  # The last part of a ReLU output's layer name.


def owns_params(module: nn.Module, method_name: str) -> bool:
  """`capture_intermediates` filter: `__call__` of a module holding parameter arrays itself."""
  if method_name != "__call__":
    return False
  params = module.variables.get("params", {})
  return any(not isinstance(v, Mapping) for v in params.values())


def _layer_names(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
  """`(path, outputs)` for every `__call__` entry of an `intermediates` collection."""
  for key, value in tree.items():
    if key == "__call__":
      yield prefix.rstrip("/"), value
    elif isinstance(value, Mapping):
      yield from _layer_names(value, f"{prefix}{key}/")


def summarize(x: jax.Array) -> dict[str, jax.Array]:
  """`mean`, `std`, `near_zero` (float32 scalars) and `hist` (float32 `[40]`) of any array."""
  x = jnp.asarray(x, jnp.float32).ravel()
  lo, hi = HIST_RANGE
  width = (hi - lo) / HIST_BINS
  index = jnp.clip(jnp.floor((x - lo) / width).astype(jnp.int32), 0, HIST_BINS - 1)
  inside = (x >= lo) & (x <= hi)
  hist = jnp.zeros((HIST_BINS,), jnp.float32).at[index].add(inside.astype(jnp.float32))
  return {
      "mean": jnp.mean(x),
      "std": jnp.std(x, ddof=1),  # torch's o.std(), as fastai computes it.
      "near_zero": jnp.mean((x <= NEAR_ZERO).astype(jnp.float32)),
      "hist": hist,
  }


def _capture(apply_fn, variables, images, train, module_filter):
  mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]
  _, state = apply_fn(
      {k: v for k, v in variables.items() if k != "intermediates"},
      images,
      train=train,
      mutable=mutable,
      capture_intermediates=module_filter,
  )
  return state["intermediates"]


def _is_relu(eqn) -> bool:
  """Whether a traced equation is `jax.nn.relu` (a `custom_jvp_call` of a `jit` named relu)."""
  if eqn.primitive.name != "custom_jvp_call":
    return False
  inner = eqn.params["call_jaxpr"].jaxpr
  return any(e.params.get("name") == RELU for e in inner.eqns)


def _module_path(eqn) -> str:
  """The path of the module that applied a traced equation, without the root module
  (flax names every module call in the name stack: `SimpleCNN/conv0` -> `conv0`)."""
  return "/".join(str(eqn.source_info.name_stack).split("/")[1:])


def with_relu_outputs(fn: Callable, *args) -> tuple[Any, dict[str, list[jax.Array]]]:
  """`fn(*args)` and the output of every ReLU it applies: `{layer name: [outputs]}`, the
  name `<module path>/relu` (`relu<i>` for the i-th further one of that module; `relu`
  alone at the top level). `fn` is traced once (`jax.make_jaxpr`) and its equations are
  evaluated one by one, so this is jit-able and computes one forward pass."""
  closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
  env = dict(zip(closed.jaxpr.constvars, closed.consts))
  env.update(zip(closed.jaxpr.invars, jax.tree.leaves(args)))

  def read(var):
    return var.val if isinstance(var, jex.core.Literal) else env[var]

  outputs, count = {}, {}
  for eqn in closed.jaxpr.eqns:
    bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before jax 0.7.
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    with eqn.ctx.manager:
      out = eqn.primitive.bind(*subfuns, *map(read, eqn.invars), **params)
    out = out if eqn.primitive.multiple_results else [out]
    env.update(zip(eqn.outvars, out))
    if _is_relu(eqn):
      path = _module_path(eqn)
      i = count[path] = count.get(path, -1) + 1
      name = "/".join(filter(None, [path, RELU + (str(i) if i else "")]))
      outputs.setdefault(name, []).append(out[0])
  result = jax.tree.unflatten(jax.tree.structure(shapes), [read(v) for v in closed.jaxpr.outvars])
  return result, outputs


def activation_stats(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    images: jax.Array,
    *,
    train: bool = False,
    module_filter: Callable[[nn.Module, str], bool] = owns_params,
    relu: bool = False,
) -> dict[str, dict[str, jax.Array]]:
  """Statistics of every parameter-owning layer's output on one batch, and with `relu`
  of every ReLU's output (`with_relu_outputs`: layers `<module>/relu`).

  `apply_fn` is a Linen `model.apply`, `variables` holds `params` (and `batch_stats`),
  `images` are model inputs `[B, H, W, C]` (already resized and normalised). With
  `train=True` batch norm normalises with the batch's statistics, as in a training
  step; the updated running statistics are discarded. Returns
  `{layer path: {"mean", "std", "near_zero": scalar, "hist": [40]}}`, all float32.
  A module called several times is summarised over all its outputs.
  """
  capture = functools.partial(_capture, apply_fn, train=train, module_filter=module_filter)
  if relu:
    captured, relus = with_relu_outputs(capture, variables, images)
  else:
    captured, relus = capture(variables, images), {}
  stats = {}
  for name, outputs in [*_layer_names(captured), *relus.items()]:
    leaves = [jnp.ravel(jnp.asarray(o, jnp.float32)) for o in jax.tree.leaves(outputs)]
    stats[name] = summarize(jnp.concatenate(leaves))
  return stats


def layer_names(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    images: jax.Array,
    *,
    module_filter: Callable[[nn.Module, str], bool] = owns_params,
) -> list[str]:
  """The layers `activation_stats` reports, in the order the model calls them.

  (Its output dict is ordered by name once it passes through `jit`.) Traced abstractly,
  nothing is computed; `images` may be a `jax.ShapeDtypeStruct`.
  """
  order = []

  def recording_filter(module, method_name):
    keep = module_filter(module, method_name)
    name = "/".join(module.path)
    if keep and name not in order:
      order.append(name)
    return keep

  jax.eval_shape(
      lambda v, x: _capture(apply_fn, v, x, False, recording_filter), variables, images
  )
  return order


def is_relu(layer: str) -> bool:
  """Whether a recorded layer is a ReLU's output (`conv0/relu`, `head/relu1`, `relu`)."""
  return re.fullmatch(RELU + r"\d*", layer.rpartition("/")[2]) is not None


def natural_key(name: str) -> list:
  """Sort key that puts `conv2` before `conv10`."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def stats_rows(
    stats: Mapping[str, Mapping[str, Any]],
    *,
    step: int,
    stage: int,
    size: int,
    order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
  """JSON-able rows, one per layer: `{"step", "stage", "size", "layer", "mean", "std",
  "near_zero", "hist": [40 floats]}`, in `order` (default: natural order of the names).
  A layer of `stats` that `order` lacks (a ReLU's output, `layer_names` lists the
  parameter-owning layers) follows the last layer of `order` inside its module (the
  ReLU of `conv0` after `conv0/bn`), else comes last."""
  if order is None:
    names = sorted(stats, key=natural_key)
  else:
    names = [n for n in order if n in stats]
    for extra in sorted((n for n in stats if n not in names), key=natural_key):
      module = extra.rpartition("/")[0]
      inside = [i for i, n in enumerate(names) if module and n.startswith(module + "/")]
      names.insert(inside[-1] + 1 if inside else len(names), extra)
  rows = []
  for name in names:
    s = stats[name]
    rows.append({
        "step": int(step),
        "stage": int(stage),
        "size": int(size),
        "layer": name,
        "mean": float(s["mean"]),
        "std": float(s["std"]),
        "near_zero": float(s["near_zero"]),
        "hist": [float(v) for v in np.asarray(s["hist"])],
    })
  return rows
