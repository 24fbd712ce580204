"""On-device image transforms: zooming a batch (never a crop) and normalising it."""

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


def preprocess(images: jax.Array, size: int, mean, std) -> jax.Array:
  """uint8 `[B, S, S, 3]` to normalised float32 `[B, size, size, 3]` (a zoom, not a crop).

  The one transform between the host's images and the model, shared by the training and
  evaluation steps and by the analysis of checkpoints.
  """
  images = resize_images(images, size) / 255.0
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
