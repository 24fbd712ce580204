"""One-cycle learning rate and momentum (fastai's `fit_one_cycle`), and stage plans.

A stage plan turns `config.stages` (sizes, lengths in epochs or steps, batch sizes, and
what each stage asks of the optimiser) into global step ranges, so the training loop, the
schedules and the analysis all agree on which step belongs to which stage.

A stage is one fastai fit. Beside its size and length it may set `frozen` (the body takes
no step: fastai's `freeze`), `reset_opt` (the optimiser's state restarts at its first
step: fastai clears it in `freeze` and `unfreeze`), `lr_factor` (its peak LR is
`opt.lr_max * lr_factor`), `div` and `pct_start` (its own one-cycle's, with
`opt.cycle="stage"`) and `lr_body_div` (the body's LR is the head's over it; default
`opt.lr_body_div`). `fine_tune_stages` writes fastai's `fine_tune` as two such stages.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import optax


def _cos_anneal(start: float, end: float, pos):
  """fastai's `SchedCos`: `start + (1 + cos(pi * (1 - pos))) * (end - start) / 2`.

  Written as the identical `start * cos^2(pi pos / 2) + end * sin^2(pi pos / 2)`, which
  keeps float32 precise near both ends (the LR falls five orders of magnitude).
  """
  angle = math.pi / 2.0 * pos
  return start * jnp.cos(angle) ** 2 + end * jnp.sin(angle) ** 2


def _two_phase(total_steps: int, pct_start: float, values: tuple[float, float, float]):
  """A schedule of two cosine phases: values[0] -> values[1] -> values[2].

  Step `t` sits at `pos = t / total_steps` of training, as in fastai where the position
  is `train_iter / n_iter`. The first phase covers `pct_start` of the steps.
  """
  if total_steps <= 0:
    raise ValueError(f"one_cycle needs total_steps > 0, got {total_steps}.")
  if not 0.0 < pct_start < 1.0:
    raise ValueError(f"one_cycle needs 0 < pct_start < 1, got {pct_start}.")
  start, middle, end = values

  def schedule(count):
    pos = jnp.asarray(count, jnp.float32) / total_steps
    pos = jnp.clip(pos, 0.0, 1.0)
    first = _cos_anneal(start, middle, pos / pct_start)
    second = _cos_anneal(middle, end, (pos - pct_start) / (1.0 - pct_start))
    return jnp.where(pos < pct_start, first, second)

  return schedule


def one_cycle(
    total_steps: int,
    lr_max: float,
    *,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
) -> tuple[optax.Schedule, optax.Schedule]:
  """Returns `(lr_fn, momentum_fn)` following fastai's `fit_one_cycle` exactly.

  The LR rises from `lr_max / div` to `lr_max` over the first `pct_start` of the steps,
  then falls to `lr_max / div_final`; momentum moves the opposite way through `moms`.
  Both are cosine anneals. Each function maps a step count in `[0, total_steps)` to a
  float32 scalar and is safe to call inside `jit`.
  """
  lr_fn = _two_phase(total_steps, pct_start, (lr_max / div, lr_max, lr_max / div_final))
  momentum_fn = _two_phase(total_steps, pct_start, tuple(moms))
  return lr_fn, momentum_fn


@dataclasses.dataclass(frozen=True)
class Stage:
  """One resize stage: `num_steps` steps from global step `start` at image `size`; the
  rest as the stage's dict in `config.stages` sets them (the module docstring)."""

  index: int
  size: int
  batch_size: int
  start: int
  num_steps: int
  frozen: bool = False
  reset_opt: bool = False
  lr_factor: float = 1.0
  div: float | None = None  # None: the run's (opt.div), as pct_start and lr_body_div.
  pct_start: float | None = None
  lr_body_div: float | None = None

  @property
  def end(self) -> int:
    return self.start + self.num_steps


def steps_for(stage: dict, batch_size: int, num_train_examples: int) -> int:
  """Converts a stage's length (`steps` or `epochs`) into optimiser steps."""
  if stage.get("steps") is not None:
    return int(stage["steps"])
  steps_per_epoch = num_train_examples // batch_size
  return max(1, int(round(stage["epochs"] * steps_per_epoch)))


def stage_plan(
    stages: Sequence[dict], default_batch_size: int, num_train_examples: int
) -> list[Stage]:
  """Lays the configured stages end to end on the global step axis."""
  plan, start = [], 0
  for index, stage in enumerate(stages):
    batch_size = int(stage.get("batch_size") or default_batch_size)
    num_steps = steps_for(stage, batch_size, num_train_examples)
    optional = {k: stage[k] for k in ("div", "pct_start", "lr_body_div")
                if stage.get(k) is not None}
    plan.append(Stage(index, int(stage["size"]), batch_size, start, num_steps,
                      frozen=bool(stage.get("frozen", False)),
                      reset_opt=bool(stage.get("reset_opt", False)),
                      lr_factor=float(stage.get("lr_factor", 1.0)),
                      **{k: float(v) for k, v in optional.items()}))
    start += num_steps
  return plan


def stage_at(plan: Sequence[Stage], step: int) -> Stage:
  """The stage that global step `step` belongs to (the last one past the end)."""
  for stage in plan:
    if step < stage.end:
      return stage
  return plan[-1]


def stage_values(plan: Sequence[Stage], values: Sequence) -> Callable:
  """A function of the global step: `values[i]` during stage i (the last one's past the
  end), as a JAX array; safe inside `jit`."""
  starts = jnp.asarray([s.start for s in plan[1:]], jnp.int32)
  table = jnp.asarray(values)
  return lambda count: table[jnp.searchsorted(starts, jnp.asarray(count), side="right")]


def make_schedules(
    plan: Sequence[Stage],
    lr_max: float,
    *,
    cycle: str = "run",
    **one_cycle_kwargs,
) -> tuple[Callable, Callable]:
  """One-cycle LR and momentum over the whole run (`cycle="run"`) or per stage.

  With `cycle="stage"` each stage restarts its own cycle from its first step, peaking at
  `lr_max * stage.lr_factor`, with the stage's `div` and `pct_start` where it sets them.
  With `cycle="run"` a stage's `lr_factor` scales the run's cycle during that stage.
  """
  total = plan[-1].end
  if cycle == "run":
    lr_fn, momentum_fn = one_cycle(total, lr_max, **one_cycle_kwargs)
    if all(s.lr_factor == 1.0 for s in plan):
      return lr_fn, momentum_fn
    factor = stage_values(plan, [s.lr_factor for s in plan])
    return (lambda count: lr_fn(count) * factor(count)), momentum_fn
  if cycle != "stage":
    raise ValueError(f"cycle must be 'run' or 'stage', got {cycle!r}.")

  def stage_kwargs(stage: Stage) -> dict:
    own = {k: getattr(stage, k) for k in ("div", "pct_start") if getattr(stage, k) is not None}
    return {**one_cycle_kwargs, **own}

  cycles = [one_cycle(s.num_steps, lr_max * s.lr_factor, **stage_kwargs(s)) for s in plan]
  boundaries = [s.start for s in plan[1:]]
  lr_fn = optax.join_schedules([c[0] for c in cycles], boundaries)
  momentum_fn = optax.join_schedules([c[1] for c in cycles], boundaries)
  return lr_fn, momentum_fn


def fine_tune_stages(size: int, epochs: float, freeze_epochs: float = 1, *,
                     lr_factor: float = 1.0, lr_mult: float = 100.0, split: bool = True,
                     batch_size: int | None = None) -> tuple[dict, ...]:
  """fastai 2.7's `Learner.fine_tune(epochs, base_lr, freeze_epochs, lr_mult)` as two
  stages at `size` (with `opt.cycle="stage"`; `base_lr` is `opt.lr_max * lr_factor`):

  - `freeze_epochs` with the body frozen (`split`), a fresh optimiser state and one-cycle
    of peak `base_lr` warming up over 99% of it: `fit_one_cycle(freeze_epochs,
    slice(base_lr), pct_start=0.99)`, whose `slice(base_lr)` gives the body (its
    batch-norm layers, trained with `opt.train_bn`) `base_lr / 10`;
  - `epochs` with everything trained, a fresh optimiser state, peak `base_lr / 2` for
    the head and `base_lr / 2 / lr_mult` for the body, `div=5`, `pct_start=0.3`:
    fastai's `slice(base_lr / lr_mult, base_lr)` after `base_lr /= 2`, over its two
    parameter groups (body, head).

  `split=False` is fastai's `Learner` built without a splitter (one parameter group, as
  fastbook's `Learner(dls, xresnet50(), ...)`): `freeze` then freezes nothing and
  `slice(lo, hi)` gives that group `hi`, so nothing is frozen and the body's LR is the
  head's. (fastai's `vision_learner` splits a ResNet in three groups, the middle one at
  `base_lr / 2 / sqrt(lr_mult)`; here the body is one group.)
  """
  shared = {"size": size, "reset_opt": True}
  if batch_size is not None:
    shared["batch_size"] = batch_size
  return (
      {**shared, "epochs": freeze_epochs, "frozen": split, "lr_factor": lr_factor,
       "pct_start": 0.99, "lr_body_div": 10.0 if split else 1.0},
      {**shared, "epochs": epochs, "lr_factor": lr_factor / 2, "div": 5.0, "pct_start": 0.3,
       "lr_body_div": lr_mult if split else 1.0},
  )
