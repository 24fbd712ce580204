"""Resizing a batch of images on the device: a zoom of the whole image, never a crop."""

import jax
import jax.numpy as jnp


def resize_images(images: jax.Array, size: int) -> jax.Array:
  """Resizes `[B, H, W, C]` images to `[B, size, size, C]` float32.

  Bilinear interpolation with an antialiasing (area-matched triangle) filter when
  shrinking, so fine patterns average out as they would in a real lower-resolution
  image instead of aliasing. Same-size inputs are only cast.
  """
  images = jnp.asarray(images, jnp.float32)
  b, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  return jax.image.resize(images, (b, size, size, c), method="linear", antialias=True)
