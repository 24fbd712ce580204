"""The scale measurements' controls (`progressive.analysis.controls`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from progressive import models
from progressive.analysis import controls


def _images(n=3, size=32):
  return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [16, 24, 31])
def test_a_smaller_canvas_keeps_every_pixel_it_keeps(size):
  images = _images()
  out = controls.canvas(images, size)
  start = (32 - size) // 2
  assert out.shape == (3, size, size, 3)
  np.testing.assert_array_equal(out, images[:, start:start + size, start:start + size])


@pytest.mark.parametrize("mode", controls.CANVAS_MODES)
@pytest.mark.parametrize("size", [40, 48, 33])
def test_a_larger_canvas_holds_the_image_unchanged(mode, size):
  images = _images()
  out = controls.canvas(images, size, mode)
  before = (size - 32) // 2
  assert out.shape == (3, size, size, 3)
  np.testing.assert_array_equal(out[:, before:before + 32, before:before + 32], images)
  border = out[:, :before].astype(int)
  if mode == "constant":
    assert not border.any()
  elif mode == "edge":
    np.testing.assert_array_equal(out[:, 0, before:before + 32], images[:, 0])


def test_the_canvas_changes_the_feature_map_but_not_the_objects(smoke_config):
  model = models.build(smoke_config.model, num_classes=12)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  captured = {}
  for size in (32, 48):
    x = jnp.asarray(controls.canvas(_images(1), size), jnp.float32)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    # The map the head pools: its side grows with the canvas (8 px per position).
    captured[size] = state["intermediates"]["conv2"]["__call__"][0].shape[1]
  assert captured == {32: 4, 48: 6}


def test_bad_canvas_mode():
  with pytest.raises(ValueError, match="canvas mode must be one of"):
    controls.canvas(_images(), 40, "wrap")


def test_grid_marks_sizes_off_the_subsampling_period(smoke_config):
  result = controls.grid(smoke_config.model, [16, 20, 24, 36, 64], 12)
  assert result == {"total_stride": 8, "misaligned": [20, 36]}
