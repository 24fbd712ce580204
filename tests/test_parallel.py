"""The data-parallel step: N devices compute what one device does on the global batch."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from progressive import models, optim, schedules
from progressive.config import ConfigError
from progressive.training import parallel, steps, train


def _state_and_step(devices, config):
  mesh = parallel.make_mesh(devices)
  model = models.build(config.model, num_classes=12, bn_axis_name=steps.AXIS)
  plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
  lr_fn, mom_fn = schedules.make_schedules(plan, config.opt.lr_max)
  tx = optim.make_optimizer(config.opt, lr_fn, mom_fn)
  state = steps.create_train_state(model, tx, jax.random.key(0), 32)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  step = parallel.make_train_step(mesh, mean=(0.5,) * 3, std=(0.29,) * 3)
  return state, step, NamedSharding(mesh, P(steps.AXIS))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_one_and_four_devices_agree(batch_norm):
  assert jax.device_count() == 4, "conftest sets a fake 4-device host"
  config = default.get_config("smoke")
  config.model.batch_norm = batch_norm
  rng = np.random.default_rng(0)
  batches = [
      {
          "image": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
          "label": rng.integers(0, 12, (32,), dtype=np.int32),
      }
      for _ in range(3)
  ]
  results = {}
  for n in (1, 4):
    state, step, sharding = _state_and_step(jax.devices()[:n], config)
    losses = []
    for batch in batches:
      state, metrics = step(state, parallel.shard_batch(batch, sharding), 24)
      losses.append(float(metrics["loss"]))
    results[n] = (losses, jax.device_get(state.params), jax.device_get(state.batch_stats))
  np.testing.assert_allclose(results[1][0], results[4][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[1][1], results[4][1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[1][2], results[4][2])
  # The steps really trained: parameters moved away from their initial values.
  state0, _, _ = _state_and_step(jax.devices()[:1], config)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), results[4][1], jax.device_get(state0.params))
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_batch_not_divisible_over_devices_is_a_config_error(smoke_config, tmp_path):
  smoke_config.batch_size = 66
  with pytest.raises(ConfigError, match="does not divide evenly over 4 devices"):
    train.train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
