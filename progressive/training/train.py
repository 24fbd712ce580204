"""Training with progressive resizing: build the state, then train stage by stage.

For each stage (size, batch size, steps) the loop takes the stage's compiled step (the
data-parallel wrapper of `progressive.training.steps.train_step`, compiled ahead of time in the
background, once per distinct stage shape), runs it over the stage's batches, and at
the stage's end checkpoints and then evaluates at the configured sizes. Everything it uses
has its own module: `parallel` (mesh, wrappers, batches), `compilation`, `evaluate`,
`checkpoints`, `workdir`, `metrics`, `signals`.
"""

import dataclasses
import json
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from etils import epath

from progressive import models, optim, schedules
from progressive.config import validate
from progressive.data import pipeline
from progressive.training import activations, checkpoints, compilation, mixing, parallel, steps
from progressive.training import workdir as workdir_lib
from progressive.training.evaluate import Recalibrated, evaluate
from progressive.training.metrics import (
  MetricsWriter,
  NonFiniteLossError,
  Progress,
  SkippedSteps,
  TrainMetrics,
  checkpoint_note,
  read_rows,
)
from progressive.training.parallel import log
from progressive.training.signals import StopSignals

__all__ = ["NonFiniteLossError", "Result", "build_state", "train_and_evaluate"]


@dataclasses.dataclass
class Result:
  """How a call of `train_and_evaluate` ended, whichever way it ended."""

  step: int  # The last step trained (or found in the workdir).
  state: steps.TrainState
  eval: list[dict[str, Any]]  # The `eval` rows of the last evaluation at `step`, if any.
  compile: list[dict[str, Any]]  # The `compile` rows of this call.
  interrupted: str | None = None  # "SIGTERM" or "SIGINT" if a signal stopped it.


def build_state(config, info: pipeline.DatasetInfo, plan, mesh, *, schedule=None) -> steps.TrainState:
  """The initial train state of `config`, initialised at the first stage's size and
  replicated over `mesh`; `schedule` = `(lr_fn, momentum_fn)` replaces the one-cycle."""
  model = models.build(config.model, num_classes=info.num_classes, bn_axis_name=steps.AXIS)
  if schedule is None:
    tx = _one_cycle_optimizer(config.opt, plan)
    lr_scale = config.opt.lr_max
  else:
    fine_tuning = optim.FineTuning.from_plan(plan, config.opt.lr_body_div, config.opt.train_bn)
    tx = optim.make_optimizer(config.opt, *schedule, fine_tuning=fine_tuning)
    lr_scale = 1.0
  state = steps.create_train_state(model, tx, jax.random.key(config.seed), plan[0].size)
  state = state.replace(opt_state=optim.with_lr_scale(state.opt_state, lr_scale))
  return jax.device_put(state, parallel.replicated(mesh))


# The one-cycle optimisers made in this process, by `_optimizer_key` (the most recent 64).
_OPTIMIZERS: dict = {}


def _optimizer_key(opt: ml_collections.ConfigDict, plan) -> tuple:
  """What the one-cycle optimiser depends on: `config.opt` but its peak learning rate
  (which the state holds: `optim.with_lr_scale`), and the plan."""
  return repr(sorted((k, v) for k, v in opt.to_dict().items() if k != "lr_max")), tuple(plan)


def _one_cycle_optimizer(opt: ml_collections.ConfigDict, plan) -> optax.GradientTransformation:
  """The one-cycle optimiser of `plan` with a peak of 1, one object per optimiser config
  and plan in a process: the train state holds it as a static field, so every run of a
  sweep with the same plan (a learning-rate grid, its seeds) reuses the training step
  traced and compiled for the first instead of tracing it again."""
  key = _optimizer_key(opt, plan)
  if key not in _OPTIMIZERS:
    lr_fn, momentum_fn = schedules.make_schedules(
        plan, 1.0, cycle=opt.cycle, div=opt.div, div_final=opt.div_final,
        pct_start=opt.pct_start, moms=tuple(opt.moms),
    )
    fine_tuning = optim.FineTuning.from_plan(plan, opt.lr_body_div, opt.train_bn)
    if len(_OPTIMIZERS) >= 64:
      del _OPTIMIZERS[next(iter(_OPTIMIZERS))]
    _OPTIMIZERS[key] = optim.make_optimizer(opt, lr_fn, momentum_fn, fine_tuning=fine_tuning)
  return _OPTIMIZERS[key]


def every(n: int, step: int, stage: schedules.Stage | None = None) -> bool:
  """Whether `step` is one of every `n` (0: never); with `stage`, not its last step,
  which the stage's end already checkpoints and evaluates."""
  return bool(n) and step % n == 0 and (stage is None or step < stage.end)


@dataclasses.dataclass
class _Session:
  """What every stage of one call shares: the config, data, programs and outputs."""

  config: ml_collections.ConfigDict
  workdir: epath.Path
  info: pipeline.DatasetInfo
  mesh: jax.sharding.Mesh
  train_split: Any  # The splits, opened by `open_data` once the first stage's programs fit.
  eval_split: Any
  writer: MetricsWriter
  programs: compilation.Programs
  mngr: Any
  layer_order: list[str] | None  # Activation-statistics rows in model order, if recorded.
  recalibrated: Recalibrated | None  # accuracy_bn at the other eval sizes, if asked for.
  skipped: SkippedSteps | None = None  # The steps skipped as non-finite (skip_nonfinite).

  @property
  def sharding(self):
    return parallel.batch_sharding(self.mesh)

  def open_data(self) -> None:
    """Opens this process's shards of the splits (and reads the batch-norm control's
    images), once: after the first stage's programs are compiled and checked against memory."""
    if self.train_split is not None:
      return
    config, process, processes = self.config, jax.process_index(), jax.process_count()
    self.train_split = pipeline.open_split(
        config.data, config.data.train_split, shard=process, num_shards=processes, train=True
    )
    self.eval_split = pipeline.open_split(
        config.data, config.data.eval_split, shard=process, num_shards=processes
    )
    if config.eval_bn_images and config.model.batch_norm:
      self.recalibrated = Recalibrated(models.build(config.model, num_classes=self.info.num_classes),
                                       config, self.info, self.sharding)
      if not self.recalibrated.num_images:
        self.recalibrated = None
        log(f"No accuracy_bn: {self.info.num_train} training images fill no batch of "
            f"config.eval_batch_size={config.eval_batch_size} on every process; lower it.")

  def evaluate(self, state, step: int, stage: schedules.Stage) -> list[dict[str, Any]]:
    """Evaluates at the stage's size and every eval size, with `config.eval_tta` (the
    rows' `tta`; the batch-norm control's too); writes and returns the rows."""
    sizes = sorted({stage.size, *self.config.eval_sizes})
    eval_fn = lambda s, batch, size: self.programs.get(("eval", size), stage, step)(s, batch)
    args = dict(batch_size=self.config.eval_batch_size, sharding=self.sharding, info=self.info,
                num_examples=self.info.num_test)
    rows = evaluate(state, eval_fn, self.eval_split, sizes, **args)
    if self.recalibrated is not None:  # The batch-norm control at the other sizes.
      extra = self.recalibrated.rows(state, eval_fn, self.eval_split, [s for s in sizes if s != stage.size], **args)
      rows = [{**row, **extra.get(row["size"], {})} for row in rows]
    for row in rows:
      self.writer.write("eval", step=step, stage=stage.index, split=self.config.data.eval_split,
                        tta=self.config.eval_tta, **row)
    return rows

  def last_checkpoint(self) -> str | None:
    """The folder of the latest checkpoint (perhaps still being written), if any."""
    step = self.mngr.latest_step()
    return None if step is None else str(self.workdir / "checkpoints" / str(step))

  def save(self, state, step: int, stage: schedules.Stage, data_state) -> None:
    """Checkpoints `state`; `NonFiniteLossError` instead if it is not finite."""
    try:
      checkpoints._check_finite({"params": state.params, "batch_stats": state.batch_stats})
    except ValueError as e:
      raise NonFiniteLossError(
          f"The state at step {step} (stage {stage.index}, {stage.size}px) is not finite: "
          f"{e}; it was not checkpointed. "
          f"{checkpoint_note(self.last_checkpoint(), 'the state before it')} Lower "
          "config.opt.lr_max, or set config.skip_nonfinite=True to skip such steps."
      ) from None
    checkpoints.save(
        self.mngr, step, state, data_state, stage=stage.index,
        config_json=json.loads(self.config.to_json()),
    )

  def close(self, *, wait: bool = True) -> list[Exception]:
    """Closes the programs, waits for the checkpoint being written (unless its failure is
    known: a failed write raises `CheckpointWriteError`), closes the manager and the
    outputs; returns the errors met."""
    errors = []
    waits = [lambda: checkpoints.wait(self.mngr)] if wait else []
    for close in (self.programs.close, *waits, self.mngr.close, self.writer.close):
      try:
        close()
      except Exception as e:
        errors.append(e)
    return errors

  def record_activation_stats(self, state, batch, step: int, stage: schedules.Stage) -> None:
    stats_fn = self.programs.get(("stats", stage.size, stage.batch_size), stage, step)
    stats = jax.device_get(stats_fn(state, batch))
    self.writer.write_activation_stats(activations.stats_rows(
        stats, step=step, stage=stage.index, size=stage.size, order=self.layer_order,
    ))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, force: bool = False) -> Result:
  """Trains through every stage of `config`, resuming from `workdir` if it holds a run.

  Stops early, after a checkpoint, on SIGTERM or SIGINT (`Result.interrupted`). Holds
  `workdir` for the whole call: another run in it is refused (`WorkdirError`). A
  checkpoint that would not fit, or whose write fails, or a full disk, stops the run with
  `checkpoints.CheckpointWriteError`, the previous checkpoint intact.
  """
  validate(config, jax.device_count())
  compilation.enable_persistent_cache(config.compilation_cache_dir)
  workdir = epath.Path(workdir)
  workdir_lib.ensure_writable(workdir)
  with workdir_lib.Hold(workdir):  # Before anything is written, read or compiled.
    return _train_and_evaluate(config, workdir, force)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.Path, force: bool) -> Result:
  workdir_lib.check_workdir(workdir, config, force=force)
  info = pipeline.dataset_info(config.data)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  mesh = parallel.make_mesh()
  state = build_state(config, info, plan, mesh)

  checkpoints.set_aside_partial_writes(workdir)
  mngr = checkpoints.manager(workdir, config.max_to_keep)
  step, data_state, data_stage = 0, None, None
  restored = checkpoints.restore_latest(mngr, workdir, state, json.loads(config.to_json()),
                                        force=force)
  if restored is not None:
    state, data_state, meta = restored
    step, data_stage = int(meta["step"]), int(meta["stage"])
  elif config.init_from:
    state = checkpoints.init_from(config.init_from, state)
    log(f"Initialised parameters from {config.init_from}.")
  rows = read_rows(workdir / "metrics.jsonl") if step else []
  last_eval = [r for r in rows if r["event"] == "eval" and r["step"] == step]
  # A stage's checkpoint is written before its evaluation: one that failed runs again.
  unevaluated = next((s for s in plan if s.end == step), None) if step and not last_eval else None
  if step >= plan[-1].end and unevaluated is None:
    log(f"{workdir} holds a finished run ({step}/{plan[-1].end} steps); nothing to train.")
    mngr.close()
    return Result(step, state, last_eval, [])
  if step:
    log(f"Resuming {workdir} from step {step} (stage {data_stage})"
        + (f", first evaluating stage {unevaluated.index}'s end." if unevaluated else "."))

  session = _open_session(config, workdir, info, plan, mesh, state, mngr, step, unevaluated)
  result = Result(step, state, [], session.programs.rows)
  with checkpoints.QuietWriteErrors(workdir):
    try:
      _train_stages(session, result, plan, data_state, data_stage, unevaluated)
    except BaseException as e:
      close_errors = session.close(wait=not isinstance(e, checkpoints.CheckpointWriteError))
      error = checkpoints.stop_error(e, close_errors, workdir, result.step)
      if error is None:
        raise
      raise error from None
    errors = session.close()
    if errors:
      raise checkpoints.stop_error(errors[0], errors, workdir, result.step) or errors[0]
  return result


def _train_stages(session: _Session, result: Result, plan, data_state, data_stage,
                  unevaluated: schedules.Stage | None = None) -> None:
  """Trains the stages still to train, checkpointing and then evaluating at each one's
  end (so a failing evaluation loses no training), until the last or a stop signal; first
  evaluates `unevaluated`, a stage whose checkpoint was written but whose evaluation
  failed. A signal during a stage's end (its last step, the checkpoint, the evaluation)
  stops after its checkpoint, before the next stage compiles."""
  previous_stage_end = None
  with StopSignals() as stop:
    if unevaluated is not None:
      session.programs.stage_step(unevaluated, result.step)  # Its programs, checked.
      session.open_data()
      _evaluate_stage_end(session, result, unevaluated)
    for stage in plan:
      if result.step >= stage.end:
        continue
      resume = data_state if data_stage == stage.index else None
      end_data_state = _train_stage(session, result, stage, resume, stop, previous_stage_end)
      if result.interrupted:
        return
      previous_stage_end = time.perf_counter()
      session.save(result.state, result.step, stage, end_data_state)
      _evaluate_stage_end(session, result, stage)
      signum = stop.requested(can_sync=True)
      if signum and stage.index < plan[-1].index:
        _stopped(session, result, signum, f"at the end of stage {stage.index} (step {result.step})")
        return


def _evaluate_stage_end(session: _Session, result: Result, stage: schedules.Stage) -> None:
  """The evaluation at the end of `stage`, its checkpoint already saved."""
  try:
    result.eval = session.evaluate(result.state, result.step, stage)
  except pipeline.UnreadableExampleError as e:
    checkpoints.wait(session.mngr)
    raise pipeline.UnreadableExampleError(
        f"{e} The evaluation at the end of stage {stage.index} stopped; its checkpoint "
        f"(step {result.step}) is saved, and the next run evaluates it first.", path=e.path
    ) from None
  accuracies = ", ".join(f"{r['size']}px {r['accuracy']:.3f}" for r in result.eval)
  log(f"Stage {stage.index} ({stage.size}px) done at step {result.step}: accuracy on "
      f"{session.config.data.eval_split} {accuracies}")


def _stop_unreadable(session: _Session, result: Result, stage: schedules.Stage, data_state,
                     error: "pipeline.UnreadableExampleError") -> None:
  """Checkpoints the steps trained (unless the last checkpoint has them) and raises
  `error` again, saying where the run can resume."""
  latest = session.mngr.latest_step()
  if result.step and result.step != latest:
    session.save(result.state, result.step, stage, data_state)
  checkpoints.wait(session.mngr)
  where = (f"Checkpointed step {result.step}; the same command resumes there." if result.step
           else "Nothing was trained yet.")
  raise pipeline.UnreadableExampleError(f"{error} {where}", path=error.path) from None


def _stopped(session: _Session, result: Result, signum: int, where: str) -> None:
  """Waits for the checkpoint just saved and records the signal that stopped the run."""
  checkpoints.wait(session.mngr)
  result.interrupted = signal.Signals(signum).name
  log(f"Stopped by {result.interrupted} {where}; checkpoint saved in "
      f"{session.workdir / 'checkpoints'}. Run the same command again to resume.")


def _open_session(config, workdir, info, plan, mesh, state, mngr, step: int,
                  unevaluated: schedules.Stage | None = None) -> _Session:
  """Opens the metrics files and queues the compiles of every stage still to train, and
  of `unevaluated` (the data is opened by `_Session.open_data`)."""
  process = jax.process_index()
  writer = MetricsWriter(workdir, resume_step=step, active=process == 0)
  devices = jax.devices()  # What this call trains on (a sweep keeps one kind per arm).
  writer.write("device", step=step, kind=str(devices[0].device_kind),
               platform=str(devices[0].platform), count=len(devices))
  if info.left_out and not step:
    writer.write("data", step=0, skipped_unreadable=info.num_skipped,
                 left_out=len(info.left_out), left_out_files=list(info.left_out))
    shown = "; ".join(info.left_out[:3]) + ("; ..." if len(info.left_out) > 3 else "")
    log(f"Left out {len(info.left_out)} files of {config.data.data_dir} ({shown}); "
        f"every one is named in the data row of {workdir / 'metrics.jsonl'}.")
  train_fn = parallel.make_train_step(mesh, info.mean, info.std,
                                      skip_nonfinite=config.skip_nonfinite,
                                      objective=mixing.Objective.from_config(config))
  eval_fn = parallel.make_eval_step(info.mean, info.std, tta=config.eval_tta)
  stats_fn, layer_order = None, None
  if config.activation_stats_every:
    stats_model = models.build(config.model, num_classes=info.num_classes)
    stats_fn = parallel.make_stats_step(stats_model, info.mean, info.std)
    layer_order = activations.layer_names(
        stats_model.apply, {"params": state.params, "batch_stats": state.batch_stats},
        jax.ShapeDtypeStruct((1, plan[0].size, plan[0].size, 3), jnp.float32),
    )
  compiler = compilation.StageCompiler(background=config.compile_ahead)
  stage_keys = compilation.submit_compiles(
      compiler, train_fn, eval_fn, state, [s for s in plan if step < s.end or s is unevaluated],
      info=info, eval_sizes=config.eval_sizes,
      eval_batch_size=config.eval_batch_size, sharding=parallel.batch_sharding(mesh),
      stats_fn=stats_fn,
  )
  programs = compilation.Programs(
      compiler, writer, eval_batch_size=config.eval_batch_size, num_devices=mesh.size,
      stage_keys=stage_keys, stages=config.stages,
  )
  return _Session(config, workdir, info, mesh, None, None, writer, programs, mngr,
              layer_order, None, SkippedSteps() if config.skip_nonfinite else None)


def _train_stage(session: _Session, result: Result, stage: schedules.Stage, data_state, stop, previous_stage_end):
  """Trains `stage` from `result.step` to its end, updating `result`, and returns the
  data iterator's state there; or, on a stop signal, checkpoints, sets
  `result.interrupted` and returns None."""
  config = session.config
  switch_start = time.perf_counter()
  step_fn = session.programs.stage_step(stage, result.step)  # Its other programs checked too.
  session.open_data()
  batches = parallel.stage_batches(
      session.train_split, config.seed, stage, session.sharding, data_state=data_state
  )
  progress = Progress(
      stage.num_steps, result.step - stage.start, f"stage {stage.index} ({stage.size}px)",
      config.progress_bar and parallel.is_primary(),
  )
  metrics = TrainMetrics(session.writer, stage, progress, skipped=session.skipped,
                         last_checkpoint=session.last_checkpoint)
  try:
    try:
      batches.fill()
    except pipeline.UnreadableExampleError as e:
      _stop_unreadable(session, result, stage, data_state, e)
    session.writer.write_images(f"show_batch/stage_{stage.index}_{stage.size}px",
                                batches.first_images, result.step)
    session.writer.write(
        "stage", step=result.step, stage=stage.index, size=stage.size, batch_size=stage.batch_size,
        # From the last step of the previous stage (evaluation and checkpoint included)
        # to this stage's first step being ready to run.
        switch_seconds=None if previous_stage_end is None else time.perf_counter() - previous_stage_end,
        setup_seconds=time.perf_counter() - switch_start,
    )
    state, step = result.state, result.step
    while step < stage.end:
      try:
        batch = next(batches)
      except pipeline.UnreadableExampleError as e:
        _stop_unreadable(session, result, stage, batches.resume_state, e)
      state, step_metrics = step_fn(state, batch)
      step += 1
      result.state, result.step = state, step
      metrics.add(step_metrics)
      if every(config.activation_stats_every, step):
        session.record_activation_stats(state, batch, step, stage)
      at_log = every(config.log_every_steps, step) or step == stage.end
      if at_log:
        metrics.flush(step)
      if stop.requested(can_sync=at_log) and step < stage.end:
        with metrics.paused(step):
          session.save(state, step, stage, batches.state)
        signum = stop.requested(can_sync=True)
        _stopped(session, result, signum, f"at step {step} (stage {stage.index})")
        return None
      if every(config.eval_every_steps, step, stage):
        with metrics.paused(step):
          try:
            session.evaluate(state, step, stage)
          except pipeline.UnreadableExampleError as e:
            _stop_unreadable(session, result, stage, batches.resume_state, e)
      if every(config.checkpoint_every_steps, step, stage):
        with metrics.paused(step):
          session.save(state, step, stage, batches.state)
    if batches.unreadable:
      session.writer.write("data", step=step, stage=stage.index,
                           replaced_unreadable=batches.unreadable)
      log(f"Stage {stage.index}: a readable neighbour stood in for {batches.unreadable} "
          "training images that could not be decoded (config.data.skip_unreadable).")
    return batches.state
  finally:
    metrics.close()
    batches.close()
