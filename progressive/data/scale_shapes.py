"""`scale_shapes`: outlines and fixed-period textures drawn at random scales.

Twelve classes in two families (by default). Shapes (`disc` ... `star`) differ only by
their outline, a property that survives a change of scale. Textures (`stripes_p2` ...
`checks_p8`) share their silhouettes and differ only by a fill pattern whose period is
fixed in pixels of the stored image, a property that does not survive shrinking the
image (a period under 2 pixels averages out). Builder configs vary the texture periods,
tie them to the object's size instead (`period_mode="object"`: no absolute-scale cue)
or draw every object at one scale. The `parts` configs (`classes="parts"`) put both
kinds of feature on one silhouette, a head with two ears and an eye patch, as on the
kitten of RESEARCH.md's claim 1: classes that differ only by the ears' outline against
classes that differ only by the eye's stripe period. See docs/SCALE_SHAPES.md.

The scene is continuous: coordinates are canvas fractions in [0, 1], x to the right
(columns), y down (rows). `render` draws it at any size by box-averaging supersamples,
so the stored image is one exact rendering of the scene and other sizes are what a
camera with fewer or more pixels would record.
"""

import dataclasses
import io
import math
import types
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

SHAPE_NAMES = ("disc", "square", "triangle", "cross", "ring", "star")
PATTERNS = ("stripes", "checks")
# "canvas": a period is a number of stored pixels, the bands fixed to the canvas.
# "object": a period is a number of periods across the object's bounding circle, the
# bands fixed to the object (they zoom with it).
PERIOD_MODES = ("canvas", "object")
DEFAULT_PERIODS = (2, 4, 8)
OBJECT_PHASE_STEPS = 8  # Object mode: the phase is a multiple of 1/8 of a period.
FAMILY_NAMES = ("shape", "texture")
TEXTURE_SILHOUETTES = ("disc", "square")
SPLITS = ("train", "test")
# Which classes a config draws: "shapes" (six outlines, then stripes and checks at each
# period) or "parts" (one silhouette: the ear outlines, then the eye's periods).
CLASS_SETS = ("shapes", "parts")
EAR_NAMES = ("pointed", "round", "square")
PART_FAMILY_NAMES = ("self_similar_part", "fixed_period_part")


def _check_textures(texture_periods: Sequence[int], period_mode: str) -> None:
  if period_mode not in PERIOD_MODES:
    raise ValueError(f"period_mode must be one of {PERIOD_MODES}, got {period_mode!r}.")
  low = 2 if period_mode == "canvas" else 1
  periods = tuple(texture_periods)
  if (not periods or len(set(periods)) != len(periods)
      or not all(isinstance(p, (int, np.integer)) and p >= low for p in periods)):
    raise ValueError(f"texture_periods must be distinct integers >= {low} in {period_mode} "
                     f"mode, e.g. {OFFLADDER_PERIODS}, got {texture_periods}.")


def _check_classes(classes: str) -> None:
  if classes not in CLASS_SETS:
    raise ValueError(f"classes must be one of {CLASS_SETS}, got {classes!r}.")


def class_names(texture_periods: Sequence[int] = DEFAULT_PERIODS,
                period_mode: str = "canvas", classes: str = "shapes") -> tuple[str, ...]:
  """Class names: the six shapes, then stripes and checks at each period; with
  `classes="parts"`, the ear outlines (`ears_pointed`, ...), then the eye's periods.

  A texture's name gives its period: `stripes_p5` (canvas mode, 5 stored pixels) or
  `stripes_c3` (object mode, 3 periods across the bounding circle); `eye_p5` likewise.
  """
  _check_textures(texture_periods, period_mode)
  _check_classes(classes)
  tag = "p" if period_mode == "canvas" else "c"
  if classes == "parts":
    return (tuple(f"ears_{name}" for name in EAR_NAMES)
            + tuple(f"eye_{tag}{p}" for p in texture_periods))
  return SHAPE_NAMES + tuple(f"{pattern}_{tag}{p}" for pattern in PATTERNS
                             for p in texture_periods)


def class_family(texture_periods: Sequence[int] = DEFAULT_PERIODS,
                 classes: str = "shapes") -> tuple[int, ...]:
  """Family index (into `family_names(classes)`) of each class of
  `class_names(texture_periods, ..., classes)`."""
  _check_classes(classes)
  if classes == "parts":
    return (0,) * len(EAR_NAMES) + (1,) * len(texture_periods)
  return (0,) * len(SHAPE_NAMES) + (1,) * (len(PATTERNS) * len(texture_periods))


def family_names(classes: str = "shapes") -> tuple[str, ...]:
  """The class families: the self-similar one first, then the fixed-period one."""
  _check_classes(classes)
  return PART_FAMILY_NAMES if classes == "parts" else FAMILY_NAMES


# The default classes (builder configs "default", "small", "one_scale", ...).
CLASS_NAMES = class_names()
CLASS_FAMILY = class_family()
NUM_CLASSES = len(CLASS_NAMES)
# Fill period (one dark plus one light band) in pixels of the stored image.
TEXTURE_PERIODS = types.MappingProxyType(
    dict(zip(CLASS_NAMES[len(SHAPE_NAMES):], DEFAULT_PERIODS * len(PATTERNS))))

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
# The parts silhouette ("parts" classes), in bounding-radius units before the rotation: a
# head (disc) with two ears whose axes point EAR_ANGLE either side of the head's top and
# whose tips reach the bounding circle, and an eye patch (a disc) at the head's centre.
# An ear is drawn from _EAR_BASE along its axis, inside the head, so only its outline
# beyond the head shows. The eye holds a second-colour disc (ear classes) or stripes of
# a fixed period in stored pixels (eye classes).
HEAD_RADIUS = 0.62
EYE_RADIUS = 0.42
EAR_ANGLE = math.radians(40.0)
_EAR_BASE = 0.5
_POINTED_HALF_WIDTH = 0.30  # At _EAR_BASE; the tip at 1.
_ROUND_RADIUS = 0.25  # A lobe whose top is at 1.
_SQUARE_HALF_WIDTH, _SQUARE_TOP = 0.24, 0.96  # Corners at radius 0.99.


class Nuisances(NamedTuple):
  """Everything `render` draws from its seed; shared by all labels for one seed."""
  background: np.ndarray  # [3] float64, 0..255.
  foreground: np.ndarray  # [3] object colour; the first pattern colour of textures.
  foreground2: np.ndarray  # [3] second pattern colour of textures.
  rotation: float  # Radians, of the outline about its centre.
  silhouette: int  # Index into TEXTURE_SILHOUETTES (textures only).
  horizontal: bool  # Stripe bands run horizontally (vary along y); else vertically.
  # Pattern offset (x, y): storage pixels (canvas mode) or 1/OBJECT_PHASE_STEPS of a
  # period (object mode).
  phase: tuple[int, int]
  ears: int  # Index into EAR_NAMES: the ears of the eye classes ("parts" only).


def nuisances(seed: int, *, texture_periods: Sequence[int] = DEFAULT_PERIODS,
              period_mode: str = "canvas") -> Nuisances:
  """Draws the nuisances of one rendering from `seed`, independently of the label.

  The phase is uniform over one common period of all classes: `lcm(texture_periods)`
  storage pixels in canvas mode, OBJECT_PHASE_STEPS steps of a period in object mode.
  """
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
  steps = math.lcm(*texture_periods) if period_mode == "canvas" else OBJECT_PHASE_STEPS
  phase = tuple(int(p) for p in rng.integers(0, steps, size=2))
  ears = int(rng.integers(len(EAR_NAMES)))  # Drawn last: the draws above stay as they were.
  return Nuisances(background, foreground, foreground2, rotation, silhouette,
                   horizontal, phase, ears)


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


def _inside_ear(name: str, along: np.ndarray, across: np.ndarray) -> np.ndarray:
  """Whether points are inside one ear, in its frame: `along` its axis from the head's
  centre, `across` (absolute) from the axis, both in bounding-radius units."""
  if name == "pointed":  # A triangle, its tip at 1.
    return (along >= _EAR_BASE) & (
        (1.0 - _EAR_BASE) * across <= _POINTED_HALF_WIDTH * (1.0 - along))
  if name == "round":
    centre = 1.0 - _ROUND_RADIUS
    return (along - centre) * (along - centre) + across * across <= _ROUND_RADIUS**2
  if name == "square":
    return (along >= _EAR_BASE) & (along <= _SQUARE_TOP) & (across <= _SQUARE_HALF_WIDTH)
  raise ValueError(f"Unknown ears {name!r}.")


def _inside_head(ears: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u, v) are inside the parts silhouette: the head and both ears (the
  head's top is -v)."""
  inside = u * u + v * v <= HEAD_RADIUS**2
  cos, sin = math.cos(EAR_ANGLE), math.sin(EAR_ANGLE)
  for side in (-1.0, 1.0):  # Axis (side * sin, -cos).
    along = side * sin * u - cos * v
    across = np.abs(cos * u + side * sin * v)
    inside |= _inside_ear(ears, along, across)
  return inside


def _check_args(label, object_scale, center, size, storage_size, texture_periods, period_mode,
                classes="shapes"):
  _check_textures(texture_periods, period_mode)
  num_classes = len(class_family(texture_periods, classes))
  if not 0 <= label < num_classes:
    raise ValueError(f"label must be in [0, {num_classes}), got {label}.")
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


def _coverage(label, object_scale, center, size, seed, storage_size, pattern_shift=(0.0, 0.0),
              texture_periods=DEFAULT_PERIODS, period_mode="canvas", classes="shapes"):
  """Per-pixel fractions of the scene covered by the two foreground colours.

  Returns `(first, second, nuisances)` with `first`, `second` float64 `[size, size]`;
  the background covers the rest. Only pixels overlapping the bounding circle are
  sampled.
  """
  _check_args(label, object_scale, center, size, storage_size, texture_periods, period_mode,
              classes)
  nz = nuisances(seed, texture_periods=texture_periods, period_mode=period_mode)
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
  if classes == "parts":
    ears = len(EAR_NAMES)
    silhouette = _inside_head(EAR_NAMES[label if label < ears else nz.ears], u, v)
    eye = u * u + v * v <= EYE_RADIUS**2
    if label >= ears:  # The eye: stripes at the class's period.
      eye &= _odd_bands("stripes", texture_periods[label - ears], xs, ys, nz, object_scale,
                        (cx, cy), storage_size, pattern_shift, period_mode)
    second[y0:y1, x0:x1] = _box_mean(eye, k)
    first[y0:y1, x0:x1] = _box_mean(silhouette, k) - second[y0:y1, x0:x1]
    return first, second, nz
  if label < len(SHAPE_NAMES):
    first[y0:y1, x0:x1] = _box_mean(_inside_outline(SHAPE_NAMES[label], u, v), k)
    return first, second, nz
  inside = _inside_outline(TEXTURE_SILHOUETTES[nz.silhouette], u, v)
  pattern, which = divmod(label - len(SHAPE_NAMES), len(texture_periods))
  odd = _odd_bands(PATTERNS[pattern], texture_periods[which], xs, ys, nz, object_scale,
                   (cx, cy), storage_size, pattern_shift, period_mode)
  second[y0:y1, x0:x1] = _box_mean(inside & odd, k)
  first[y0:y1, x0:x1] = _box_mean(inside, k) - second[y0:y1, x0:x1]
  return first, second, nz


def _odd_bands(pattern, period, xs, ys, nz, object_scale, center, storage_size, pattern_shift,
               period_mode) -> np.ndarray:
  """Whether each sample (broadcastable to `[len(ys), len(xs)]`) lies on the second
  colour of `pattern` ("stripes" or "checks") at `period`, anchored to the canvas or to
  the object."""
  cx, cy = center
  if period_mode == "canvas":  # Band parity in storage pixels, fixed to the canvas.
    half = period / 2
    px, py = (xs - pattern_shift[0]) * storage_size, (ys - pattern_shift[1]) * storage_size
    band_x = np.floor((px + nz.phase[0]) / half)
    band_y = np.floor((py + nz.phase[1]) / half)
  else:  # `period` periods across the bounding circle, fixed to the object's centre.
    half = object_scale / period / 2
    steps = OBJECT_PHASE_STEPS / 2  # Phase steps per band.
    band_x = np.floor((xs - cx) / half + nz.phase[0] / steps)
    band_y = np.floor((ys - cy) / half + nz.phase[1] / steps)
  odd_x = (band_x.astype(np.int64) & 1)[None, :]
  odd_y = (band_y.astype(np.int64) & 1)[:, None]
  if pattern == "checks":
    return (odd_x ^ odd_y).astype(bool)
  return (odd_y if nz.horizontal else odd_x).astype(bool)


def render(label: int, object_scale: float, center: tuple[float, float], size: int, *,
           seed: int = 0, storage_size: int = 64,
           pattern_shift: tuple[float, float] = (0.0, 0.0),
           texture_periods: Sequence[int] = DEFAULT_PERIODS,
           period_mode: str = "canvas", classes: str = "shapes") -> np.ndarray:
  """Renders one image of class `label`, uint8 `[size, size, 3]`.

  Args:
    label: class index into `class_names(texture_periods, period_mode)`.
    object_scale: diameter of the outline's bounding circle, fraction of the canvas.
    center: (x, y) of the object, canvas fractions.
    size: output side in pixels; any size shows the same scene.
    seed: draws all nuisances (`nuisances(seed, ...)`); the same seed gives the same
      colours, rotation, silhouette, orientation and phase for every label.
    storage_size: the size at which canvas-mode texture periods are whole pixels.
    pattern_shift: (dx, dy) canvas fractions by which canvas-anchored texture bands
      move (object-anchored bands move with `center` and ignore it). Moving `center`
      and the bands by the same amount translates the whole object, fill included.
    texture_periods: the period of each texture class of each pattern (stripes, then
      checks): in canvas mode `p / storage_size` canvas fractions; in object mode
      `object_scale / p` (`p` periods across the bounding circle).
    period_mode: "canvas" (bands fixed to the canvas) or "object" (fixed to the object,
      zooming with it: no absolute-scale cue).
    classes: "shapes" (the six outlines, then the textures) or "parts" (the head with
      ears and an eye patch: the ear outlines, then the eye's stripe periods, one per
      entry of `texture_periods`).
  """
  first, second, nz = _coverage(label, object_scale, center, size, seed, storage_size,
                                pattern_shift, tuple(texture_periods), period_mode, classes)
  image = (nz.background + first[..., None] * (nz.foreground - nz.background)
           + second[..., None] * (nz.foreground2 - nz.background))
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def object_coverage(label: int, object_scale: float, center: tuple[float, float],
                    size: int, *, seed: int = 0, storage_size: int = 64,
                    texture_periods: Sequence[int] = DEFAULT_PERIODS,
                    period_mode: str = "canvas", classes: str = "shapes") -> np.ndarray:
  """Fraction of each pixel covered by the object, float64 `[size, size]` in [0, 1]."""
  first, second, _ = _coverage(label, object_scale, center, size, seed, storage_size,
                               texture_periods=tuple(texture_periods), period_mode=period_mode,
                               classes=classes)
  return first + second


def sample_example(index: int, *, seed: int, split: str = "train", storage_size: int = 64,
                   scale_range: tuple[float, float] = (0.3, 0.9),
                   texture_periods: Sequence[int] = DEFAULT_PERIODS,
                   period_mode: str = "canvas", classes: str = "shapes") -> dict[str, Any]:
  """Draws example `index` of `split`: its metadata and its `[S, S, 3]` uint8 image.

  Labels cycle through the classes (`index % num_classes`, 12 with three periods; 3 + 3
  with `classes="parts"`), so
  any run of that many is balanced; the scale is uniform in `scale_range` (`lo == hi`:
  one scale); the centre is uniform over the positions that keep the bounding circle
  inside the canvas. Scale and centre are float32, as stored, and
  `render(label, object_scale, center, S, seed=seed, storage_size=S, texture_periods=...,
  period_mode=..., classes=...)` gives `image`.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  lo, hi = scale_range
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(f"scale_range must satisfy 0 < lo <= hi <= 1, got {scale_range}.")
  family = class_family(texture_periods, classes)
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  label = index % len(family)
  object_scale = np.float32(rng.uniform(lo, hi))
  radius = float(object_scale) / 2.0
  center = rng.uniform(radius, 1.0 - radius, size=2).astype(np.float32)
  render_seed = int(rng.integers(2**62))
  image = render(label, float(object_scale), (float(center[0]), float(center[1])),
                 storage_size, seed=render_seed, storage_size=storage_size,
                 texture_periods=texture_periods, period_mode=period_mode, classes=classes)
  return dict(image=image, label=label, family=family[label],
              object_scale=object_scale, center=center, seed=render_seed)


class RenderOptions(NamedTuple):
  """What `render` needs besides an example's metadata to redraw a builder config's
  scenes: `render(label, object_scale, center, size, seed=seed, **options._asdict())`."""
  storage_size: int = 64
  texture_periods: tuple[int, ...] = DEFAULT_PERIODS
  period_mode: str = "canvas"
  classes: str = "shapes"


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 `[H, W, 3]` image (PIL; TFDS would need TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


@dataclasses.dataclass(eq=False)
class ScaleShapesConfig(tfds.core.BuilderConfig):
  """A size, sampling and set of texture classes of `scale_shapes`."""
  storage_size: int = 64  # Stored image side in pixels; canvas-mode periods are in these.
  num_train: int = 10_000
  num_test: int = 2_000
  scale_range: tuple[float, float] = (0.3, 0.9)  # object_scale ~ U(scale_range).
  seed: int = 0  # Splits are drawn from (seed, split, index).
  test_seed: int | None = None  # The test split's seed instead (a fresh split); None: seed.
  texture_periods: tuple[int, ...] = DEFAULT_PERIODS  # Per texture class of each pattern.
  period_mode: str = "canvas"  # Periods in stored pixels ("canvas") or across the object.
  classes: str = "shapes"  # "shapes" (outlines and textures) or "parts" (ears and an eye).

  def render_options(self) -> RenderOptions:
    return RenderOptions(self.storage_size, tuple(self.texture_periods), self.period_mode,
                         self.classes)

  def class_names(self) -> tuple[str, ...]:
    return class_names(self.texture_periods, self.period_mode, self.classes)

  def class_family(self) -> tuple[int, ...]:
    return class_family(self.texture_periods, self.classes)

  def family_names(self) -> tuple[str, ...]:
    return family_names(self.classes)


# Controls for claim 1 (docs/SCALE_SHAPES.md, `period_table`): periods off the 2x ladder,
# at least MIN_PERIOD_PX at half the stored size and at least 10% away from each other
# under zooms of 1/2, 3/4, 5/4 and 3/2; periods tied to the object; one object scale.
OFFLADDER_PERIODS = (5, 9, 16)
OBJECT_PERIODS = (2, 3, 4)  # Periods across the bounding circle.
ONE_SCALE = (0.6, 0.6)
_SWEEP_32 = {"storage_size": 32, "num_train": 4096, "num_test": 1024}  # Quick CPU sweeps.
# The `<name>_fresh` configs' test seed: the same distribution and training images, a test
# split of images never drawn before, for final runs (the test split of `<name>` was
# reused across reruns).
FRESH_TEST_SEED = 1
FRESH = "_fresh"
# The parts configs' eye periods, stored px: the same bands relative to the object at 64
# and at 32 px. Under the zooms 1/2, 3/4, 5/4 and 3/2 none lands within ALIAS_TOLERANCE of
# another; at 3/4 of the stored size all but the smallest span MIN_PERIOD_PX (it: 2.25 px).
PARTS_PERIODS = (6, 10, 18)
SMALL_PARTS_PERIODS = (3, 5, 9)
_CONTROLS = (
    ("offladder", f"periods {', '.join(map(str, OFFLADDER_PERIODS))} stored px (off the 2x ladder)",
     {"texture_periods": OFFLADDER_PERIODS}),
    ("object_period", f"{', '.join(map(str, OBJECT_PERIODS))} periods across the object",
     {"texture_periods": OBJECT_PERIODS, "period_mode": "object"}),
    ("one_scale", f"every object at scale {ONE_SCALE[0]}", {"scale_range": ONE_SCALE}),
)


class GeneratedSplits:
  """The split generation the built-in builders share (a mixin before
  `tfds.core.GeneratorBasedBuilder`): "train" and "test" with the config's `num_train` and
  `num_test` examples, example `i` of a split being `self.sample(i, split)` with its
  image PNG-encoded by PIL (TFDS would need TensorFlow). Nothing is downloaded."""

  def _log_download_bytes(self) -> None:
    # TFDS's own line reads "Downloading and preparing dataset Unknown size ...".
    print(f"Generating {self.name}/{self.builder_config.name} in {self.data_dir} (once; "
          "nothing is downloaded).", flush=True)

  def _log_download_done(self) -> None:
    print(f"Generated {self.name}/{self.builder_config.name}.", flush=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    for index in range(num_examples):
      example = self.sample(index, split)
      example["image"] = encode_png(example["image"])
      yield index, example


def prepare_builder(builder_cls, config_name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """`builder_cls(config_name)` in `data_dir`, generated first if it is not prepared yet.

  Stored as array_record; read without TensorFlow with
  `builder.as_data_source(split="train")[i]` (a dict of numpy arrays).
  """
  builder = builder_cls(config=config_name, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


_CONFIGS = [
    ScaleShapesConfig(
        name="default", description="64 px, 10000 train / 2000 test.",
        storage_size=64, num_train=10_000, num_test=2_000),
    ScaleShapesConfig(
        name="small", description="32 px, 1024 train / 256 test (tests, smoke runs).",
        storage_size=32, num_train=1024, num_test=256),
    ScaleShapesConfig(
        name="sweep32", description="32 px, 4096 train / 1024 test (quick CPU sweeps).",
        **_SWEEP_32),
] + [
    ScaleShapesConfig(name=name, description=f"64 px, 10000 train / 2000 test; {what}.",
                      storage_size=64, num_train=10_000, num_test=2_000, **fields)
    for name, what, fields in _CONTROLS
] + [
    ScaleShapesConfig(name=f"small_{name}",
                      description=f"32 px, 4096 train / 1024 test; {what}.",
                      **_SWEEP_32, **fields)
    for name, what, fields in _CONTROLS
] + [
    ScaleShapesConfig(
        name="parts", description="64 px, 10000 train / 2000 test; ears and eye on one "
        f"silhouette, eye periods {', '.join(map(str, PARTS_PERIODS))} stored px.",
        storage_size=64, num_train=10_000, num_test=2_000, classes="parts",
        texture_periods=PARTS_PERIODS),
    # Five times sweep32's training images: on 4096 the simple CNN learns the ears only
    # to 0.37 at 32 px and overfits (docs/SCALE_SHAPES.md).
    ScaleShapesConfig(
        name="small_parts", description="32 px, 20480 train / 2048 test; ears and eye on "
        f"one silhouette, eye periods {', '.join(map(str, SMALL_PARTS_PERIODS))} stored px.",
        storage_size=32, num_train=20_480, num_test=2_048, classes="parts",
        texture_periods=SMALL_PARTS_PERIODS),
]


def _fresh(config: ScaleShapesConfig) -> ScaleShapesConfig:
  """`config` as `<name>_fresh`: the same training images, a test split drawn from
  `FRESH_TEST_SEED` (the same distribution, other images)."""
  return dataclasses.replace(
      config, name=config.name + FRESH, test_seed=FRESH_TEST_SEED,
      description=f"{config.description.rstrip('.')}; a fresh test split (test seed "
                  f"{FRESH_TEST_SEED}).")


class ScaleShapes(GeneratedSplits, tfds.core.GeneratorBasedBuilder):
  """TFDS builder `scale_shapes`: generated on the CPU, nothing downloaded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _CONFIGS + [_fresh(c) for c in _CONFIGS if c.name != "small"]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size, periods = config.storage_size, tuple(config.texture_periods)
    listed = ", ".join(str(p) for p in periods[:-1]) + f" or {periods[-1]}"
    if config.period_mode == "canvas":
      textures = f"a stripe or check period of {listed} stored pixels (not scale invariant)"
    else:
      textures = f"{listed} stripe or check periods across the object (scale invariant)"
    lo, hi = config.scale_range
    where = "random object scales, positions" if lo < hi else f"object scale {lo}, random positions"
    if config.classes == "parts":
      what = (f"one silhouette, a head with two ears and an eye patch: {len(EAR_NAMES)} "
              "classes told apart by the ears' outline (scale invariant) and "
              f"{len(periods)} by the eye's stripes, {textures.replace('a stripe or check', 'a')}")
    else:
      what = (f"6 shapes told apart by outline (scale invariant) and "
              f"{len(PATTERNS) * len(periods)} textures told apart by {textures}")
    return self.dataset_info_from_configs(
        description=(
            f"Synthetic scale study: {what}, at {where}, colours and rotations. Metadata "
            "reproduce each image with progressive.data.scale_shapes.render."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=config.class_names()),
            "family": tfds.features.ClassLabel(names=config.family_names()),
            "object_scale": tfds.features.Scalar(dtype=np.float32),
            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "seed": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage=None,
    )

  def sample(self, index: int, split: str) -> dict[str, Any]:
    config = self.builder_config
    seed = config.test_seed if split == "test" and config.test_seed is not None else config.seed
    return sample_example(index, seed=seed, split=split,
                          storage_size=config.storage_size,
                          scale_range=tuple(config.scale_range),
                          texture_periods=tuple(config.texture_periods),
                          period_mode=config.period_mode, classes=config.classes)


def builder_config(config_name: str) -> ScaleShapesConfig:
  """The builder config `config_name`; `ValueError` listing the names if there is none."""
  config = ScaleShapes.builder_configs.get(config_name)
  if config is None:
    raise ValueError(f"config_name must be one of {sorted(ScaleShapes.builder_configs)}, "
                     f"got {config_name!r}.")
  return config


def render_options(config_name: str) -> RenderOptions:
  """What `render` needs to redraw the scenes of builder config `config_name`."""
  return builder_config(config_name).render_options()


# A period stays distinguishable at a test size while it spans at least MIN_PERIOD_PX
# output pixels (the Nyquist limit, 2 px, with a margin; 2 px at the stored size, where
# canvas-anchored bands are drawn exactly) and, in canvas mode, is not within
# ALIAS_TOLERANCE of another class's stored period (what a network trained at the stored
# size would take it for).
MIN_PERIOD_PX = 2.5
ALIAS_TOLERANCE = 0.08
TABLE_SIZES = types.MappingProxyType({64: (16, 24, 32, 48, 64, 80, 96), 32: (16, 24, 32, 40, 48)})


def period_check(config_name: str, sizes: Sequence[int] | None = None) -> list[dict[str, Any]]:
  """Each texture period of builder config `config_name` at each test size in `sizes`
  (default: TABLE_SIZES of its storage size), as seen after zooming the stored image.

  One row per period (shared by stripes and checks): `period`, `names`, and per size
  `px` (output pixels: one value in canvas mode, the range over the config's object
  scales in object mode), and in canvas mode `alias` (under 2 px: the period of the
  alias that sampling leaves, `inf` where it is flat; else None) and `reads_as` (the
  other stored period within ALIAS_TOLERANCE of `px` or of its alias, else None), in
  object mode `min_scale` (the smallest object scale at which it spans MIN_PERIOD_PX),
  and `ok` (distinguishable on every object).
  """
  config = builder_config(config_name)
  storage, periods = config.storage_size, tuple(config.texture_periods)
  sizes = TABLE_SIZES.get(storage, (storage,)) if sizes is None else tuple(sizes)
  names = tuple(n for n, f in zip(config.class_names(), config.class_family()) if f == 1)
  lo, hi = config.scale_range
  rows = []
  for i, p in enumerate(periods):
    row = {"period": p, "names": names[i::len(periods)], "px": {}, "alias": {},
           "reads_as": {}, "min_scale": {}, "ok": {}}
    for n in sizes:
      if config.period_mode == "canvas":
        px = p * n / storage
        alias = None
        if px < 2.0:  # Frequency folded about the nearest multiple of the sampling rate.
          folded = abs(1 / px - round(1 / px))
          alias = 1 / folded if folded > 1e-9 else math.inf
        seen = px if alias is None else alias
        near = [q for q in periods if q != p and abs(seen / q - 1) <= ALIAS_TOLERANCE]
        row["px"][n], row["alias"][n] = px, alias
        row["reads_as"][n] = near[0] if near else None
        # At the stored size the bands are drawn exactly (edges on pixel or half-pixel
        # edges), so the Nyquist limit itself applies there.
        row["ok"][n] = px >= (2.0 if n == storage else MIN_PERIOD_PX) and not near
      else:
        row["px"][n] = (lo * n / p, hi * n / p)
        row["min_scale"][n] = MIN_PERIOD_PX * p / n
        row["ok"][n] = lo * n / p >= MIN_PERIOD_PX
    rows.append(row)
  return rows


def period_table(config_name: str, sizes: Sequence[int] | None = None) -> str:
  """`period_check` as a markdown table: periods in output pixels at each size, marked
  where they fall under MIN_PERIOD_PX (with the alias left under 2 px) or onto another
  class's stored period."""
  rows = period_check(config_name, sizes)
  sizes = list(rows[0]["px"])
  lines = ["| classes | " + " | ".join(f"{n} px" for n in sizes) + " | distinguishable at |",
           "|---" * (len(sizes) + 2) + "|"]
  for row in rows:
    cells = []
    for n in sizes:
      px = row["px"][n]
      if isinstance(px, tuple):  # Object mode: the range over object scales.
        cell = f"{px[0]:.3g}-{px[1]:.3g}"
        if not row["ok"][n]:
          cell += (f" (< {MIN_PERIOD_PX:g}: all)" if px[1] < MIN_PERIOD_PX else
                   f" (< {MIN_PERIOD_PX:g} under scale {row['min_scale'][n]:.2f})")
      else:
        cell, alias, near = f"{px:.3g}", row["alias"][n], row["reads_as"][n]
        if alias == math.inf:
          cell += " (flat)"
        elif alias is not None:
          cell += f" (alias {alias:.3g}" + (f" as p{near})" if near else ")")
        elif near is not None:
          cell += f" (as p{near})"
        elif not row["ok"][n]:
          cell += f" (< {MIN_PERIOD_PX:g})"
      cells.append(cell)
    ok = ", ".join(str(n) for n in sizes if row["ok"][n]) or "none"
    lines.append(f"| {' / '.join(row['names'])} | " + " | ".join(cells) + f" | {ok} |")
  return "\n".join(lines)


def prepare(config_name: str = "default",
            data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns the `scale_shapes` builder for `config_name`, generating it if needed
  (`prepare_builder`)."""
  return prepare_builder(ScaleShapes, config_name, data_dir)
