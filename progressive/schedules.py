"""One-cycle learning rate and momentum (fastai's `fit_one_cycle`), and stage plans.

A stage plan turns `config.stages` (sizes, lengths in epochs or steps, batch sizes) into
global step ranges, so the training loop, the schedules and the analysis all agree on
which step belongs to which stage.
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
  """One resize stage: `num_steps` steps from global step `start` at image `size`."""

  index: int
  size: int
  batch_size: int
  start: int
  num_steps: int

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
    plan.append(Stage(index, int(stage["size"]), batch_size, start, num_steps))
    start += num_steps
  return plan


def stage_at(plan: Sequence[Stage], step: int) -> Stage:
  """The stage that global step `step` belongs to (the last one past the end)."""
  for stage in plan:
    if step < stage.end:
      return stage
  return plan[-1]


def make_schedules(
    plan: Sequence[Stage],
    lr_max: float,
    *,
    cycle: str = "run",
    **one_cycle_kwargs,
) -> tuple[Callable, Callable]:
  """One-cycle LR and momentum over the whole run (`cycle="run"`) or per stage.

  With `cycle="stage"` each stage restarts its own cycle from its first step.
  """
  total = plan[-1].end
  if cycle == "run":
    return one_cycle(total, lr_max, **one_cycle_kwargs)
  if cycle != "stage":
    raise ValueError(f"cycle must be 'run' or 'stage', got {cycle!r}.")
  cycles = [one_cycle(s.num_steps, lr_max, **one_cycle_kwargs) for s in plan]
  boundaries = [s.start for s in plan[1:]]
  lr_fn = optax.join_schedules([c[0] for c in cycles], boundaries)
  momentum_fn = optax.join_schedules([c[1] for c in cycles], boundaries)
  return lr_fn, momentum_fn
