"""Decoding encoded images on the host straight to the size a batch needs.

A JPEG is decoded at reduced scale in the DCT domain (PIL's `draft`: 1/2, 1/4 or 1/8
of full size, libjpeg's scaled IDCT) whenever the region to crop still has at least the
output's pixels at that scale; the region is then resampled once, antialiased, to the
output size. So a 128 px training crop of a 500x375 photograph costs a fraction of a
224 px one, where a full decode would cost both the same. Other formats (PNG, WebP,
...) decode in full. EXIF orientation is applied, and every mode (grey, palette, RGBA,
CMYK, 16-bit) becomes 8-bit RGB.

Measured against a full decode and one resize of the same crop box (tests/test_folder.py
and docs/BENCHMARKS.md): the reduced-scale IDCT is itself a low-pass, so the result is
slightly softer; the mean absolute difference is about 1 grey level of 255.

`check` decodes a whole file once, to find files that would fail later (a JPEG at 1/8
scale: the scaled IDCT still reads every byte of the entropy-coded data, so a truncated
or corrupt file fails there as it would at full size).
"""

import io
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in source pixels.
# EXIF orientations that swap width and height (90 and 270 degree rotations).
_TRANSPOSED = (5, 6, 7, 8)
_ORIENTATION_TAG = 0x0112
# What PIL raises for a file it cannot decode (struct.error and EOFError from some
# plugins' parsers on corrupt headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                  Image.DecompressionBombError)


class UnreadableImageError(ValueError):
  """An encoded image PIL cannot decode: `name` (its file path, or None) and `cause`
  (PIL's reason, one line), both also in the message."""

  def __init__(self, message: str, name: str | None = None, cause: str = ""):
    super().__init__(message)
    self.name, self.cause = name, cause

  def __reduce__(self):  # Pickled whole: it crosses from grain's worker processes.
    return type(self), (str(self), self.name, self.cause)


def _cause(error: Exception) -> str:
  """PIL's reason for `error`, without the repr of the in-memory file it names."""
  if isinstance(error, Image.UnidentifiedImageError):
    return "cannot identify image file"
  return " ".join(str(error).split()) or type(error).__name__


def _unreadable(name: str | None, error: Exception) -> UnreadableImageError:
  cause = _cause(error)
  return UnreadableImageError(f"Cannot decode {name or 'an encoded image'}: {cause}", name, cause)


class Encoded(NamedTuple):
  """Encoded image bytes and where they came from (a file path, for errors)."""
  data: bytes
  name: str | None = None


def is_encoded(image) -> bool:
  return isinstance(image, (bytes, Encoded))


def _parts(image: "bytes | Encoded") -> tuple[bytes, str | None]:
  return (image.data, image.name) if isinstance(image, Encoded) else (bytes(image), None)


def _orientation(image: Image.Image) -> int:
  try:
    return int(image.getexif().get(_ORIENTATION_TAG, 1))
  except (OSError, ValueError, TypeError, SyntaxError):  # Malformed EXIF: ignored, as PIL does.
    return 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
  """`(height, width)` of `image` once its EXIF orientation is applied."""
  width, height = image.size
  return (width, height) if _orientation(image) in _TRANSPOSED else (height, width)


def to_rgb(image: Image.Image) -> Image.Image:
  """8-bit RGB: grey and 16-bit grey repeat, palettes expand (transparency dropped),
  RGBA and LA drop alpha, CMYK and YCbCr convert."""
  if image.mode == "RGB":
    return image
  if image.mode == "P":
    image = image.convert("RGBA")
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    array = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
    image = Image.fromarray(np.clip(np.rint(array * 255.0 / top), 0, 255).astype(np.uint8))
  return image.convert("RGB")


def decode_region(encoded: "bytes | Encoded", size: int, box_fn: Callable[[int, int], Box], *,
                  reduce: bool = True) -> np.ndarray:
  """Decodes `encoded` (bytes or `Encoded`) and returns the region `box_fn(height,
  width)` resized to uint8 `[size, size, 3]`.

  `box_fn` sees the oriented image's height and width (read from the header, before
  decoding) and returns the region in those pixels. With `reduce`, a JPEG is decoded at
  the smallest DCT scale that keeps at least `size` pixels across the region on both
  axes. An `Encoded`'s name (a file path) goes into the error if it cannot be decoded.
  """
  data, name = _parts(encoded)
  try:
    with Image.open(io.BytesIO(data)) as image:
      height, width = oriented_size(image)
      box = tuple(float(b) for b in box_fn(height, width))
      if reduce and image.format == "JPEG":
        # The same factor on both axes, so the EXIF rotation does not matter.
        factor = max(size / max(box[2] - box[0], 1e-9), size / max(box[3] - box[1], 1e-9))
        if factor < 1.0:
          raw_w, raw_h = image.size
          image.draft("RGB", (int(np.ceil(raw_w * factor)), int(np.ceil(raw_h * factor))))
      if _orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
      image = to_rgb(image)
      if image.size != (width, height):  # Decoded at reduced scale (sides rounded up).
        sx, sy = image.width / width, image.height / height
        box = (box[0] * sx, box[1] * sy, min(box[2] * sx, image.width), min(box[3] * sy, image.height))
      if box == (0.0, 0.0, float(image.width), float(image.height)) and image.size == (size, size):
        return np.asarray(image)
      return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
  except _DECODE_ERRORS as e:
    raise _unreadable(name, e) from None


def decode(encoded: "bytes | Encoded") -> np.ndarray:
  """The whole image, uint8 `[H, W, 3]`, orientation applied."""
  data, name = _parts(encoded)
  try:
    with Image.open(io.BytesIO(data)) as opened:
      return np.asarray(to_rgb(ImageOps.exif_transpose(opened)))
  except _DECODE_ERRORS as e:
    raise _unreadable(name, e) from None


def _not_readable(path, error: Exception) -> UnreadableImageError:
  cause = _cause(error)
  return UnreadableImageError(f"{path} is not a readable image: {cause}", str(path), cause)


def image_size(path) -> tuple[int, int]:
  """`(height, width)` from the file's header, orientation applied; `UnreadableImageError`
  naming the file if PIL cannot read it as an image. Reads the header only: a truncated
  JPEG passes (`check` decodes)."""
  try:
    with Image.open(path) as image:
      image.verify()  # Checksums where the format has them (PNG); JPEG: the header only.
    with Image.open(path) as image:
      return oriented_size(image)
  except _DECODE_ERRORS as e:
    raise _not_readable(path, e) from None


def _decode_small(image: Image.Image) -> tuple[int, int]:
  size = oriented_size(image)
  if image.format == "JPEG":
    image.draft("RGB", (1, 1))  # The smallest DCT scale libjpeg has, 1/8.
  image.load()
  to_rgb(image)
  return size


def check(path) -> tuple[int, int]:
  """Decodes the file at `path` whole, to catch what a header does not show (a truncated
  or corrupt JPEG); returns `(height, width)`, orientation applied. A JPEG is decoded at
  1/8 scale, which reads all of its data at a fraction of the cost; other formats decode
  in full. `UnreadableImageError` naming the file if it cannot be decoded."""
  try:
    with Image.open(path) as image:
      if image.format == "JPEG":  # No checksums to verify.
        return _decode_small(image)
      image.verify()  # Checksums where the format has them (PNG); spends `image`.
    with Image.open(path) as image:
      return _decode_small(image)
  except _DECODE_ERRORS as e:
    raise _not_readable(path, e) from None
