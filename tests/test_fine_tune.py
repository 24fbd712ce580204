"""fastai's `fine_tune` as stages: a frozen body, optimiser resets, discriminative
learning rates (`progressive.optim.FineTuning`, `schedules.fine_tune_stages`), and
`init_from` with a head of another class count."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from etils import epath

from progressive import models, optim, schedules
from progressive.config import ConfigError, default_config, validate
from progressive.data import pipeline
from progressive.training import checkpoints, parallel, steps, train
from progressive.training.metrics import read_rows
from tests.runs import Killed, die_after_save

PARAMS = {"conv": {"kernel": jnp.full((2, 3), 0.5)},
          "bn": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
          "head": {"dense": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.zeros(3)}}}


def opt_config(name):
  opt = default_config().opt
  opt.name, opt.weight_decay = name, 0.0
  return opt


def updates_by_step(name, stages, *, train_bn=True):
  """`(updates, state before, state after)` of every step of `stages` under one constant
  gradient, the optimiser, the gradient."""
  plan = schedules.stage_plan(stages, 8, 100)
  lr_fn, momentum_fn = schedules.make_schedules(plan, 1.0, cycle="stage")
  fine_tuning = optim.FineTuning.from_plan(plan, 1.0, train_bn)
  tx = optim.make_optimizer(opt_config(name), lr_fn, momentum_fn, lr_scale=0.1,
                            fine_tuning=fine_tuning)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  state, params, out = tx.init(PARAMS), PARAMS, []
  for _ in range(plan[-1].end):
    previous = state
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append((jax.device_get(updates), previous, state))
  return out, tx, grads


FROZEN_THEN_UNFROZEN = (dict(size=8, steps=2, frozen=True, reset_opt=True),
                        dict(size=8, steps=2, reset_opt=True, lr_body_div=4.0))


def test_param_groups_split_head_body_and_norms():
  assert optim.param_groups(PARAMS) == {
      "conv": {"kernel": "body"}, "bn": {"scale": "norm", "bias": "norm"},
      "head": {"dense": {"kernel": "head", "bias": "head"}}}


@pytest.mark.parametrize("name, train_bn", [("sgd", True), ("adamw", False)])
def test_a_frozen_body_takes_no_step_and_keeps_its_optimiser_state(name, train_bn):
  out, tx, _ = updates_by_step(name, FROZEN_THEN_UNFROZEN, train_bn=train_bn)
  is_body = jax.tree.map(lambda g: g == "body", optim.param_groups(PARAMS))
  for updates, _, after in out[:2]:  # The frozen stage.
    np.testing.assert_array_equal(updates["conv"]["kernel"], 0)
    assert np.all(updates["head"]["dense"]["kernel"] < 0)
    assert np.all(updates["bn"]["scale"] < 0) == train_bn
    assert np.all(updates["bn"]["scale"] == 0) == (not train_bn)
    # The body's moments are as before the step: zero, none was taken.
    moments = optax.tree_utils.tree_map_params(
        tx, lambda leaf, body: leaf if body else None, after, is_body,
        transform_non_params=lambda _: None)
    assert len(jax.tree.leaves(moments)) == (1 if name == "sgd" else 2)  # Trace; mu and nu.
    for leaf in jax.tree.leaves(moments):
      np.testing.assert_array_equal(leaf, 0)
  head_moments = optax.tree_utils.tree_map_params(
      tx, lambda leaf, body: None if body else leaf, out[1][2], is_body,
      transform_non_params=lambda _: None)
  assert any(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(head_moments))
  assert np.all(out[2][0]["conv"]["kernel"] < 0)  # Unfrozen.


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_a_reset_stage_starts_from_a_fresh_state_with_the_body_at_its_lower_rate(name):
  """At the second stage's first step (count 2) the head's update is that of a fresh
  optimiser state at that count (no momentum carried, Adam's count from zero), the
  body's the same over lr_body_div."""
  out, _, grads = updates_by_step(name, FROZEN_THEN_UNFROZEN)
  updates, before, _ = out[2]
  params = optax.apply_updates(optax.apply_updates(PARAMS, out[0][0]), out[1][0])
  plain_plan = schedules.stage_plan([dict(size=8, steps=2)] * 2, 8, 100)
  plain_schedules = schedules.make_schedules(plain_plan, 1.0, cycle="stage")
  plain = optim.make_optimizer(opt_config(name), *plain_schedules, lr_scale=0.1)
  fresh = plain.init(params)._replace(count=before.count)
  expected, _ = plain.update(grads, fresh, params)
  np.testing.assert_allclose(updates["head"]["dense"]["kernel"],
                             expected["head"]["dense"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(updates["conv"]["kernel"], expected["conv"]["kernel"] / 4, rtol=1e-6)
  # Without reset_opt the head's update carries the first stage's momentum.
  kept = (FROZEN_THEN_UNFROZEN[0], {**FROZEN_THEN_UNFROZEN[1], "reset_opt": False})
  carried = updates_by_step(name, kept)[0][2][0]["head"]["dense"]["kernel"]
  assert np.abs(carried - expected["head"]["dense"]["kernel"]).max() > 1e-4


def test_no_fine_tuning_keeps_the_plain_optimiser():
  plan = schedules.stage_plan([dict(size=8, steps=2), dict(size=16, steps=2)], 8, 100)
  assert optim.FineTuning.from_plan(plan, 1.0) is None
  assert optim.FineTuning.from_plan(plan, 2.0) is not None


def test_fine_tune_stages_are_fastais_fine_tune():
  stages = schedules.fine_tune_stages(224, 5, 1, lr_factor=0.5, batch_size=64)
  assert stages == (
      dict(size=224, reset_opt=True, batch_size=64, epochs=1, frozen=True, lr_factor=0.5,
           pct_start=0.99, lr_body_div=10.0),
      dict(size=224, reset_opt=True, batch_size=64, epochs=5, lr_factor=0.25, div=5.0,
           pct_start=0.3, lr_body_div=100.0))
  plan = schedules.stage_plan(stages, 64, 64 * 10)  # 10 steps an epoch.
  lr_fn, _ = schedules.make_schedules(plan, 2e-3, cycle="stage", div=25.0, div_final=1e5,
                                      pct_start=0.25, moms=(0.95, 0.85, 0.95))
  lr = np.asarray(lr_fn(np.arange(60)))
  # fine_tune(5, base_lr=1e-3): 1e-3 / 25 rising to 1e-3 at 99% of the frozen epoch, then
  # 5e-4 / 5 rising to 5e-4 at 30% of the next five.
  anneal = lambda a, b, pos: a + (1 + np.cos(np.pi * (1 - pos))) * (b - a) / 2  # fastai's SchedCos.
  np.testing.assert_allclose(
      [lr[0], lr[9], lr[10], lr[25], lr[59]],
      [4e-5, anneal(4e-5, 1e-3, 0.9 / 0.99), 1e-4, 5e-4, anneal(5e-4, 5e-9, (49 / 50 - 0.3) / 0.7)],
      rtol=1e-4)
  fine_tuning = optim.FineTuning.from_plan(plan, 1.0)
  steps_ = np.array([0, 9, 10, 59])
  np.testing.assert_array_equal(fine_tuning.frozen(steps_), [True, True, False, False])
  np.testing.assert_array_equal(fine_tuning.reset(steps_), [True, False, True, False])
  np.testing.assert_allclose(fine_tuning.body_lr(steps_), [0.1, 0.1, 0.01, 0.01])
  assert schedules.fine_tune_stages(224, 5, split=False)[0]["frozen"] is False
  assert [s["lr_body_div"] for s in schedules.fine_tune_stages(224, 5, split=False)] == [1.0, 1.0]


def fine_tune_config(smoke_config, **stage):
  config = smoke_config
  config.opt.cycle = "stage"
  config.stages = (dict(size=32, steps=4), dict(size=32, steps=4, reset_opt=True, **stage))
  return config


@pytest.mark.parametrize("stage, cycle, pattern", [
    (dict(frozen=1), "stage", r"config\.stages\[1\]\.frozen must be True or False, got 1"),
    (dict(lr_factor=0), "stage", r"config\.stages\[1\]\.lr_factor must be a positive number"),
    (dict(lr_body_div=-1.0), "stage", r"config\.stages\[1\]\.lr_body_div must be a positive"),
    (dict(pct_start=1.0), "stage", r"config\.stages\[1\]\.pct_start must be in \(0, 1\)"),
    (dict(div=5.0), "run", (r"config\.stages\[1\]\.div shapes the stage's own one-cycle: it "
                            r"needs config\.opt\.cycle='stage', not 'run'")),
])
def test_bad_stage_optimiser_keys_name_the_key(smoke_config, stage, cycle, pattern):
  config = fine_tune_config(smoke_config, **stage)
  config.opt.cycle = cycle
  with pytest.raises(ConfigError, match=pattern):
    validate(config, jax.device_count())


def test_a_reset_stage_may_keep_the_size_and_opt_fields_are_checked(smoke_config):
  config = fine_tune_config(smoke_config)
  validate(config, jax.device_count())
  config.stages = (dict(size=32, steps=4), dict(size=32, steps=4))
  with pytest.raises(ConfigError, match=r"stages\[1\]\.size=32 does not grow"):
    validate(config, jax.device_count())
  config = fine_tune_config(smoke_config)
  config.opt.lr_body_div = 0.0
  with pytest.raises(ConfigError, match=r"config\.opt\.lr_body_div must be a positive number"):
    validate(config, jax.device_count())
  # A fresh ConfigDict: the command line could not give a bool field a string, Python can.
  config.opt = ml_collections.ConfigDict({**config.opt.to_dict(), "lr_body_div": 100.0,
                                          "train_bn": "yes"})
  with pytest.raises(ConfigError, match=r"config\.opt\.train_bn must be True or False"):
    validate(config, jax.device_count())


def save_source(workdir, model_config, num_classes: int, size: int = 32):
  """A checkpoint at step 0 of a model with `num_classes` outputs, as `progressive import`
  writes one: random parameters and batch statistics of its own seed."""
  model = models.build(model_config, num_classes=num_classes)
  state = steps.create_train_state(model, optax.sgd(0.1), jax.random.key(7), size)
  noise = lambda x: x + jax.random.uniform(jax.random.key(8), x.shape)
  state = state.replace(batch_stats=jax.tree.map(noise, state.batch_stats))
  mngr = checkpoints.manager(epath.Path(workdir), 1)
  checkpoints.save(mngr, 0, state, {}, stage=0, config_json={})
  checkpoints.wait(mngr)
  mngr.close()
  return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def test_init_from_starts_a_head_of_another_class_count_afresh(smoke_config, tmp_path, capsys):
  source = save_source(tmp_path / "source", smoke_config.model, num_classes=5)
  info = pipeline.dataset_info(smoke_config.data)
  plan = schedules.stage_plan(smoke_config.stages, smoke_config.batch_size, info.num_train)
  fresh = train.build_state(smoke_config, info, plan, parallel.make_mesh())
  state = jax.device_get(checkpoints.init_from(str(tmp_path / "source"), fresh))
  assert info.num_classes == 12 and state.params["head"]["dense"]["kernel"].shape[-1] == 12
  jax.tree.map(np.testing.assert_array_equal, state.params["head"],
               jax.device_get(fresh.params["head"]))
  body = {k: v for k, v in state.params.items() if k != "head"}
  jax.tree.map(np.testing.assert_array_equal, body,
               {k: v for k, v in source["params"].items() if k != "head"})
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, source["batch_stats"])
  assert "the head starts afresh (params.head.dense.bias has shape [5] in" in capsys.readouterr().out
  smoke_config.model.channels = (8, 16, 64)
  other = train.build_state(smoke_config, info, plan, parallel.make_mesh())
  with pytest.raises(ConfigError, match=r"params\.conv2\.\S+ has shape \[(3, 3, 16, )?32\] there "
                     r"and \[(3, 3, 16, )?64\] here.*the head alone may differ"):
    checkpoints.init_from(str(tmp_path / "source"), other)


def restored(workdir, step):
  path = epath.Path(workdir) / "checkpoints" / str(step) / "state"
  return ocp.StandardCheckpointer().restore(path)


def split(params):
  return {k: v for k, v in params.items() if k != "head"}, params["head"]


@pytest.mark.slow
def test_fine_tune_from_another_class_count_freezes_then_trains_the_body(
    smoke_config, tmp_path, monkeypatch):
  """fine_tune_stages(epochs=0.25, freeze_epochs=0.25) from a 5-class network on the
  12-class smoke data, stopped mid-freeze and resumed: the body is bitwise the source's
  after the frozen stage (batch-norm statistics updated), the head trained from a fresh
  start; then the body trains at the head's rate / 100."""
  source = save_source(tmp_path / "source", smoke_config.model, num_classes=5)
  config = smoke_config
  config.init_from = str(tmp_path / "source")
  config.opt.cycle, config.opt.train_bn = "stage", False
  config.stages = schedules.fine_tune_stages(32, 0.25, 0.25)  # 4 steps each at batch 64.
  config.eval_sizes = (32,)
  config.checkpoint_every_steps, config.max_to_keep, config.log_every_steps = 2, 10, 1
  workdir = tmp_path / "run"
  die_after_save(monkeypatch, 2)  # In the middle of the frozen stage.
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  train.train_and_evaluate(config, str(workdir))

  fresh = train.build_state(config, pipeline.dataset_info(config.data),
                            schedules.stage_plan(config.stages, 64, 1024), parallel.make_mesh())
  frozen, unfrozen = restored(workdir, 4), restored(workdir, 8)
  source_body, _ = split(source["params"])
  body, head = split(frozen["params"])
  jax.tree.map(np.testing.assert_array_equal, body, source_body)
  differs = lambda a, b: not np.array_equal(a, b)
  assert all(jax.tree.leaves(jax.tree.map(differs, head, jax.device_get(fresh.params["head"]))))
  stats_changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), frozen["batch_stats"],
                               source["batch_stats"])
  assert all(jax.tree.leaves(stats_changed))  # Batch norm in training mode while frozen.
  body_changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), split(unfrozen["params"])[0],
                              source_body)
  assert all(jax.tree.leaves(body_changed))
  # The head's LR from the optimiser state and the train rows, the body's from the stage.
  plan = schedules.stage_plan(config.stages, 64, 1024)
  lr_fn, _ = schedules.make_schedules(plan, config.opt.lr_max, cycle="stage", div=config.opt.div,
                                      div_final=config.opt.div_final,
                                      pct_start=config.opt.pct_start, moms=tuple(config.opt.moms))
  hyper = unfrozen["opt_state"]["hyperparams"]
  assert int(unfrozen["opt_state"]["count"]) == 8
  head_lr = float(hyper["learning_rate"] * hyper["lr_scale"])  # Of the last step, 7.
  assert head_lr == pytest.approx(float(lr_fn(7)), rel=1e-6)
  fine_tuning = optim.FineTuning.from_plan(plan, config.opt.lr_body_div)
  assert float(fine_tuning.body_lr(7)) == pytest.approx(0.01) and not fine_tuning.frozen(7)
  assert float(fine_tuning.body_lr(3)) == pytest.approx(0.1) and fine_tuning.frozen(3)
  rows = [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "train"]
  assert rows[-1]["step"] == 8 and rows[-1]["lr"] == pytest.approx(head_lr, rel=1e-6)
