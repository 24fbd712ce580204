"""Training with progressive resizing: state, pure steps, the stage loop, checkpoints.

`train_step` and `eval_step` are pure functions of the train state and a batch. The
data-parallel wrapper around `train_step` (`jax.shard_map` over a 1-D `"batch"` mesh,
under `jax.jit`) is built once per run; it is compiled ahead of time exactly once for
each distinct (stage size, batch size), and each compile is timed and logged.
"""

import collections
import copy
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from progressive import models, optim, schedules
from progressive.config_validation import ConfigError, validate
from progressive.data import pipeline
from progressive.data.resize import resize_images
from progressive.metrics import MetricsWriter, read_rows

AXIS = "batch"

# Fields that may change between invocations on one workdir: they steer the run's
# bookkeeping, not what it computes.
RUN_CONTROL_FIELDS = (
    "progress_bar",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "max_to_keep",
    "data.data_dir",
)


class TrainState(train_state.TrainState):
  batch_stats: Any = None


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def preprocess(images: jax.Array, size: int, mean, std) -> jax.Array:
  """uint8 `[B, S, S, 3]` to normalised float32 `[B, size, size, 3]` (a zoom, not a crop)."""
  images = resize_images(images, size) / 255.0
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def create_train_state(model, tx, rng: jax.Array, image_size: int) -> TrainState:
  """Initialises parameters (float32) and batch statistics at `image_size`."""
  variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=tx,
  )


def train_step(state: TrainState, batch, *, size: int, mean, std, axis_name: str = AXIS):
  """One SGD step on this device's shard of the global batch.

  The loss is the mean over the global batch (`pmean` of the local means), so its
  gradient with respect to the replicated parameters is the average of the per-device
  gradients: under `shard_map`, JAX sums the cotangents of a replicated input over the
  axis itself. Batch-norm statistics are reduced over the axis by the model
  (`bn_axis_name`). N devices thus compute what one device would on the whole batch.
  Returns the new state and the step's metrics (scalars, left on the device).
  """
  images = preprocess(batch["image"], size, mean, std)
  labels = batch["label"]

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        images,
        train=True,
        mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return jax.lax.pmean(loss, axis_name), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  hyperparams = state.opt_state.hyperparams
  metrics = {
      "loss": loss,
      "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), axis_name),
      "lr": hyperparams["learning_rate"],
      "momentum": hyperparams["momentum"],
  }
  return state, metrics


def eval_step(state: TrainState, batch, *, size: int, mean, std):
  """Per-example predictions and losses at `size` (no statistics updated)."""
  images = preprocess(batch["image"], size, mean, std)
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {"prediction": jnp.argmax(logits, -1), "loss": loss}


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: all) with the data-parallel axis `"batch"`."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def make_train_step(mesh: jax.sharding.Mesh, mean, std) -> Callable:
  """The data-parallel step, jitted once: `(state, batch, size) -> (state, metrics)`.

  `size` is static: each distinct stage size (and batch shape) is its own compile. The
  input state is donated.
  """

  def parallel_train_step(state, batch, size):
    per_device = functools.partial(train_step, size=size, mean=mean, std=std)
    return jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())
    )(state, batch)

  return jax.jit(parallel_train_step, static_argnums=2, donate_argnums=0)


def make_eval_step(mean, std) -> Callable:
  """`(state, batch, size) -> per-example outputs`, jitted; sharded like its inputs."""

  def parallel_eval_step(state, batch, size):
    return eval_step(state, batch, size=size, mean=mean, std=std)

  return jax.jit(parallel_eval_step, static_argnums=2)


def shard_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Host batch to global arrays split over the mesh's `"batch"` axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class DevicePrefetch:
  """Keeps `depth` batches already on the device ahead of the training step.

  `state` is the data iterator's state just before the next batch `next()` returns,
  so a checkpoint taken between steps resumes at exactly that batch.
  """

  def __init__(self, iterator: grain.DatasetIterator, sharding: NamedSharding, depth: int = 2):
    self._iterator = iterator
    self._sharding = sharding
    self._depth = depth
    self._queue = collections.deque()

  def _fill(self):
    while len(self._queue) < self._depth:
      state = copy.deepcopy(self._iterator.get_state())
      self._queue.append((state, shard_batch(next(self._iterator), self._sharding)))

  def __iter__(self):
    return self

  def __next__(self):
    self._fill()
    _, batch = self._queue.popleft()
    self._fill()
    return batch

  @property
  def state(self) -> dict:
    self._fill()
    return self._queue[0][0]


def evaluate(
    state: TrainState,
    eval_fn: Callable,
    arrays: Mapping[str, np.ndarray],
    sizes: Sequence[int],
    *,
    batch_size: int,
    sharding: NamedSharding,
    info: pipeline.DatasetInfo,
) -> list[dict[str, Any]]:
  """Accuracy and loss on a split at each size, with per-family accuracy if known."""
  rows = []
  for size in sizes:
    predictions, losses = [], []
    for batch in pipeline.eval_batches(arrays, batch_size):
      mask = batch.pop("mask")
      out = jax.device_get(eval_fn(state, shard_batch(batch, sharding), size))
      predictions.append(out["prediction"][mask])
      losses.append(out["loss"][mask])
    correct = np.concatenate(predictions) == arrays["label"]
    row = {"size": int(size), "accuracy": float(correct.mean()), "loss": float(np.concatenate(losses).mean())}
    if info.family_names is not None:
      for f, name in enumerate(info.family_names):
        row[f"accuracy_{name}"] = float(correct[arrays["family"] == f].mean())
    rows.append(row)
  return rows


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_workdir_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json`, or refuses a workdir that holds a run of another config."""
  path = workdir / "config.json"
  new = json.loads(config.to_json())
  if path.exists():
    old = _flatten(json.loads(path.read_text()))
    new_flat = _flatten(new)
    differing = sorted(
        k for k in set(old) | set(new_flat)
        if k not in RUN_CONTROL_FIELDS and old.get(k) != new_flat.get(k)
    )
    if differing:
      details = "; ".join(f"{k}: {old.get(k)!r} -> {new_flat.get(k)!r}" for k in differing)
      raise ConfigError(
          f"{workdir} holds a run with a different config ({details}). Use a new "
          "--workdir, or rerun with the config stored in its config.json."
      )
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(new, indent=2) + "\n")


def checkpoint_manager(workdir: epath.Path, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
  )


def save_checkpoint(mngr: ocp.CheckpointManager, step: int, state, data_state, stage: int):
  """Saves the train state, the data iterator's state and the stage at `step`."""
  mngr.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave({"step": step, "stage": stage}),
      ),
  )


def restore_checkpoint(mngr: ocp.CheckpointManager, step: int, state):
  """Restores what `save_checkpoint` wrote, laid out like `state`."""
  restored = mngr.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(state),
          data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore(),
      ),
  )
  return restored.state, restored.data, restored.meta


@dataclasses.dataclass
class _Progress:
  """A per-stage progress bar, or nothing when switched off."""

  total: int
  initial: int
  desc: str
  enabled: bool

  def __post_init__(self):
    self._bar = None
    if self.enabled:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

      self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, leave=True)

  def update(self, n: int, **postfix):
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix(postfix, refresh=False)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains through every stage of `config`, resuming from `workdir` if it holds a run.

  Returns a summary: the final step, the last eval rows and the compile rows of this
  invocation.
  """
  validate(config, jax.device_count())
  workdir = epath.Path(workdir)
  check_workdir_config(workdir, config)

  info = pipeline.dataset_info(config.data)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  total_steps = plan[-1].end
  mngr = checkpoint_manager(workdir, config.max_to_keep)
  latest = mngr.latest_step()
  if latest is not None and latest >= total_steps:
    print(f"{workdir} holds a finished run ({latest}/{total_steps} steps); nothing to train.")
    rows = read_rows(workdir / "metrics.jsonl")
    mngr.close()
    return {
        "step": latest,
        "eval": [r for r in rows if r["event"] == "eval" and r["step"] == latest],
        "compile": [],
    }

  train_arrays = pipeline.load_split(config.data, "train")
  test_arrays = pipeline.load_split(config.data, "test")

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(AXIS))
  model = models.build(config.model, num_classes=info.num_classes, bn_axis_name=AXIS)
  lr_fn, momentum_fn = schedules.make_schedules(
      plan,
      config.opt.lr_max,
      cycle=config.opt.cycle,
      div=config.opt.div,
      div_final=config.opt.div_final,
      pct_start=config.opt.pct_start,
      moms=tuple(config.opt.moms),
  )
  tx = optim.make_optimizer(config.opt, lr_fn, momentum_fn)
  state = create_train_state(model, tx, jax.random.key(config.seed), plan[0].size)
  state = jax.device_put(state, replicated)

  step, data_state, data_stage = 0, None, None
  if latest is not None:
    state, data_state, meta = restore_checkpoint(mngr, latest, state)
    step, data_stage = int(meta["step"]), int(meta["stage"])
    print(f"Resuming {workdir} from step {step} (stage {data_stage}).")

  writer = MetricsWriter(workdir, resume_step=step)
  p_train_step = make_train_step(mesh, info.mean, info.std)
  p_eval_step = make_eval_step(info.mean, info.std)
  compiled: dict[tuple[int, int], Any] = {}
  compile_rows, eval_rows = [], []
  eval_kwargs = dict(batch_size=config.eval_batch_size, sharding=batch_sharding, info=info)

  def run_eval(stage: schedules.Stage):
    sizes = sorted({stage.size, *config.eval_sizes})
    rows = evaluate(state, p_eval_step, test_arrays, sizes, **eval_kwargs)
    for row in rows:
      writer.write("eval", step=step, stage=stage.index, split="test", **row)
    return rows

  try:
    for stage in plan:
      if step >= stage.end:
        continue
      key = (stage.size, stage.batch_size)
      if key not in compiled:
        abstract_batch = {
            "image": jax.ShapeDtypeStruct(
                (stage.batch_size, info.image_size, info.image_size, 3), jnp.uint8,
                sharding=batch_sharding,
            ),
            "label": jax.ShapeDtypeStruct((stage.batch_size,), jnp.int32, sharding=batch_sharding),
        }
        start = time.perf_counter()
        compiled[key] = p_train_step.lower(state, abstract_batch, stage.size).compile()
        seconds = time.perf_counter() - start
        compile_rows.append(
            writer.write(
                "compile", step=step, stage=stage.index, size=stage.size,
                batch_size=stage.batch_size, seconds=seconds,
            )
        )
      step_fn = compiled[key]

      dataset = pipeline.train_dataset(
          train_arrays, stage.batch_size, seed=config.seed * 1009 + stage.index
      )
      iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
      if data_state is not None and data_stage == stage.index:
        iterator.set_state(data_state)
      batches = DevicePrefetch(iterator, batch_sharding)

      progress = _Progress(
          stage.num_steps, step - stage.start, f"stage {stage.index} ({stage.size}px)",
          config.progress_bar,
      )
      pending, interval_start = [], time.perf_counter()
      while step < stage.end:
        state, metrics = step_fn(state, next(batches))
        step += 1
        pending.append(metrics)
        if step % config.log_every_steps == 0 or step == stage.end:
          fetched = jax.device_get(pending)
          elapsed = time.perf_counter() - interval_start
          losses = [float(m["loss"]) for m in fetched]
          for offset, loss in enumerate(losses):
            if not np.isfinite(loss):
              raise NonFiniteLossError(
                  f"Non-finite loss {loss} at step {step - len(losses) + offset + 1} "
                  f"(stage {stage.index}, {stage.size}px)."
              )
          row = writer.write(
              "train",
              step=step,
              stage=stage.index,
              size=stage.size,
              loss=float(np.mean(losses)),
              accuracy=float(np.mean([m["accuracy"] for m in fetched])),
              lr=float(fetched[-1]["lr"]),
              momentum=float(fetched[-1]["momentum"]),
              images_per_sec=len(fetched) * stage.batch_size / elapsed,
          )
          progress.update(
              len(fetched), loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}",
              img_s=f"{row['images_per_sec']:.0f}",
          )
          pending, interval_start = [], time.perf_counter()
        if config.eval_every_steps and step % config.eval_every_steps == 0 and step < stage.end:
          run_eval(stage)
        if (
            config.checkpoint_every_steps
            and step % config.checkpoint_every_steps == 0
            and step < stage.end
        ):
          save_checkpoint(mngr, step, state, batches.state, stage.index)
      progress.close()
      eval_rows = run_eval(stage)
      save_checkpoint(mngr, step, state, batches.state, stage.index)
      summary = ", ".join(f"{r['size']}px {r['accuracy']:.3f}" for r in eval_rows)
      print(f"Stage {stage.index} ({stage.size}px) done at step {step}: test accuracy {summary}")
  finally:
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  return {"step": step, "eval": eval_rows, "compile": compile_rows, "state": state}
