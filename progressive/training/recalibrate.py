"""Batch-norm recalibration: every batch-norm layer's statistics recomputed at a test size.

Testing a network at another input size changes more than the objects' pixel size: every
feature map changes size and its share of zero-padded border, so the activation
statistics differ from the running averages batch norm stored at the training size.
FixRes (Touvron et al. 2019) recomputes them at the test resolution. `recalibrate`
does so exactly: the population mean and variance of each batch-norm layer's input over
N images (not a momentum update), each layer seeing the network in training mode as
batch norm's running averages do. Accuracy with the recalibrated statistics separates
what the features can do at a size from the stale statistics.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from progressive.data.resize import preprocess
from progressive.models.layers import BN_MOMENTUM


def has_batch_norm(variables: Mapping[str, Any]) -> bool:
  """Whether `variables` hold batch-norm statistics to recalibrate."""
  return bool(jax.tree.leaves(variables.get("batch_stats", {})))


def batch_moments(apply_fn: Callable, variables: Mapping[str, Any], inputs: jax.Array) -> dict:
  """Each batch-norm layer's batch mean and (biased) variance on `inputs` (normalised
  float `[B, H, W, 3]`), as a tree shaped like `variables["batch_stats"]`.

  Batch norm's update is `new = m * old + (1 - m) * batch`; run from zero statistics,
  `new / (1 - m)` is the batch's own.
  """
  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  _, updates = apply_fn(
      {"params": variables["params"], "batch_stats": zeros}, inputs, train=True,
      mutable=["batch_stats"],
  )
  return jax.tree.map(lambda x: x.astype(jnp.float32) / (1 - BN_MOMENTUM), updates["batch_stats"])


def _per_layer(fn: Callable, *trees):
  """`fn(*layers)` for each batch-norm layer (a `{"mean", "var"}` dict) of `batch_stats`
  trees of one shape, in a tree of the same shape."""
  first = trees[0]
  if isinstance(first, Mapping) and set(first) == {"mean", "var"}:
    return fn(*trees)
  return {key: _per_layer(fn, *(t[key] for t in trees)) for key in first}


@functools.lru_cache(maxsize=32)
def make_moments_fn(apply_fn: Callable, mean, std) -> Callable:
  """`(variables, uint8 images [B, S, S, 3], size) -> {"mean", "square"}` per batch-norm
  layer: the batch's mean and mean of squares at `size`; jitted once per (batch, size),
  one function per `apply_fn` (`models.build` makes one module per architecture) and
  normalisation in a process."""

  def moments(variables, images, size):
    batch = batch_moments(apply_fn, variables, preprocess(images, size, mean, std))
    return _per_layer(lambda l: {"mean": l["mean"], "square": l["var"] + l["mean"] ** 2}, batch)

  return jax.jit(moments, static_argnums=2)


def recalibrate(
    apply_fn: Callable,
    variables: Mapping[str, Any],
    images: np.ndarray,
    size: int,
    mean,
    std,
    *,
    batch_size: int = 256,
    moments_fn: Callable | None = None,
) -> dict[str, Any]:
  """`variables` with every batch-norm layer's `mean` and `var` replaced by the exact
  statistics of its input over `images` (uint8 `[N, S, S, 3]`, zoomed to `size` and
  normalised as in training), computed in batches of `batch_size`.

  The mean is the average of the batch means weighted by batch length; the variance is
  the population variance over all N images (`E[x^2] - E[x]^2`). The first layer's are
  thus exact whatever `batch_size`; deeper layers see earlier ones normalised by each
  batch's own statistics (training mode, as the running averages did), so theirs move
  slightly with the batching (a few percent at most for batches of tens of images). Variables
  without batch norm come back unchanged.
  """
  if not has_batch_norm(variables):
    return dict(variables)
  moments_fn = moments_fn or make_moments_fn(apply_fn, tuple(mean), tuple(std))
  images = np.asarray(images)
  if not len(images):
    raise ValueError("recalibrate needs at least one image.")
  chunks = (images[start:start + batch_size] for start in range(0, len(images), batch_size))
  return recalibrate_batches(moments_fn, variables, chunks, size)


def recalibrate_batches(moments_fn: Callable, variables: Mapping[str, Any], batches, size: int) -> dict:
  """`recalibrate` over `batches` of uint8 images (numpy, or global arrays sharded over a
  mesh: `moments_fn` is jitted, so each batch's moments are over the whole global batch),
  weighted by their length; `moments_fn` from `make_moments_fn`."""
  totals, count = None, 0
  for chunk in batches:
    moments = jax.device_get(moments_fn(variables, chunk, int(size)))
    n = len(chunk)
    weighted = jax.tree.map(lambda x: np.asarray(x, np.float64) * n, moments)  # noqa: B023
    totals = weighted if totals is None else jax.tree.map(np.add, totals, weighted)
    count += n
  if not count:
    raise ValueError("recalibrate needs at least one image.")

  def population(stored, total):
    m = total["mean"] / count
    v = np.maximum(total["square"] / count - m**2, 0.0)
    return {"mean": _like(m, stored["mean"]), "var": _like(v, stored["var"])}

  return {**variables, "batch_stats": _per_layer(population, variables["batch_stats"], totals)}


def _like(value: np.ndarray, reference) -> jax.Array:
  """`value` with the dtype and placement of `reference`."""
  value = value.astype(reference.dtype)
  sharding = getattr(reference, "sharding", None)
  return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
