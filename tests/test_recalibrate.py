"""Batch-norm recalibration at a test size (`progressive.training.recalibrate`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from progressive import models
from progressive.analysis import run as run_lib
from progressive.data.resize import preprocess
from progressive.training import recalibrate

MEAN, STD = (0.5, 0.5, 0.5), (0.3, 0.3, 0.3)


def _model_and_images(smoke_config, n=48, size=16, batch_norm=True):
  config = smoke_config.model
  config.batch_norm = batch_norm
  model = models.build(config, num_classes=12)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(0)
  # Images whose statistics differ from the initial running averages (mean 0, var 1).
  images = np.clip(rng.normal(170, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)
  return model, dict(variables), images


def _logits(model, variables, images, size):
  # The analysis's jitted logits (eagerly, every operation would be its own compile).
  return np.asarray(run_lib.make_logits_fn(model, MEAN, STD)(variables, images, size))


def _running_averages(model, variables, images, size, steps=80, batch=16):
  """What training's momentum updates converge to with the parameters held fixed."""
  @jax.jit
  def update(stats, x):
    _, updates = model.apply({"params": variables["params"], "batch_stats": stats},
                             preprocess(x, size, MEAN, STD), train=True, mutable=["batch_stats"])
    return updates["batch_stats"]

  stats = variables["batch_stats"]
  for i in range(steps):
    stats = update(stats, jnp.asarray(images[(i * batch) % len(images):][:batch]))
  return {**variables, "batch_stats": stats}


def test_statistics_are_the_population_ones_whatever_the_batch_size(smoke_config):
  model, variables, images = _model_and_images(smoke_config)
  moments = jax.jit(
      lambda v, x: recalibrate.batch_moments(model.apply, v, preprocess(x, 24, MEAN, STD)))
  whole = moments(variables, jnp.asarray(images))
  for batch_size in (48, 24, 32):  # One batch; two equal ones; a short last batch.
    out = recalibrate.recalibrate(model.apply, variables, images, 24, MEAN, STD, batch_size=batch_size)
    # The first layer's input does not depend on batch norm: exact for any batching.
    # Deeper layers see earlier ones normalised by each batch's own statistics (as in
    # training), so they move slightly with the batching.
    for name, layer in out["batch_stats"].items():
      exact = batch_size == len(images) or name == "conv0"
      for key in ("mean", "var"):
        np.testing.assert_allclose(
            layer["bn"][key], whole[name]["bn"][key], rtol=2e-4 if exact else 3e-2,
            atol=1e-5 if exact else 3e-3, err_msg=f"{name}.{key}, batch {batch_size}",
        )
  # The stored statistics were the initial ones (mean 0, var 1): they really changed.
  first = jax.tree.leaves(out["batch_stats"])[0]
  assert not np.allclose(first, jax.tree.leaves(variables["batch_stats"])[0], atol=0.05)


def test_recalibration_recovers_what_corrupted_statistics_destroyed(smoke_config):
  model, variables, images = _model_and_images(smoke_config)
  trained = _running_averages(model, variables, images, 16)
  reference = _logits(model, trained, images, 16)

  corrupted = {**trained, "batch_stats": jax.tree_util.tree_map_with_path(
      lambda path, x: x * 50 if path[-1].key == "var" else x + 3, trained["batch_stats"])}
  broken = _logits(model, corrupted, images, 16)
  assert np.mean(np.argmax(broken, -1) == np.argmax(reference, -1)) < 0.5

  fixed = recalibrate.recalibrate(model.apply, corrupted, images, 16, MEAN, STD, batch_size=16)
  same = recalibrate.recalibrate(model.apply, trained, images, 16, MEAN, STD, batch_size=16)
  # Nothing of the stored statistics is used...
  jax.tree.map(np.testing.assert_array_equal, fixed["batch_stats"], same["batch_stats"])
  # ...and at the size the running averages were taken, they barely move.
  recovered = _logits(model, fixed, images, 16)
  assert np.mean(np.argmax(recovered, -1) == np.argmax(reference, -1)) > 0.9
  np.testing.assert_allclose(recovered, reference, rtol=0.1, atol=0.1 * np.abs(reference).max())


def test_a_model_without_batch_norm_is_left_as_it_is(smoke_config):
  model, variables, images = _model_and_images(smoke_config, batch_norm=False)
  assert not recalibrate.has_batch_norm(variables)
  out = recalibrate.recalibrate(model.apply, variables, images, 16, MEAN, STD)
  jax.tree.map(np.testing.assert_array_equal, out["params"], variables["params"])


def test_no_images_is_an_error(smoke_config):
  model, variables, images = _model_and_images(smoke_config)
  with pytest.raises(ValueError, match="at least one image"):
    recalibrate.recalibrate(model.apply, variables, images[:0], 16, MEAN, STD)
