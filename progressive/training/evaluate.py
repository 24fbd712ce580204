"""Evaluation of a split at several sizes (per-family accuracy from
`progressive.data.families`), and its batch-norm control (`Recalibrated`)."""

import collections
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from progressive.data import pipeline
from progressive.data.families import breakdown
from progressive.training import recalibrate
from progressive.training.parallel import shard_batch


def evaluate(
    state,
    eval_fn: Callable,
    split: pipeline.Split,
    sizes: Sequence[int],
    *,
    batch_size: int,
    sharding: NamedSharding,
    info: pipeline.DatasetInfo,
    num_examples: int | None = None,
) -> list[dict[str, Any]]:
  """Accuracy and loss on a split at each size, with per-family accuracy if known.

  `eval_fn(state, batch, size)` returns per-example `prediction` and `loss` (of the
  test-time-augmented softmax if it was built with one: `steps.eval_step`). `split` is
  this process's shard of the split and `batch_size` the global eval batch; in a
  multi-process run `num_examples` (the whole split) fixes how many batches every
  process runs, and the per-example results are gathered from all processes. Each batch
  is read, decoded and put on the devices once for all sizes; the per-example outputs
  stay on the devices until one fetch at the end.
  """
  processes = jax.process_count()
  local_batch = batch_size // processes
  per_process = -(-(num_examples or split.num_examples) // processes)
  num_batches = -(-per_process // local_batch)
  outputs = {size: collections.defaultdict(list) for size in sizes}
  host_values = collections.defaultdict(list)
  for batch in split.eval_batches(local_batch, num_batches):
    host = {k: batch.pop(k) for k in list(batch) if k != "image"}
    device_batch = shard_batch({"image": batch["image"], "label": host["label"]}, sharding)
    for size in sizes:
      out = eval_fn(state, device_batch, size)
      if processes > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
      for key, value in out.items():
        outputs[size][key].append(value)
    if processes > 1:
      host = multihost_utils.process_allgather(host, tiled=True)
    for key, value in host.items():
      host_values[key].append(np.asarray(value))
  host = {k: np.concatenate(v) for k, v in host_values.items()}
  # Test images that could not be decoded (data.skip_unreadable) are left out of every
  # figure: the neighbour that stood in for one would count twice.
  unreadable = host.pop("unreadable", np.zeros_like(host["mask"], np.int32)) != 0
  mask = host["mask"] & ~unreadable
  labels = host["label"][mask]
  rows = []
  for size, fetched in jax.device_get(outputs).items():
    results = {k: np.concatenate([np.asarray(x) for x in v]) for k, v in fetched.items()}
    correct = results["prediction"][mask] == labels
    row = {
        "size": int(size),
        "accuracy": float(correct.mean()),
        "loss": float(results["loss"][mask].mean()),
        "examples": int(mask.sum()),
    }
    if unreadable.any():
      row["unreadable"] = int(unreadable.sum())
    for name, accuracy in breakdown(correct, labels, info)["family"].items():
      row[f"accuracy_{name}"] = accuracy
    rows.append(row)
  return rows


class Recalibrated:
  """The end-of-stage control for batch-norm statistics: accuracy at a size with every
  batch-norm layer's statistics recomputed at that size (`progressive.training.recalibrate`) from
  `num_images` training images (rounded up to whole eval batches; the eval transform, no
  augmentation), read once per run and kept on the devices.

  `model` is built without `bn_axis_name` (under `jit` the moments of a sharded batch are
  over the whole global batch).
  """

  def __init__(self, model, config, info: pipeline.DatasetInfo, sharding: NamedSharding):
    self._moments = recalibrate.make_moments_fn(model.apply, tuple(info.mean), tuple(info.std))
    processes = jax.process_count()
    split = pipeline.open_split(config.data, config.data.train_split, shard=jax.process_index(),
                                num_shards=processes)
    batch = config.eval_batch_size
    count = min(-(-config.eval_bn_images // batch), max(1, -(-info.num_train // batch)))
    devices = sharding.mesh.size // processes  # Each process's share divides over its devices.
    self.batches = []
    for b in split.eval_batches(batch // processes, count):
      # A last batch short of images (a training split smaller than the eval batch) is
      # cut to whole rows of devices; in a multi-process run only full batches are used,
      # since every process must hold the same shapes.
      keep = len(b["mask"]) if b["mask"].all() else (
          0 if processes > 1 else int(b["mask"].sum()) // devices * devices)
      if keep:
        self.batches.append(shard_batch({"image": b["image"][:keep]}, sharding)["image"])
    self.num_images = sum(len(b) for b in self.batches)

  def rows(self, state, eval_fn: Callable, split: pipeline.Split, sizes: Sequence[int], **kwargs):
    """`{size: {"accuracy_bn": ..., "accuracy_bn_<family>": ...}}` at each of `sizes`, the
    statistics recomputed there; `kwargs` as `evaluate` takes them."""
    out = {}
    for size in sizes:
      variables = recalibrate.recalibrate_batches(
          self._moments, {"params": state.params, "batch_stats": state.batch_stats}, self.batches, size)
      row = evaluate(state.replace(batch_stats=variables["batch_stats"]), eval_fn, split, [size], **kwargs)[0]
      out[size] = {k.replace("accuracy", "accuracy_bn"): v for k, v in row.items() if k.startswith("accuracy")}
    return out
