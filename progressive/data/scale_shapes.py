"""`scale_shapes`: outlines and fixed-period textures drawn at random scales.

Twelve classes in two families. Shapes (`disc` ... `star`) differ only by their outline,
a property that survives a change of scale. Textures (`stripes_p2` ... `checks_p8`)
share their silhouettes and differ only by a fill pattern whose period is fixed in
pixels of the stored image, a property that does not survive shrinking the image (a
period under 2 pixels averages out). See docs/SCALE_SHAPES.md.

The scene is continuous: coordinates are canvas fractions in [0, 1], x to the right
(columns), y down (rows). `render` draws it at any size by box-averaging supersamples,
so the stored image is one exact rendering of the scene and other sizes are what a
camera with fewer or more pixels would record.
"""

import dataclasses
import io
import math
import types
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

CLASS_NAMES = (
    "disc", "square", "triangle", "cross", "ring", "star",
    "stripes_p2", "stripes_p4", "stripes_p8", "checks_p2", "checks_p4", "checks_p8",
)
FAMILY_NAMES = ("shape", "texture")
CLASS_FAMILY = (0,) * 6 + (1,) * 6
NUM_CLASSES = len(CLASS_NAMES)
# Fill period (one dark plus one light band) in pixels of the stored image.
TEXTURE_PERIODS = types.MappingProxyType({
    "stripes_p2": 2, "stripes_p4": 4, "stripes_p8": 8,
    "checks_p2": 2, "checks_p4": 4, "checks_p8": 8,
})
TEXTURE_SILHOUETTES = ("disc", "square")
SPLITS = ("train", "test")

# Minimum difference in luma (0..255, Rec. 601) between any two of the three colours.
MIN_LUMA_CONTRAST = 60.0
_LUMA = (0.299, 0.587, 0.114)
# Geometry in units of the bounding-circle radius, chosen so that the outlines stay
# apart at 16 px with object_scale 0.3 (about 5 px across): thick arms, a wide hole,
# fat star points.
_CROSS_HALF_WIDTH = 0.36
_RING_INNER = 0.52
_STAR_POINTS = 5
_STAR_INNER = 0.48


class Nuisances(NamedTuple):
  """Everything `render` draws from its seed; shared by all labels for one seed."""
  background: np.ndarray  # [3] float64, 0..255.
  foreground: np.ndarray  # [3] object colour; the first pattern colour of textures.
  foreground2: np.ndarray  # [3] second pattern colour of textures.
  rotation: float  # Radians, of the outline about its centre.
  silhouette: int  # Index into TEXTURE_SILHOUETTES (textures only).
  horizontal: bool  # Stripe bands run horizontally (vary along y); else vertically.
  phase: tuple[int, int]  # Pattern offset (x, y) in storage pixels.


def nuisances(seed: int) -> Nuisances:
  """Draws the nuisances of one rendering from `seed`, independently of the label."""
  rng = np.random.default_rng(seed)
  while True:  # Rejection sampling in batches; deterministic for a seed.
    colours = rng.integers(0, 256, size=(32, 3, 3)).astype(np.float64)
    luma = colours @ np.array(_LUMA)
    gaps = np.abs(luma[:, [0, 0, 1]] - luma[:, [1, 2, 2]]).min(axis=1)
    ok = np.flatnonzero(gaps >= MIN_LUMA_CONTRAST)
    if ok.size:
      background, foreground, foreground2 = colours[ok[0]]
      break
  rotation = float(rng.uniform(0.0, 2.0 * np.pi))
  silhouette = int(rng.integers(len(TEXTURE_SILHOUETTES)))
  horizontal = bool(rng.integers(2))
  lcm = math.lcm(*TEXTURE_PERIODS.values())
  phase = tuple(int(p) for p in rng.integers(0, lcm, size=2))
  return Nuisances(background, foreground, foreground2, rotation, silhouette,
                   horizontal, phase)


def _supersampling(size: int, storage_size: int) -> int:
  """Samples per output pixel along each axis.

  At least 4, and where affordable a multiple that nests the sample cells inside
  storage pixels (size * k divisible by storage_size), which makes the box average of
  the pixel-aligned textures exact (e.g. sizes 16, 24, 32, 48, 64, 128 at storage 64).
  """
  k0 = storage_size // math.gcd(size, storage_size)
  k = k0 * -(-4 // k0)
  return k if k <= 16 else max(4, -(-4 * storage_size // size))


def _inside_outline(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u, v), in bounding-radius units about the centre, are inside.

  Only products, sums and comparisons on the arrays (no elementwise sin or atan2,
  whose last bit varies between platforms), so edge samples are reproducible.
  """
  if name == "disc":
    return u * u + v * v <= 1.0
  if name == "ring":
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= _RING_INNER**2)
  if name == "square":  # Vertices on the axes.
    return np.abs(u) + np.abs(v) <= 1.0
  if name == "triangle":  # Vertices at angles 0, 120, 240 degrees; inradius 1/2.
    h = math.sqrt(3.0) / 2.0
    return (u >= -0.5) & (0.5 * u + h * v <= 0.5) & (0.5 * u - h * v <= 0.5)
  if name == "cross":
    au, av = np.abs(u), np.abs(v)
    arm = math.sqrt(1.0 - _CROSS_HALF_WIDTH**2)
    return (((au <= _CROSS_HALF_WIDTH) & (av <= arm))
            | ((av <= _CROSS_HALF_WIDTH) & (au <= arm)))
  if name == "star":
    return _inside_star(u, v, _STAR_POINTS, _STAR_INNER)
  raise ValueError(f"Unknown outline {name!r}.")


def _inside_star(u: np.ndarray, v: np.ndarray, points: int, inner: float) -> np.ndarray:
  """Whether (u, v) is inside a regular star with tips on the unit circle.

  Tips at angles 2 pi k / points, notches at radius `inner` halfway between: the core
  polygon through the notches plus one triangular spike per tip.
  """
  half = math.pi / points
  notch_s, notch_t = inner * math.cos(half), inner * math.sin(half)
  in_core = np.ones(np.broadcast_shapes(u.shape, v.shape), bool)
  in_spike = np.zeros_like(in_core)
  for k in range(points):
    cos, sin = math.cos(2 * k * half), math.sin(2 * k * half)
    along = cos * u + sin * v  # Coordinates in the frame of tip k, at (1, 0).
    across = np.abs(cos * v - sin * u)
    beyond = along > notch_s
    in_core &= ~beyond
    # Inside the edge from the tip (1, 0) to the notch (notch_s, notch_t).
    in_spike |= beyond & ((1.0 - notch_s) * across <= notch_t * (1.0 - along))
  return in_core | in_spike


def _check_args(label, object_scale, center, size, storage_size):
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}.")
  if not 0.0 < object_scale <= 1.0:
    raise ValueError(f"object_scale must be in (0, 1], got {object_scale}.")
  if len(center) != 2:
    raise ValueError(f"center must be (x, y), got {center}.")
  if size < 1 or storage_size < 1:
    raise ValueError(f"size and storage_size must be >= 1, got {size}, {storage_size}.")


def _box_mean(mask: np.ndarray, k: int) -> np.ndarray:
  """Means of `mask` `[h * k, w * k]` over k x k blocks, float64 `[h, w]`."""
  mask = mask.view(np.uint8)
  columns = sum(mask[:, i::k].astype(np.uint16) for i in range(k))
  return sum(columns[i::k] for i in range(k)) / (k * k)


def _coverage(label, object_scale, center, size, seed, storage_size, pattern_shift=(0.0, 0.0)):
  """Per-pixel fractions of the scene covered by the two foreground colours.

  Returns `(first, second, nuisances)` with `first`, `second` float64 `[size, size]`;
  the background covers the rest. Only pixels overlapping the bounding circle are
  sampled.
  """
  _check_args(label, object_scale, center, size, storage_size)
  nz = nuisances(seed)
  name = CLASS_NAMES[label]
  first = np.zeros((size, size))
  second = np.zeros((size, size))
  cx, cy = float(center[0]), float(center[1])
  radius = object_scale / 2.0
  x0, x1 = max(0, math.floor((cx - radius) * size)), min(size, math.ceil((cx + radius) * size))
  y0, y1 = max(0, math.floor((cy - radius) * size)), min(size, math.ceil((cy + radius) * size))
  if x0 >= x1 or y0 >= y1:
    return first, second, nz
  k = _supersampling(size, storage_size)
  # Sample positions (canvas fractions): k evenly spaced cell centres per pixel.
  xs = (np.arange(x0 * k, x1 * k) + 0.5) / (size * k)
  ys = (np.arange(y0 * k, y1 * k) + 0.5) / (size * k)
  # Rotated coordinates in bounding-radius units; float32 halves the cost.
  dx = ((xs - cx) / radius).astype(np.float32)[None, :]
  dy = ((ys - cy) / radius).astype(np.float32)[:, None]
  cos, sin = np.float32(math.cos(nz.rotation)), np.float32(math.sin(nz.rotation))
  u = cos * dx + sin * dy
  v = cos * dy - sin * dx
  if CLASS_FAMILY[label] == 0:
    first[y0:y1, x0:x1] = _box_mean(_inside_outline(name, u, v), k)
    return first, second, nz
  inside = _inside_outline(TEXTURE_SILHOUETTES[nz.silhouette], u, v)
  # Band parity in storage pixels; the pattern is fixed to the canvas, not the object.
  half = TEXTURE_PERIODS[name] / 2
  px, py = (xs - pattern_shift[0]) * storage_size, (ys - pattern_shift[1]) * storage_size
  odd_x = (np.floor((px + nz.phase[0]) / half).astype(np.int64) & 1)[None, :]
  odd_y = (np.floor((py + nz.phase[1]) / half).astype(np.int64) & 1)[:, None]
  if name.startswith("checks"):
    odd = (odd_x ^ odd_y).astype(bool)
  else:
    odd = (odd_y if nz.horizontal else odd_x).astype(bool)
  second[y0:y1, x0:x1] = _box_mean(inside & odd, k)
  first[y0:y1, x0:x1] = _box_mean(inside, k) - second[y0:y1, x0:x1]
  return first, second, nz


def render(label: int, object_scale: float, center: tuple[float, float], size: int, *,
           seed: int = 0, storage_size: int = 64,
           pattern_shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """Renders one image of class `label`, uint8 `[size, size, 3]`.

  Args:
    label: class index into CLASS_NAMES.
    object_scale: diameter of the outline's bounding circle, fraction of the canvas.
    center: (x, y) of the object, canvas fractions.
    size: output side in pixels; any size shows the same scene.
    seed: draws all nuisances (`nuisances(seed)`); the same seed gives the same
      colours, rotation, silhouette, orientation and phase for every label.
    storage_size: the size at which texture periods are whole pixels; the period of
      class `c` is `TEXTURE_PERIODS[c] / storage_size` canvas fractions.
    pattern_shift: (dx, dy) canvas fractions by which the texture bands move (they are
      anchored to the canvas). Moving `center` and the bands by the same amount
      translates the whole object, fill included.
  """
  first, second, nz = _coverage(label, object_scale, center, size, seed, storage_size,
                                pattern_shift)
  image = (nz.background + first[..., None] * (nz.foreground - nz.background)
           + second[..., None] * (nz.foreground2 - nz.background))
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def object_coverage(label: int, object_scale: float, center: tuple[float, float],
                    size: int, *, seed: int = 0, storage_size: int = 64) -> np.ndarray:
  """Fraction of each pixel covered by the object, float64 `[size, size]` in [0, 1]."""
  first, second, _ = _coverage(label, object_scale, center, size, seed, storage_size)
  return first + second


def sample_example(index: int, *, seed: int, split: str = "train", storage_size: int = 64,
                   scale_range: tuple[float, float] = (0.3, 0.9)) -> dict[str, Any]:
  """Draws example `index` of `split`: its metadata and its `[S, S, 3]` uint8 image.

  Labels cycle through the classes (`index % 12`), so any run of 12 is balanced; the
  scale is uniform in `scale_range`; the centre is uniform over the positions that keep
  the bounding circle inside the canvas. Scale and centre are float32, as stored, and
  `render(label, object_scale, center, S, seed=seed, storage_size=S)` gives `image`.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  lo, hi = scale_range
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(f"scale_range must satisfy 0 < lo <= hi <= 1, got {scale_range}.")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  label = index % NUM_CLASSES
  object_scale = np.float32(rng.uniform(lo, hi))
  radius = float(object_scale) / 2.0
  center = rng.uniform(radius, 1.0 - radius, size=2).astype(np.float32)
  render_seed = int(rng.integers(2**62))
  image = render(label, float(object_scale), (float(center[0]), float(center[1])),
                 storage_size, seed=render_seed, storage_size=storage_size)
  return dict(image=image, label=label, family=CLASS_FAMILY[label],
              object_scale=object_scale, center=center, seed=render_seed)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 `[H, W, 3]` image (PIL; TFDS would need TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


@dataclasses.dataclass(eq=False)
class ScaleShapesConfig(tfds.core.BuilderConfig):
  """A size and sampling of `scale_shapes`."""
  storage_size: int = 64  # Stored image side in pixels; texture periods are in these.
  num_train: int = 10_000
  num_test: int = 2_000
  scale_range: tuple[float, float] = (0.3, 0.9)  # object_scale ~ U(scale_range).
  seed: int = 0  # Splits are drawn from (seed, split, index).


class ScaleShapes(tfds.core.GeneratorBasedBuilder):
  """TFDS builder `scale_shapes`: generated on the CPU, nothing downloaded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ScaleShapesConfig(
          name="default", description="64 px, 10000 train / 2000 test.",
          storage_size=64, num_train=10_000, num_test=2_000),
      ScaleShapesConfig(
          name="small", description="32 px, 1024 train / 256 test (tests, smoke runs).",
          storage_size=32, num_train=1024, num_test=256),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.storage_size
    return self.dataset_info_from_configs(
        description=(
            "Synthetic scale study: 6 shapes told apart by outline (scale invariant) and "
            "6 textures told apart by a stripe or check period of 2, 4 or 8 stored "
            "pixels (not scale invariant), at random object scales, positions, colours "
            "and rotations. Metadata reproduce each image with "
            "progressive.data.scale_shapes.render."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "family": tfds.features.ClassLabel(names=FAMILY_NAMES),
            "object_scale": tfds.features.Scalar(dtype=np.float32),
            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "seed": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      example = sample_example(index, seed=config.seed, split=split,
                               storage_size=config.storage_size,
                               scale_range=tuple(config.scale_range))
      example["image"] = encode_png(example["image"])
      yield index, example


def prepare(config_name: str = "default",
            data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns the `scale_shapes` builder for `config_name`, generating it if needed.

  Stored as array_record; read without TensorFlow with
  `builder.as_data_source(split="train")[i]` (a dict of numpy arrays).
  """
  builder = ScaleShapes(config=config_name, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder
