r"""fastai's learning-rate range test (`Learner.lr_find`) on the training machinery.

From the config's initial state, the LR grows exponentially from `--start_lr` to
`--end_lr` over `--num_steps` steps of the real data-parallel training step (same model,
optimiser, weight decay and data order as the first stage; momentum held at
`config.opt.moms[0]`). It records the loss and fastai's smoothed loss, stops once the
smoothed loss passes 4x its minimum, and suggests LRs as fastai does. Writes only
`lr_find.json` into the workdir. `progressive lr-find` runs it. See docs/LR_FIND.md.
"""

import json
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from progressive import config as config_lib
from progressive import models, schedules
from progressive.config import ConfigError, validate
from progressive.data import pipeline
from progressive.training import compilation, mixing, parallel, train
from progressive.training import workdir as workdir_lib
from progressive.training.parallel import log

DIVERGENCE = 4.0  # fastai stops once the smoothed loss exceeds 4x its minimum so far.
SKIP_END = 5  # fastai leaves the last 5 points out of its suggestions and its plot.
RECOMMENDED = "minimum"  # The suggestion printed as the one-cycle lr_max.


def exponential_lrs(start_lr: float, end_lr: float, num_steps: int) -> np.ndarray:
  """`[num_steps]` float64: `start * (end / start) ** (i / (num_steps - 1))`."""
  i = np.arange(num_steps, dtype=np.float64)
  return start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))


def exponential_schedule(start_lr: float, end_lr: float, num_steps: int) -> optax.Schedule:
  """The same LRs as `exponential_lrs`, as an optax schedule of the step count (jittable)."""
  log_ratio = math.log(end_lr / start_lr)

  def schedule(count):
    pos = jnp.asarray(count, jnp.float32) / (num_steps - 1)
    return start_lr * jnp.exp(pos * log_ratio)

  return schedule


class SmoothLoss:
  """fastai's `AvgSmoothLoss`: a bias-corrected exponential moving average of losses."""

  def __init__(self, beta: float = 0.98):
    self.beta, self.count, self.mov_avg = beta, 0, 0.0

  def update(self, loss: float) -> float:
    """Adds one loss; returns the smoothed value after it."""
    self.count += 1
    self.mov_avg = self.beta * self.mov_avg + (1 - self.beta) * loss
    return self.mov_avg / (1 - self.beta**self.count)


def smooth_losses(losses: Sequence[float], beta: float = 0.98) -> np.ndarray:
  """`[N]` raw losses to `[N]` smoothed ones (`SmoothLoss` over the sequence)."""
  smoother = SmoothLoss(beta)
  return np.asarray([smoother.update(float(loss)) for loss in losses], np.float64)


def _minimum(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
  """fastai's `minimum`: a tenth of the LR at the lowest loss."""
  index = int(np.argmin(losses))
  return float(lrs[index]) / 10, index


def _steep(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
  """fastai's `steep`: the LR that starts the steepest fall of the loss against log(LR)
  (forward differences, so the left end of the steepest segment)."""
  grads = np.diff(losses) / np.diff(np.log(lrs))
  index = int(np.argmin(grads))
  return float(lrs[index]), index


def _valley(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, int]:
  """fastai's `valley` (its `lr_find`'s current default): about halfway along the longest
  decreasing subsequence of the losses."""
  n = len(losses)
  max_start, max_end = 0, 0
  lds = [1] * n
  for i in range(1, n):
    for j in range(i):
      if losses[i] < losses[j] and lds[i] < lds[j] + 1:
        lds[i] = lds[j] + 1
      if lds[max_end] < lds[i]:
        max_end = i
        max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  index = max_start + int(sections) + int(sections / 2)
  # fastai's max_start is one before the run, so a run of 2 points gives -1 (Python's last
  # point there); take the run's first point instead.
  index = max(index, max_end - lds[max_end] + 1)
  return float(lrs[index]), index


SUGGESTIONS = {"minimum": _minimum, "steep": _steep, "valley": _valley}


def suggestion_window(smoothed: np.ndarray, num_steps: int) -> tuple[int, int]:
  """The `[start, stop)` of the `[N]` recorded smoothed losses fastai's `lr_find` suggests
  from: without the first `num_steps // 10` (the requested, not the recorded, count) and
  the last `SKIP_END`, and cut at the first non-finite one (fastai: NaN)."""
  start, stop = num_steps // 10, max(len(smoothed) - SKIP_END, 0)
  bad = np.flatnonzero(~np.isfinite(smoothed[start:stop]))
  if len(bad):
    stop = start + int(bad[0])
  return start, max(start, stop)


def suggest(lrs: Sequence[float], smoothed: Sequence[float], num_steps: int) -> dict[str, Any]:
  """fastai's suggestions from `[N]` LRs and smoothed losses of a run of `num_steps`.

  Each is `{"lr": suggested LR, "step": index into the record, "at_lr", "loss"}` (the
  point fastai marks on its plot: for `minimum`, the LR before dividing by 10), or
  `None` when fewer than 2 points are left to suggest from.
  """
  lrs, smoothed = np.asarray(lrs, np.float64), np.asarray(smoothed, np.float64)
  start, stop = suggestion_window(smoothed, num_steps)
  if stop - start < 2:
    return {name: None for name in SUGGESTIONS}
  result = {}
  for name, method in SUGGESTIONS.items():
    lr, index = method(lrs[start:stop], smoothed[start:stop])
    step = start + index
    at_lr, loss = float(lrs[step]), float(smoothed[step])
    result[name] = {"lr": lr, "step": step, "at_lr": at_lr, "loss": loss}
  return result


def check_args(
    config: ml_collections.ConfigDict,
    info: pipeline.DatasetInfo,
    *,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    size: int,
    batch_size: int,
    beta: float,
    num_devices: int,
) -> None:
  """Raises `ConfigError` naming the flag of the first argument that cannot work."""
  if not (math.isfinite(start_lr) and start_lr > 0):
    raise ConfigError(f"--start_lr={start_lr} must be a positive number, e.g. 1e-7.")
  if not (math.isfinite(end_lr) and end_lr > start_lr):
    raise ConfigError(
        f"--end_lr={end_lr} must be a number above --start_lr={start_lr}: the LR grows "
        "from start_lr to end_lr (fastai: 1e-7 to 10)."
    )
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
    raise ConfigError(f"--num_steps={num_steps!r} must be an integer >= 2 (fastai: 100).")
  min_size = models.min_input_size(config.model)
  if isinstance(size, bool) or not isinstance(size, int) or size < min_size:
    raise ConfigError(
        f"--size={size!r} must be an integer >= {min_size}, the smallest input "
        f"config.model ({config.model.name}) can take."
    )
  config_lib.check_batch_size(batch_size, "--batch_size", num_devices, info)
  if not 0 <= beta < 1:
    raise ConfigError(f"--smoothing={beta} (fastai's beta) must be in [0, 1), e.g. 0.98.")


def check_lr_find_workdir(workdir: epath.Path) -> None:
  """Refuses a training run's workdir, and one a live run holds (`workdir.Hold`); makes
  `workdir` and checks it is writable."""
  if (workdir / "checkpoints").exists():
    raise workdir_lib.WorkdirError(
        f"{workdir} holds a training run's checkpoints. The range test starts from the "
        "config's initial weights, not from them, and keeps its files apart: use another "
        f"--workdir, e.g. --workdir={workdir / 'lr_find'}."
    )
  workdir_lib.ensure_writable(workdir)
  workdir_lib.check_not_held(workdir)


def _one_step_late(step_fn, state, batches: Iterator, num_steps: int) -> Iterator[dict]:
  """Runs `num_steps` steps and yields each one's metrics on the host. Step i+1 is queued
  before step i's metrics are fetched, so the device never waits for the host; a caller
  that stops early has run one step more than it read."""
  pending = None
  for _ in range(num_steps):
    state, metrics = step_fn(state, next(batches))
    if pending is not None:
      yield jax.device_get(pending)
    pending = metrics
  yield jax.device_get(pending)


def _finite_or_none(values) -> list[float | None]:
  return [float(v) if math.isfinite(v) else None for v in values]


def lr_find(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    size: int | None = None,
    batch_size: int | None = None,
    stop_div: bool = True,
    beta: float = 0.98,
) -> dict[str, Any]:
  """Runs the range test on `config` and writes `lr_find.json` into `workdir`; returns
  what the JSON holds (`progressive lr-find` also draws `lr_find.png` and prints `summary`).

  `size` and `batch_size` default to the first stage's. The LR of step `i` is
  `start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))`. With `stop_div`, stops after
  the first step whose smoothed loss exceeds 4x the minimum so far; a non-finite loss
  always stops it. The loss is fetched every step (one step late, so the device keeps
  busy): the stop needs it.
  """
  validate(config, jax.device_count())
  info = pipeline.dataset_info(config.data)
  first = schedules.stage_plan(config.stages, config.batch_size, info.num_train)[0]
  size = first.size if size is None else size
  batch_size = first.batch_size if batch_size is None else batch_size
  check_args(
      config, info, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, size=size,
      batch_size=batch_size, beta=beta, num_devices=jax.device_count(),
  )
  workdir = epath.Path(workdir)
  check_lr_find_workdir(workdir)
  compilation.enable_persistent_cache(config.compilation_cache_dir)
  start_time = time.perf_counter()

  momentum = float(config.opt.moms[0])
  lr_fn = exponential_schedule(start_lr, end_lr, num_steps)
  mesh = parallel.make_mesh()
  plan = schedules.stage_plan([dict(size=size, steps=num_steps)], batch_size, info.num_train)
  state = train.build_state(
      config, info, plan, mesh, schedule=(lr_fn, optax.constant_schedule(momentum))
  )

  # Compiled and checked against memory before any data is read.
  sharding = parallel.batch_sharding(mesh)
  compile_start = time.perf_counter()
  parallel_step = parallel.make_train_step(mesh, info.mean, info.std,
                                           objective=mixing.Objective.from_config(config))
  batch_shape = compilation.abstract_batch(batch_size, info.train_image_size(size), sharding)
  step_fn = parallel_step.lower(state, batch_shape, size).compile()
  compile_seconds = time.perf_counter() - compile_start
  what = f"The range test ({size}px, batch {batch_size})"
  compilation.check_memory(step_fn, what, "--batch_size")
  log(f"Compiled the training step ({size}px, batch {batch_size}) in {compile_seconds:.1f}s.")

  train_split = pipeline.open_split(
      config.data, config.data.train_split, shard=jax.process_index(),
      num_shards=jax.process_count(), train=True,
  )
  # The batches (order and augmentation) of the first stage of training.
  batches = parallel.stage_batches(train_split, config.seed, plan[0], sharding)
  first_batch = next(batches)

  def all_batches():
    yield first_batch
    yield from batches

  lrs, losses, smoothed = [], [], []
  smoother, best, stop_reason = SmoothLoss(beta), math.inf, None
  for metrics in _one_step_late(step_fn, state, all_batches(), num_steps):
    loss = float(metrics["loss"])
    smooth = smoother.update(loss)
    momentum = float(metrics["momentum"])  # As the optimiser used it (constant).
    lrs.append(float(metrics["lr"]))
    losses.append(loss)
    smoothed.append(smooth)
    best = min(best, smooth)
    if not math.isfinite(smooth):
      stop_reason = f"non-finite loss {loss}"
      break
    if stop_div and smooth > DIVERGENCE * best:
      stop_reason = f"smoothed loss {smooth:.4g} > {DIVERGENCE:g} x its minimum {best:.4g}"
      break

  suggestions = suggest(lrs, smoothed, num_steps)
  result = {
      "lrs": lrs,
      "losses": _finite_or_none(losses),
      "smoothed": _finite_or_none(smoothed),
      "suggestions": suggestions,
      "recommended": RECOMMENDED,
      "lr_max": None if suggestions[RECOMMENDED] is None else suggestions[RECOMMENDED]["lr"],
      "stopped_early": stop_reason is not None,
      "stop_reason": stop_reason,
      "num_steps_run": len(lrs),
      "setup": {
          "model": config.model.name,
          "optimizer": config.opt.name,
          "weight_decay": config.opt.weight_decay,
          "nesterov": config.opt.nesterov if config.opt.name == "sgd" else None,
          "momentum": momentum,
          "data": f"{info.name}/{config.data.builder_config}",
          "seed": config.seed,
          "size": size,
          "batch_size": batch_size,
          "devices": jax.device_count(),
          "start_lr": start_lr,
          "end_lr": end_lr,
          "num_steps": num_steps,
          "stop_div": stop_div,
          "beta": beta,
      },
      "compile_seconds": compile_seconds,
      "seconds": time.perf_counter() - start_time,
      "config": json.loads(config.to_json()),
  }
  if parallel.is_primary():
    workdir_lib.write_text_atomically(
        workdir / "lr_find.json", json.dumps(result, indent=2, allow_nan=False) + "\n"
    )
  return result


def summary(result: dict[str, Any], workdir) -> str:
  """The lines `lr_find` prints: how the run went, the suggestions, the recommendation."""
  setup = result["setup"]
  n = result["num_steps_run"]
  lines = [(
      f"LR range test: {n}/{setup['num_steps']} steps, LR {setup['start_lr']:.3g} to "
      f"{result['lrs'][-1]:.3g} (momentum {setup['momentum']:g}, {setup['size']}px, "
      f"batch {setup['batch_size']})."
  )]
  if result["stopped_early"]:
    lines.append(
        f"Stopped early after step {n} (LR {result['lrs'][-1]:.3g}): {result['stop_reason']}."
    )
  s = result["suggestions"]
  if s[RECOMMENDED] is None:
    lines.append(
        "Too few steps recorded to suggest an LR: fastai leaves out the first "
        "num_steps // 10 and the last 5, and 2 must remain. Raise --num_steps, or lower "
        "--end_lr if the loss diverged early."
    )
  else:
    lines.append(
        f"fastai's suggestions: minimum {s['minimum']['lr']:.3g} (lowest smoothed loss "
        f"{s['minimum']['loss']:.4g} at LR {s['minimum']['at_lr']:.3g}, / 10), steep "
        f"{s['steep']['lr']:.3g} (steepest fall, smoothed loss {s['steep']['loss']:.4g}), "
        f"valley {s['valley']['lr']:.3g}."
    )
    lines.append(
        f"Suggested one-cycle lr_max (minimum / 10): {result['lr_max']:.3g}, i.e. "
        f"--config.opt.lr_max={result['lr_max']:.3g}"
    )
  lines.append(f"Wrote {epath.Path(workdir) / 'lr_find.json'} and lr_find.png.")
  return "\n".join(lines)
