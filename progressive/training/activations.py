"""Activation statistics as fastai's `ActivationStats`, recorded during training.

For every module that owns parameters itself (convolutions, batch norms, dense layers;
not the blocks that merely contain them), the output of one forward pass gives:

    mean, std (over every element of the output),
    near_zero = fraction of outputs <= 0.05,
    hist      = counts in 40 bins of width 0.25 over [0, 10] (10 itself in the last bin,
                values outside the range not counted), as torch.histc(o, 40, 0, 10).

`activation_stats` is pure and jit-able; `stats_rows` turns its fetched output into the
JSON rows of `workdir/activation_stats.jsonl`. Reading them back, and the same statistics
of a restored checkpoint: `progressive.analysis.activations`.
"""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STATS_FILE = "activation_stats.jsonl"
HIST_BINS = 40
HIST_RANGE = (0.0, 10.0)
NEAR_ZERO = 0.05


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


def activation_stats(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    images: jax.Array,
    *,
    train: bool = False,
    module_filter: Callable[[nn.Module, str], bool] = owns_params,
) -> dict[str, dict[str, jax.Array]]:
  """Statistics of every parameter-owning layer's output on one batch.

  `apply_fn` is a Linen `model.apply`, `variables` holds `params` (and `batch_stats`),
  `images` are model inputs `[B, H, W, C]` (already resized and normalised). With
  `train=True` batch norm normalises with the batch's statistics, as in a training
  step; the updated running statistics are discarded. Returns
  `{layer path: {"mean", "std", "near_zero": scalar, "hist": [40]}}`, all float32.
  A module called several times is summarised over all its outputs.
  """
  captured = _capture(apply_fn, variables, images, train, module_filter)
  stats = {}
  for name, outputs in _layer_names(captured):
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
  "near_zero", "hist": [40 floats]}`, in `order` (default: natural order of the names)."""
  names = [n for n in order if n in stats] if order is not None else sorted(stats, key=natural_key)
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
