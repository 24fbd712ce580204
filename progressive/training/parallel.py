"""Data parallelism: the `"batch"` mesh, the jitted `shard_map` wrappers of the steps,
batch sharding, device prefetch, multi-process start, and a stage's training iterator.

The wrappers are built once per process for each set of arguments (cached), and the
model and optimiser a state holds as static fields are too (`models.build`,
`train.build_state`), so the runs of a sweep that share an architecture, plan and
optimiser settings (a learning-rate grid, its seeds) share the traced and compiled steps.
`size` is a static argument, so each distinct (stage size, batch size) is one compile.
"""

import collections
import copy
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from progressive.training import mixing, steps
from progressive.training.steps import AXIS


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: all) with the data-parallel axis `"batch"`."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Arrays split along their first (batch) dimension over the mesh."""
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@functools.lru_cache(maxsize=32)
def make_train_step(mesh: jax.sharding.Mesh, mean, std, *, skip_nonfinite: bool = False,
                    objective: mixing.Objective = mixing.PLAIN) -> Callable:
  """The data-parallel step, jitted once: `(state, batch, size) -> (state, metrics)`.

  `size` is static: each distinct stage size (and batch shape) is its own compile. The
  input state is donated. `objective`: label smoothing, mixup and CutMix (each device
  mixes its own shard).
  """

  def parallel_train_step(state, batch, size):
    per_device = functools.partial(
        steps.train_step, size=size, mean=mean, std=std, skip_nonfinite=skip_nonfinite,
        objective=objective,
    )
    return jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())
    )(state, batch)

  return jax.jit(parallel_train_step, static_argnums=2, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def make_eval_step(mean, std, *, tta: str = "none") -> Callable:
  """`(state, batch, size) -> per-example outputs`, jitted; sharded like its inputs;
  `tta` as `steps.eval_step` takes it."""

  def parallel_eval_step(state, batch, size):
    return steps.eval_step(state, batch, size=size, mean=mean, std=std, tta=tta)

  return jax.jit(parallel_eval_step, static_argnums=2)


@functools.lru_cache(maxsize=32)
def make_stats_step(model, mean, std) -> Callable:
  """`(state, batch, size) -> activation statistics`, jitted.

  `model` is built without `bn_axis_name`: under `jit` the batch statistics of a sharded
  batch are reduced over the whole global batch anyway.
  """

  def parallel_stats_step(state, batch, size):
    return steps.activation_stats_step(model.apply, state, batch, size=size, mean=mean, std=std)

  return jax.jit(parallel_stats_step, static_argnums=2)


def shard_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Host batch to global arrays split over the mesh's `"batch"` axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class DevicePrefetch:
  """Keeps `depth` batches already on the device ahead of the training step.

  `state` is the data iterator's state just before the next batch `next()` returns,
  so a checkpoint taken between steps resumes at exactly that batch. A batch's
  `"unreadable"` flags (examples a readable neighbour stood in for) stay on the host and
  are counted in `unreadable`; `first_images` keeps a few images of the first batch (for
  TensorBoard's view of what the pipeline made).
  """

  def __init__(self, iterator: grain.DatasetIterator, sharding: NamedSharding, depth: int = 2,
               num_shown: int = 16):
    self._iterator = iterator
    self._sharding = sharding
    self._depth = depth
    self._queue = collections.deque()
    self._next_state = None  # The iterator's state before the batch being read.
    self._num_shown = num_shown
    self.first_images: np.ndarray | None = None
    self.unreadable = 0

  def fill(self):
    """Tops the queue up to `depth` batches on the device."""
    while len(self._queue) < self._depth:
      self._next_state = copy.deepcopy(self._iterator.get_state())
      batch = dict(next(self._iterator))
      self.unreadable += int(np.sum(batch.pop("unreadable", 0)))
      if self.first_images is None:
        self.first_images = np.asarray(batch["image"][:self._num_shown])
      self._queue.append((self._next_state, shard_batch(batch, self._sharding)))

  def __iter__(self):
    return self

  def __next__(self):
    self.fill()
    item = self._queue.popleft()
    try:
      self.fill()
    except BaseException:
      self._queue.appendleft(item)  # Not trained on: `resume_state` is still before it.
      raise
    return item[1]

  @property
  def state(self) -> dict:
    self.fill()
    return self._queue[0][0]

  @property
  def resume_state(self) -> dict | None:
    """The state before the next batch, without reading more (for a checkpoint when
    reading failed)."""
    return self._queue[0][0] if self._queue else self._next_state

  def close(self) -> None:
    """Stops the data iterator's threads or worker processes (and frees their memory)."""
    self._queue.clear()
    if hasattr(self._iterator, "close"):
      self._iterator.close()


def stage_seed(seed: int, stage_index: int) -> int:
  """The data-order and augmentation seed of stage `stage_index` of a run seeded `seed`."""
  return seed * 1009 + stage_index


def stage_batches(
    train_split, config_seed: int, stage, sharding: NamedSharding, *,
    data_state: dict | None = None,
) -> DevicePrefetch:
  """The training batches of `stage` (a `schedules.Stage`), on the devices: this
  process's share of each global batch, in the stage's order (`stage_seed`), decoded at
  the stage's size where the split decodes on the host, from `data_state` if resuming."""
  iterator = train_split.train_iterator(
      stage.batch_size // jax.process_count(), seed=stage_seed(config_seed, stage.index),
      size=stage.size,
  )
  if data_state is not None:
    iterator.set_state(data_state)
  return DevicePrefetch(iterator, sharding)


def initialize_distributed(config: Mapping[str, Any]) -> bool:
  """Joins a multi-process run when `config.distributed` (or the launcher) asks for it;
  whether it did.

  With `initialize=True` and no address, `jax.distributed.initialize()` reads the
  cluster from the environment (Cloud TPU, Slurm, Open MPI, Kubernetes); otherwise the
  coordinator address, process count and id come from the config. Must run before
  anything else touches JAX devices.
  """
  explicit = {
      k: config[k] for k in ("coordinator_address", "num_processes", "process_id")
      if config[k] is not None
  }
  if config["initialize"] or explicit or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(**explicit)
    return True
  return False


def shutdown_distributed() -> None:
  """Leaves a finished multi-process run together: every process waits at JAX's shutdown
  barrier, then process 0 stops the coordination service. Left to JAX's exit handler,
  process 0 once aborted there in gRPC (`server.cc: Check failed: queue.Pop() ==
  nullptr`, SIGABRT) after a run that had finished and written everything."""
  jax.distributed.shutdown()


def is_primary() -> bool:
  """The process that writes files and prints (process 0)."""
  return jax.process_index() == 0


def log(*args, **kwargs) -> None:
  """`print` on the primary process only."""
  if is_primary():
    print(*args, **kwargs)
