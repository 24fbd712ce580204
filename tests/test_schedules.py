"""One-cycle schedules against fastai's formula, and stage plans."""

import math

import numpy as np
import pytest

from progressive import schedules


def fastai_combined_cos(pct_start, start, middle, end):
  """fastai's `combined_cos` + `combine_scheds`, written out independently."""

  def sched_cos(a, b, pos):
    return a + (1 + math.cos(math.pi * (1 - pos))) * (b - a) / 2

  def inner(pos):
    if pos >= 1.0:
      return sched_cos(middle, end, 1.0)
    if pos >= pct_start:
      return sched_cos(middle, end, (pos - pct_start) / (1 - pct_start))
    return sched_cos(start, middle, pos / pct_start)

  return inner


@pytest.mark.parametrize("total,pct_start", [(100, 0.25), (37, 0.3), (1000, 0.1)])
def test_one_cycle_matches_fastai(total, pct_start):
  lr_max, div, div_final, moms = 0.3, 25.0, 1e5, (0.95, 0.85, 0.95)
  lr_fn, mom_fn = schedules.one_cycle(
      total, lr_max, div=div, div_final=div_final, pct_start=pct_start, moms=moms
  )
  ref_lr = fastai_combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)
  ref_mom = fastai_combined_cos(pct_start, *moms)
  for step in range(total):
    pos = step / total
    np.testing.assert_allclose(float(lr_fn(step)), ref_lr(pos), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(mom_fn(step)), ref_mom(pos), rtol=1e-6)


def test_one_cycle_landmarks():
  lr_fn, mom_fn = schedules.one_cycle(400, 1.0)
  # Start, peak (at pct_start of the steps) and the end of the cycle.
  np.testing.assert_allclose(float(lr_fn(0)), 1.0 / 25.0, rtol=1e-6)
  np.testing.assert_allclose(float(mom_fn(0)), 0.95, rtol=1e-6)
  np.testing.assert_allclose(float(lr_fn(100)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(mom_fn(100)), 0.85, rtol=1e-6)
  np.testing.assert_allclose(float(lr_fn(400)), 1e-5, rtol=1e-4)
  np.testing.assert_allclose(float(mom_fn(400)), 0.95, rtol=1e-6)
  # Halfway through the warm-up the cosine is exactly at the midpoint.
  np.testing.assert_allclose(float(lr_fn(50)), (1.0 / 25 + 1.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(float(mom_fn(50)), 0.90, rtol=1e-6)
  lrs = np.array([float(lr_fn(s)) for s in range(400)])
  assert np.all(np.diff(lrs[:101]) > 0) and np.all(np.diff(lrs[100:]) < 0)


def test_stage_plan_epochs_steps_and_batch_sizes():
  stages = [dict(size=16, epochs=2), dict(size=24, steps=7, batch_size=32), dict(size=32, epochs=0.5)]
  plan = schedules.stage_plan(stages, default_batch_size=64, num_train_examples=1000)
  assert [(s.size, s.batch_size, s.start, s.num_steps) for s in plan] == [
      (16, 64, 0, 30),  # 1000 // 64 = 15 steps per epoch.
      (24, 32, 30, 7),
      (32, 64, 37, 8),  # Half of 15, rounded.
  ]
  assert schedules.stage_at(plan, 0).index == 0
  assert schedules.stage_at(plan, 29).index == 0
  assert schedules.stage_at(plan, 30).index == 1
  assert schedules.stage_at(plan, 44).index == 2


def test_cycle_per_stage_restarts():
  plan = schedules.stage_plan([dict(size=8, steps=40), dict(size=16, steps=60)], 8, 100)
  lr_run, _ = schedules.make_schedules(plan, 1.0, cycle="run")
  lr_stage, mom_stage = schedules.make_schedules(plan, 1.0, cycle="stage")
  first, _ = schedules.one_cycle(40, 1.0)
  second, second_mom = schedules.one_cycle(60, 1.0)
  for step in range(40):
    np.testing.assert_allclose(float(lr_stage(step)), float(first(step)), rtol=1e-6)
  for step in range(40, 100):
    np.testing.assert_allclose(float(lr_stage(step)), float(second(step - 40)), rtol=1e-6)
    np.testing.assert_allclose(float(mom_stage(step)), float(second_mom(step - 40)), rtol=1e-6)
  # One cycle over the run does not restart at the stage boundary.
  assert abs(float(lr_run(40)) - float(lr_run(39))) < 0.05
  np.testing.assert_allclose(float(lr_stage(40)), 1.0 / 25, rtol=1e-6)
  assert float(lr_stage(39)) < 0.01
  with pytest.raises(ValueError, match="cycle"):
    schedules.make_schedules(plan, 1.0, cycle="epoch")
