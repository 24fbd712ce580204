"""The simple CNN: shapes at several sizes, parameter counts, heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from progressive import models


def _model_config(**overrides):
  config = default.get_config("smoke").model
  config.update(overrides)
  return config


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", [16, 24, 33, 64])
def test_gap_head_runs_at_every_size(size):
  model = models.build(_model_config(), num_classes=12)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  logits = model.apply(variables, jnp.ones((2, size, size, 3)))
  assert logits.shape == (2, 12) and logits.dtype == jnp.float32


@pytest.mark.parametrize("batch_norm", [True, False])
def test_parameter_count_matches_formula(batch_norm):
  channels, k0, k = (8, 16, 32), 5, 3
  config = _model_config(channels=channels, first_kernel=k0, kernel=k, batch_norm=batch_norm)
  variables = models.build(config, num_classes=12).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  expected, c_in = 0, 3
  for i, c_out in enumerate(channels):
    ks = k0 if i == 0 else k
    expected += ks * ks * c_in * c_out + (2 * c_out if batch_norm else c_out)  # BN: scale, bias.
    c_in = c_out
  expected += channels[-1] * 12 + 12  # Dense head.
  assert _param_count(variables["params"]) == expected
  if batch_norm:  # Running mean and variance: 2 per channel, not parameters.
    assert _param_count(variables["batch_stats"]) == 2 * sum(channels)
    assert "bias" not in variables["params"]["conv0"]["conv"]


def test_flatten_head_is_tied_to_its_size():
  model = models.build(_model_config(head="flatten"), num_classes=12)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert model.apply(variables, jnp.ones((1, 32, 32, 3))).shape == (1, 12)
  with pytest.raises(ValueError, match="only runs at the input size it was initialised at"):
    model.apply(variables, jnp.ones((1, 64, 64, 3)))


def test_bfloat16_compute_keeps_float32_params():
  model = models.build(_model_config(dtype="bfloat16"), num_classes=12)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  assert model.apply(variables, jnp.ones((1, 32, 32, 3))).dtype == jnp.float32


def test_unknown_model_name():
  with pytest.raises(ValueError, match="config.model.name must be one of"):
    models.build(_model_config(name="nope"), num_classes=3)
