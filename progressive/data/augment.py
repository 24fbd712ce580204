"""Host-side image transforms: any uint8 `[H, W, 3]` image to a fixed `[S, S, 3]`.

Train: random-resized-crop (torchvision's algorithm, fastai's `RandomResizedCrop` with
`min_scale`), random integer translation (for Azulay & Weiss's stride^2 argument: shifts
covering the subsampling period) and horizontal flip. Eval: resize-then-centre-crop.
Resampling is PIL's bilinear, which filters over the whole source area when shrinking
(antialiased, like the on-device zoom in `progressive.data.resize`). The device later
zooms the fixed-size image to the stage size.
"""

import dataclasses
import math

import numpy as np
from PIL import Image

from progressive.data import decode

AUGMENTS = ("none", "flip", "rrc_flip", "shift_flip")
RRC_RATIO = (3 / 4, 4 / 3)


def resize_box(image: np.ndarray, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
  """The region `box` = (left, top, right, bottom) of `image`, resized to `[size, size, 3]`.

  Returns `image` itself when the box is the whole image and already `size` square.
  """
  h, w = image.shape[:2]
  if box == (0, 0, w, h) and h == w == size:
    return image
  resized = Image.fromarray(image).resize(
      (size, size), Image.Resampling.BILINEAR, box=tuple(float(b) for b in box))
  return np.asarray(resized)


def center_box(height: int, width: int, crop: float = 1.0) -> tuple[float, float, float, float]:
  """The centred square of side `crop * min(height, width)`, as a box."""
  if crop == 1.0 and height == width:
    return (0, 0, width, height)
  side = crop * min(height, width)
  left, top = (width - side) / 2, (height - side) / 2
  return (left, top, left + side, top + side)


def center_crop(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
  """The centred square of side `crop * min(H, W)`, resized to `[size, size, 3]`.

  `crop=1` takes the whole shorter side (the whole image, if square); `crop=0.875` is
  the ImageNet-style resize to `size / 0.875` then centre crop to `size`.
  """
  return resize_box(image, size, center_box(*image.shape[:2], crop))


def rrc_box(height: int, width: int, rng: np.random.Generator, *,
            scale: tuple[float, float] = (0.35, 1.0),
            ratio: tuple[float, float] = RRC_RATIO) -> tuple[int, int, int, int]:
  """A random crop `(left, top, right, bottom)` covering a fraction in `scale` of the
  image area with aspect ratio (w / h) in `ratio`, log-uniform; torchvision's algorithm.

  After 10 rejected draws, the largest centred crop with a ratio in range.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif aspect > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  top, left = (height - h) // 2, (width - w) // 2
  return left, top, left + w, top + h


def translate(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
  """`image` `[H, W, C]` with its content moved `dx` px right and `dy` px down (as
  `progressive.analysis.shift.translate` moves it); the pixels uncovered repeat the
  nearest edge pixel (`np.pad`'s "edge": a `scale_shapes` scene's flat background, so its
  object moves over the background as when redrawn). Returns `image` itself for (0, 0)."""
  if dx == dy == 0:
    return image
  h, w = image.shape[:2]
  py, px = abs(dy), abs(dx)
  padded = np.pad(image, ((py, py), (px, px), (0, 0)), mode="edge")
  return padded[py - dy:py - dy + h, px - dx:px - dx + w]


@dataclasses.dataclass(frozen=True)
class Transform:
  """What every example goes through on the host before batching.

  `eval`: `center_crop(image, size, eval_crop)`. `train`: with `augment="rrc_flip"` a
  random-resized-crop (area fraction in `[min_scale, 1]`, ratio in 3/4..4/3) to `size`,
  otherwise the eval transform; with `"shift_flip"` the result is then translated by
  `(dx, dy)`, each uniform over the integers in `[-max_shift, max_shift]` (`translate`:
  pixels of the `size` output, edges repeated); then with any augment but `"none"` a
  horizontal flip with probability 1/2. The draws come from `rng` in that order (box,
  shift, flip), so one `rng` state gives one output.

  An image may be a decoded uint8 array or encoded bytes (`decode.Encoded`); encoded
  ones are decoded straight to the crop at `size` (`decode.decode_region`: a JPEG at
  reduced DCT scale where the crop allows). The same random draws give the same box
  either way.
  """

  size: int
  augment: str = "none"
  min_scale: float = 0.35
  eval_crop: float = 1.0
  max_shift: int = 0  # shift_flip: the largest shift, px of the output, along each axis.

  def eval(self, image) -> np.ndarray:
    if decode.is_encoded(image):
      return decode.decode_region(image, self.size, lambda h, w: center_box(h, w, self.eval_crop))
    return center_crop(image, self.size, self.eval_crop)

  def train(self, image, rng: np.random.Generator | None) -> np.ndarray:
    """`rng` may be None only with `augment="none"`."""
    if self.augment == "rrc_flip":
      scale = (self.min_scale, 1.0)
      if decode.is_encoded(image):
        image = decode.decode_region(image, self.size, lambda h, w: rrc_box(h, w, rng, scale=scale))
      else:
        image = resize_box(image, self.size, rrc_box(*image.shape[:2], rng, scale=scale))
    else:
      image = self.eval(image)
    if self.augment == "shift_flip":
      dx, dy = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
      image = translate(image, int(dx), int(dy))
    if self.augment != "none" and rng.random() < 0.5:
      image = image[:, ::-1]
    return image
