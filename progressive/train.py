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
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from progressive import checkpoints, compilation, models, optim, schedules
from progressive.config_validation import validate
from progressive.data import pipeline
from progressive.analysis import activations
from progressive.data.resize import resize_images
from progressive.metrics import MetricsWriter, read_rows

AXIS = "batch"



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


def train_step(
    state: TrainState,
    batch,
    *,
    size: int,
    mean,
    std,
    skip_nonfinite: bool = False,
    axis_name: str = AXIS,
):
  """One SGD step on this device's shard of the global batch.

  The loss is the mean over the global batch (`pmean` of the local means), so its
  gradient with respect to the replicated parameters is the average of the per-device
  gradients: under `shard_map`, JAX sums the cotangents of a replicated input over the
  axis itself. Batch-norm statistics are reduced over the axis by the model
  (`bn_axis_name`). N devices thus compute what one device would on the whole batch.
  With `skip_nonfinite`, a step whose loss or gradients are not finite leaves the
  parameters, batch statistics and optimiser state as they were (only `step` advances)
  and counts itself in the `skipped` metric.
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
  new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  hyperparams = new_state.opt_state.hyperparams
  metrics = {
      "loss": loss,
      "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), axis_name),
      "lr": hyperparams["learning_rate"],
      "momentum": hyperparams["momentum"],
  }
  if skip_nonfinite:
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    )
    kept = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        (new_state.params, new_state.batch_stats, new_state.opt_state),
        (state.params, state.batch_stats, state.opt_state),
    )
    new_state = new_state.replace(params=kept[0], batch_stats=kept[1], opt_state=kept[2])
    metrics["skipped"] = 1 - finite.astype(jnp.int32)
  return new_state, metrics


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


def make_train_step(mesh: jax.sharding.Mesh, mean, std, *, skip_nonfinite: bool = False) -> Callable:
  """The data-parallel step, jitted once: `(state, batch, size) -> (state, metrics)`.

  `size` is static: each distinct stage size (and batch shape) is its own compile. The
  input state is donated.
  """

  def parallel_train_step(state, batch, size):
    per_device = functools.partial(
        train_step, size=size, mean=mean, std=std, skip_nonfinite=skip_nonfinite
    )
    return jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P())
    )(state, batch)

  return jax.jit(parallel_train_step, static_argnums=2, donate_argnums=0)


def make_eval_step(mean, std) -> Callable:
  """`(state, batch, size) -> per-example outputs`, jitted; sharded like its inputs."""

  def parallel_eval_step(state, batch, size):
    return eval_step(state, batch, size=size, mean=mean, std=std)

  return jax.jit(parallel_eval_step, static_argnums=2)


def make_stats_step(model, mean, std) -> Callable:
  """`(state, batch, size) -> activation statistics` of every layer with parameters on a
  training batch, batch norm in training mode (fastai's ActivationStats), jitted.

  `model` is built without `bn_axis_name`: under `jit` the batch statistics of a sharded
  batch are reduced over the whole global batch anyway.
  """

  def activation_stats_step(state, batch, size):
    images = preprocess(batch["image"], size, mean, std)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return activations.activation_stats(model.apply, variables, images, train=True)

  return jax.jit(activation_stats_step, static_argnums=2)


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

  def fill(self):
    """Tops the queue up to `depth` batches on the device."""
    while len(self._queue) < self._depth:
      state = copy.deepcopy(self._iterator.get_state())
      self._queue.append((state, shard_batch(next(self._iterator), self._sharding)))

  def __iter__(self):
    return self

  def __next__(self):
    self.fill()
    _, batch = self._queue.popleft()
    self.fill()
    return batch

  @property
  def state(self) -> dict:
    self.fill()
    return self._queue[0][0]

  def close(self) -> None:
    """Stops the data iterator's threads or worker processes (and frees their memory)."""
    self._queue.clear()
    if hasattr(self._iterator, "close"):
      self._iterator.close()


def evaluate(
    state: TrainState,
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

  `split` is this process's shard of the split and `batch_size` the global eval batch;
  in a multi-process run `num_examples` (the whole split) fixes how many batches every
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
  mask = host["mask"]
  rows = []
  for size, fetched in jax.device_get(outputs).items():
    results = {k: np.concatenate([np.asarray(x) for x in v]) for k, v in fetched.items()}
    correct = (results["prediction"] == host["label"])[mask]
    row = {
        "size": int(size),
        "accuracy": float(correct.mean()),
        "loss": float(results["loss"][mask].mean()),
        "examples": int(mask.sum()),
    }
    if info.family_names is not None:
      family = host["family"][mask]
      for f, name in enumerate(info.family_names):
        row[f"accuracy_{name}"] = float(correct[family == f].mean())
    rows.append(row)
  return rows


def initialize_distributed(config: Mapping[str, Any]) -> None:
  """Joins a multi-process run when `config.distributed` (or the launcher) asks for it.

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


class WorkdirError(RuntimeError):
  """The workdir cannot hold this run (unwritable, or another run's config)."""


class MemoryLimitError(RuntimeError):
  """A stage's compiled step needs more device memory than the device has."""


def ensure_writable(workdir: epath.Path) -> None:
  """Creates `workdir` if needed; `WorkdirError` if nothing can be written there."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(
        f"Cannot write to --workdir={workdir} ({e.strerror or e}). Choose a writable "
        "directory, or fix its permissions."
    ) from None


def check_workdir(workdir: epath.Path, config: ml_collections.ConfigDict, *, force: bool = False):
  """Makes sure `workdir` can take this run, then writes `config.json`.

  A workdir holding another config is refused with the differing fields; with `force`
  the old `config.json` is kept as `config.<time>.json` and the new one written.
  """
  ensure_writable(workdir)
  path = workdir / "config.json"
  new = json.loads(config.to_json())
  primary = jax.process_index() == 0
  if path.exists():
    old = json.loads(path.read_text())
    differences = checkpoints.config_differences(old, new, ignore=checkpoints.RUN_CONTROL_FIELDS)
    if differences and not force:
      details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differences.items())
      raise WorkdirError(
          f"{workdir} holds a run with a different config ({details}). Use a new "
          "--workdir, rerun with the config in its config.json, or pass --force to "
          "continue this run under the new config."
      )
    if differences and primary:
      backup = workdir / f"config.{time.strftime('%Y%m%d-%H%M%S')}.json"
      path.rename(backup)
      print(f"--force: the previous config is kept as {backup}.")
  if primary:  # Written whole then renamed, so other processes never read half of it.
    tmp = workdir / "config.json.tmp"
    tmp.write_text(json.dumps(new, indent=2) + "\n")
    tmp.replace(path)


def device_memory_limit() -> int | None:
  """Bytes of memory on the first local device, where the backend reports it (GPU, TPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def check_memory(compiled, stage: schedules.Stage) -> None:
  """Refuses a compiled step that cannot fit in device memory, before it runs."""
  limit = device_memory_limit()
  analysis = compiled.memory_analysis()
  if limit is None or analysis is None:
    return
  needed = (
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      + analysis.temp_size_in_bytes
      - analysis.alias_size_in_bytes
  )
  if needed > limit:
    raise MemoryLimitError(
        f"Stage {stage.index} ({stage.size}px, batch {stage.batch_size}) needs about "
        f"{needed / 2**30:.2f} GiB per device but the device has {limit / 2**30:.2f} GiB. "
        f"Lower config.stages[{stage.index}].batch_size, or use "
        "--config.model.dtype=bfloat16."
    )


class _StopSignals:
  """Turns SIGTERM and SIGINT into a request to checkpoint at the next step boundary.

  A second SIGINT interrupts at once. Handlers are only installed from the main thread
  (Python allows no other) and are restored on exit.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    print(f"\nReceived {signal.Signals(signum).name}: saving a checkpoint at the next step.")

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def requested(self, *, can_sync: bool) -> int | None:
    """The signal to stop for, if any. With several processes they must agree, which
    takes a collective: only asked where all processes are (`can_sync`), e.g. at a
    logging step; any process's signal stops them all."""
    if jax.process_count() == 1:
      return self.signum
    if not can_sync:
      return None
    signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(signums)) or None


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


class _TrainMetrics:
  """Step metrics left on the device until fetched: every N steps, or before a
  checkpoint or an evaluation, so a checkpoint never holds a non-finite state."""

  def __init__(self, writer: MetricsWriter):
    self._writer = writer
    self._pending = []
    self._since = time.perf_counter()
    self.last_finite_loss = None

  def add(self, metrics) -> None:
    self._pending.append(metrics)

  def flush(self, step: int, stage: schedules.Stage, progress: _Progress) -> None:
    if not self._pending:
      return
    fetched = jax.device_get(self._pending)
    elapsed = time.perf_counter() - self._since
    first = step - len(fetched) + 1
    for offset, m in enumerate(fetched):
      loss = float(m["loss"])
      if np.isfinite(loss):
        self.last_finite_loss = loss
      elif not m.get("skipped"):
        raise NonFiniteLossError(
            f"Non-finite loss {loss} at step {first + offset} (stage {stage.index}, "
            f"{stage.size}px); the last finite loss was {self.last_finite_loss}. The last "
            "checkpoint holds the state before it. Lower config.opt.lr_max, or set "
            "config.skip_nonfinite=True to skip such steps."
        )
    row = dict(
        step=step,
        stage=stage.index,
        size=stage.size,
        loss=float(np.mean([m["loss"] for m in fetched])),
        accuracy=float(np.mean([m["accuracy"] for m in fetched])),
        lr=float(fetched[-1]["lr"]),
        momentum=float(fetched[-1]["momentum"]),
        images_per_sec=len(fetched) * stage.batch_size / elapsed,
        num_steps=len(fetched),  # The row averages steps (step - num_steps, step].
    )
    if "skipped" in fetched[0]:
      row["skipped"] = int(sum(int(m["skipped"]) for m in fetched))
    self._writer.write("train", **row)
    progress.update(
        len(fetched), loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}",
        img_s=f"{row['images_per_sec']:.0f}",
    )
    self._pending = []
    self._since = time.perf_counter()

  def restart_clock(self) -> None:
    self._since = time.perf_counter()


def build_state(config, info: pipeline.DatasetInfo, plan, mesh, *, schedule=None) -> TrainState:
  """The initial train state of `config`, initialised at the first stage's size and
  replicated over `mesh`; `schedule` = `(lr_fn, momentum_fn)` replaces the one-cycle."""
  model = models.build(config.model, num_classes=info.num_classes, bn_axis_name=AXIS)
  lr_fn, momentum_fn = schedule or schedules.make_schedules(
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
  return jax.device_put(state, NamedSharding(mesh, P()))


def _abstract_batch(batch_size: int, image_size: int, sharding: NamedSharding) -> dict:
  return {
      "image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8, sharding=sharding),
      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
  }


def submit_compiles(
    compiler: compilation.StageCompiler,
    train_fn: Callable,
    eval_fn: Callable,
    state,
    stages: Sequence[schedules.Stage],
    *,
    image_size: int,
    eval_sizes: Sequence[int],
    eval_batch_size: int,
    sharding: NamedSharding,
    stats_fn: Callable | None = None,
) -> None:
  """Queues the programs `stages` need, in the order they are needed: each stage's
  train step (and activation-statistics step), then the eval steps its end-of-stage
  evaluation adds."""
  abstract_state = compilation.abstract(state)
  eval_batch = _abstract_batch(eval_batch_size, image_size, sharding)
  for stage in stages:
    train_batch = _abstract_batch(stage.batch_size, image_size, sharding)
    key = (stage.size, stage.batch_size)
    compiler.submit(("train", *key), train_fn, (abstract_state, train_batch), stage.size)
    if stats_fn is not None:
      compiler.submit(("stats", *key), stats_fn, (abstract_state, train_batch), stage.size)
    for size in sorted({stage.size, *eval_sizes}):
      compiler.submit(("eval", size), eval_fn, (abstract_state, eval_batch), size)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, force: bool = False
) -> dict[str, Any]:
  """Trains through every stage of `config`, resuming from `workdir` if it holds a run.

  Returns a summary: the final `step`, the last `eval` rows, the `compile` rows of this
  invocation, the final `state`, and `interrupted` (the signal name) if SIGTERM or
  SIGINT stopped it after a checkpoint.
  """
  validate(config, jax.device_count())
  compilation.enable_persistent_cache(config.compilation_cache_dir)
  workdir = epath.Path(workdir)
  check_workdir(workdir, config, force=force)
  config_json = json.loads(config.to_json())
  process, processes = jax.process_index(), jax.process_count()
  log = print if process == 0 else lambda *args, **kwargs: None

  info = pipeline.dataset_info(config.data)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  total_steps = plan[-1].end
  mesh = make_mesh()
  batch_sharding = NamedSharding(mesh, P(AXIS))
  state = build_state(config, info, plan, mesh)

  mngr = checkpoints.manager(workdir, config.max_to_keep)
  step, data_state, data_stage = 0, None, None
  restored = checkpoints.restore_latest(mngr, workdir, state, config_json)
  if restored is not None:
    state, data_state, meta = restored
    step, data_stage = int(meta["step"]), int(meta["stage"])
  elif config.init_from:
    state = checkpoints.init_from(config.init_from, state)
    log(f"Initialised parameters from {config.init_from}.")
  if step >= total_steps:
    log(f"{workdir} holds a finished run ({step}/{total_steps} steps); nothing to train.")
    rows = read_rows(workdir / "metrics.jsonl")
    mngr.close()
    return {
        "step": step,
        "eval": [r for r in rows if r["event"] == "eval" and r["step"] == step],
        "compile": [],
        "state": state,
    }
  if step:
    log(f"Resuming {workdir} from step {step} (stage {data_stage}).")

  # Each process reads only its own shard of every split.
  train_split = pipeline.open_split(
      config.data, config.data.train_split, shard=process, num_shards=processes, train=True
  )
  eval_split = pipeline.open_split(
      config.data, config.data.eval_split, shard=process, num_shards=processes
  )

  writer = MetricsWriter(workdir, resume_step=step, active=process == 0)
  p_train_step = make_train_step(
      mesh, info.mean, info.std, skip_nonfinite=config.skip_nonfinite
  )
  p_eval_step = make_eval_step(info.mean, info.std)
  p_stats_step = None
  if config.activation_stats_every:
    stats_model = models.build(config.model, num_classes=info.num_classes)
    p_stats_step = make_stats_step(stats_model, info.mean, info.std)
    layer_order = activations.layer_names(
        stats_model.apply, {"params": state.params, "batch_stats": state.batch_stats},
        jax.ShapeDtypeStruct((1, plan[0].size, plan[0].size, 3), jnp.float32),
    )
  compiler = compilation.StageCompiler(background=config.compile_ahead)
  submit_compiles(
      compiler, p_train_step, p_eval_step, state, [s for s in plan if step < s.end],
      image_size=info.image_size, eval_sizes=config.eval_sizes,
      eval_batch_size=config.eval_batch_size, sharding=batch_sharding, stats_fn=p_stats_step,
  )
  summary = {"step": step, "eval": [], "compile": [], "state": state}

  def executable(key, stage: schedules.Stage):
    """The compiled program for `key`; logs its compile the first time it is used."""
    result, waited = compiler.get(key)
    if key not in logged_compiles:
      logged_compiles.add(key)
      kind, size = key[0], key[1]
      batch_size = config.eval_batch_size if kind == "eval" else key[2]
      if kind == "train":
        check_memory(result.executable, stage)
      summary["compile"].append(
          writer.write(
              "compile", step=step, stage=stage.index, kind=kind, size=size,
              batch_size=batch_size, seconds=result.seconds, waited=waited,
              cache_hit=result.cache_hit,
              # One call over the whole mesh, XLA's count (a train step's has the backward pass).
              flops=None if result.flops is None else result.flops * mesh.size,
          )
      )
      if kind == "train":
        log(
            f"Compiled stage {stage.index} ({size}px, batch {batch_size}) in "
            f"{result.seconds:.1f}s{' (cache hit)' if result.cache_hit else ''}; "
            f"waited {waited:.1f}s for it."
        )
    return result.executable

  logged_compiles = set()

  def run_eval(stage: schedules.Stage):
    sizes = sorted({stage.size, *config.eval_sizes})
    eval_fn = lambda state, batch, size: executable(("eval", size), stage)(state, batch)
    rows = evaluate(
        state, eval_fn, eval_split, sizes,
        batch_size=config.eval_batch_size, sharding=batch_sharding, info=info,
        num_examples=info.num_test,
    )
    for row in rows:
      writer.write("eval", step=step, stage=stage.index, split=config.data.eval_split, **row)
    return rows

  def save(stage: schedules.Stage, data_state):
    checkpoints.save(mngr, step, state, data_state, stage=stage.index, config_json=config_json)

  previous_stage_end, batches = None, None
  try:
    with _StopSignals() as stop:
      for stage in plan:
        if step >= stage.end:
          continue
        switch_start = time.perf_counter()
        step_fn = executable(("train", stage.size, stage.batch_size), stage)

        iterator = train_split.train_iterator(
            stage.batch_size // processes, seed=config.seed * 1009 + stage.index
        )
        if data_state is not None and data_stage == stage.index:
          iterator.set_state(data_state)
        batches = DevicePrefetch(iterator, batch_sharding)
        progress = _Progress(
            stage.num_steps, step - stage.start, f"stage {stage.index} ({stage.size}px)",
            config.progress_bar and process == 0,
        )
        metrics = _TrainMetrics(writer)
        batches.fill()
        writer.write(
            "stage", step=step, stage=stage.index, size=stage.size, batch_size=stage.batch_size,
            # From the last step of the previous stage (evaluation and checkpoint
            # included) to this stage's first step being ready to run.
            switch_seconds=None if previous_stage_end is None else time.perf_counter() - previous_stage_end,
            setup_seconds=time.perf_counter() - switch_start,
        )
        while step < stage.end:
          batch = next(batches)
          state, step_metrics = step_fn(state, batch)
          step += 1
          metrics.add(step_metrics)
          if config.activation_stats_every and step % config.activation_stats_every == 0:
            stats_fn = executable(("stats", stage.size, stage.batch_size), stage)
            stats = jax.device_get(stats_fn(state, batch))
            writer.write_activation_stats(
                activations.stats_rows(stats, step=step, stage=stage.index, size=stage.size, order=layer_order)
            )
          at_log = step % config.log_every_steps == 0 or step == stage.end
          if at_log:
            metrics.flush(step, stage, progress)
          if stop.requested(can_sync=at_log) and step < stage.end:
            metrics.flush(step, stage, progress)
            save(stage, batches.state)
            mngr.wait_until_finished()
            progress.close()
            name = signal.Signals(stop.requested(can_sync=True)).name
            log(
                f"Stopped by {name} at step {step} (stage {stage.index}); checkpoint saved "
                f"in {workdir / 'checkpoints'}. Run the same command again to resume."
            )
            summary.update(step=step, state=state, interrupted=name)
            return summary
          if config.eval_every_steps and step % config.eval_every_steps == 0 and step < stage.end:
            metrics.flush(step, stage, progress)
            run_eval(stage)
            metrics.restart_clock()
          if (
              config.checkpoint_every_steps
              and step % config.checkpoint_every_steps == 0
              and step < stage.end
          ):
            metrics.flush(step, stage, progress)
            save(stage, batches.state)
            metrics.restart_clock()
        previous_stage_end = time.perf_counter()  # The last flush waited for the device.
        progress.close()
        summary["eval"] = run_eval(stage)
        save(stage, batches.state)
        batches.close()
        accuracies = ", ".join(f"{r['size']}px {r['accuracy']:.3f}" for r in summary["eval"])
        log(f"Stage {stage.index} ({stage.size}px) done at step {step}: test accuracy {accuracies}")
  finally:
    if batches is not None:
      batches.close()
    compiler.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  summary.update(step=step, state=state)
  return summary
