"""`photos`: square patches of real photographs, cut at known zooms and positions.

Sixteen classes, one per source photograph, all shipped inside the scikit-image and
scikit-learn wheels (nothing is downloaded), in three families: periodic textures (brick,
a page of print), stochastic textures (grass, gravel, the moon's surface, the Hubble
deep field, a tissue stain) and object scenes (a cameraman, coins, an astronaut, coffee,
a cat, a rocket, a motorcycle, a temple, a flower). Grey by default (3 equal channels),
so colour is no shortcut; a colour config beside it. See docs/PHOTOS.md.

Coordinates are source pixels of the photograph, PIL's convention: pixel (i, j) covers
[i, i + 1) x [j, j + 1), x to the right (columns), y down (rows). A cut at `zoom` (output
pixels per source pixel) shows the square of `size / zoom` source pixels centred on
`center`, resampled by PIL's bilinear filter, whose support widens with the reduction (so
shrinking is antialiased). The filter depends only on where output pixels fall in the
source, so moving the square by whole output pixels moves the picture by whole pixels: a
shifted cut is a camera shift, and nothing is padded (a cut that would read outside the
photograph is refused).

Each photograph is split once into two rectangles along its longer side, a train region
and a test region. Every example's `footprint` (the patch, a guard of `GUARD` stored
pixels around it and the filter's support) lies inside its split's region, so the
analyses can shift and re-cut stored examples without reading the other split's pixels.
"""

import dataclasses
import functools
import importlib.util
import itertools
import math
import pathlib
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageFilter

from progressive.data.scale_shapes import GeneratedSplits, prepare_builder


class Source(NamedTuple):
  """One source photograph: its class name, family and file inside an installed package."""
  name: str
  family: int  # Index into FAMILY_NAMES.
  package: str
  path: str
  # > 0: the scan's uneven lighting divided out, the photograph over its Gaussian blur of
  # this radius (px) times its mean, so that train and test regions are lit alike.
  flatten: float = 0.0


FAMILY_NAMES = ("periodic", "stochastic", "object")
_SK, _SKL = "skimage", "sklearn"
SOURCES = (
    Source("brick", 0, _SK, "data/brick.png"),
    Source("page", 0, _SK, "data/page.png", flatten=16.0),
    Source("grass", 1, _SK, "data/grass.png"),
    Source("gravel", 1, _SK, "data/gravel.png"),
    Source("moon", 1, _SK, "data/moon.png"),
    Source("hubble_deep_field", 1, _SK, "data/hubble_deep_field.jpg"),
    Source("immunohistochemistry", 1, _SK, "data/ihc.png"),
    Source("camera", 2, _SK, "data/camera.png"),
    Source("coins", 2, _SK, "data/coins.png"),
    Source("astronaut", 2, _SK, "data/astronaut.png"),
    Source("coffee", 2, _SK, "data/coffee.png"),
    Source("chelsea", 2, _SK, "data/chelsea.png"),
    Source("rocket", 2, _SK, "data/rocket.jpg"),
    Source("motorcycle", 2, _SK, "data/motorcycle_left.png"),  # skimage.data.stereo_motorcycle()[0]
    Source("china", 2, _SKL, "datasets/images/china.jpg"),
    Source("flower", 2, _SKL, "datasets/images/flower.jpg"),
)
CLASS_NAMES = tuple(s.name for s in SOURCES)
CLASS_FAMILY = tuple(s.family for s in SOURCES)
NUM_CLASSES = len(SOURCES)
SPLITS = ("train", "test")

# Zoom of the stored examples, stored pixels per source pixel, log-uniform in this range:
# one octave about 1:1, a patch of 64 px shows 46 to 91 source pixels.
ZOOM_RANGE = (0.7, 1.4)
# Stored pixels around every stored patch that stay inside its split's region: room to
# shift it by up to GUARD px at the stored size (GUARD * canvas / storage_size at a canvas
# down to half the stored size) without reading the other split.
GUARD = 32
# Regions leave room for the footprint of patches up to this stored size.
MAX_STORAGE_SIZE = 64
TEST_FRACTION = 0.4  # Of the longer side, at least what one footprint needs.
# Default zoom bins of the object-scale analysis (stored-size zoom, edges a factor ~1.4
# apart): one octave below the training range, its two halves, two above.
ZOOM_BINS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
_FILTER = Image.Resampling.BILINEAR
_FILTER_SUPPORT = 1.0  # PIL's bilinear filter radius, in output pixels when shrinking.

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) source pixels, x1 and y1 exclusive.


class CutOptions(NamedTuple):
  """What a builder config adds to an example's metadata to cut it again
  (`DatasetInfo.render_options` of a photos dataset)."""
  storage_size: int  # Side of the stored images; their zoom is per stored pixel.
  colour: bool  # RGB; else grey in 3 equal channels.


def _check_label(label: int) -> None:
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}.")


@functools.lru_cache(maxsize=2 * NUM_CLASSES)
def photograph(label: int, colour: bool = False) -> Image.Image:
  """Source photograph of class `label` as a PIL image: mode "L" (grey) unless `colour`
  and the photograph has colour ("RGB"). Grey is PIL's Rec. 601 luma of the RGB file."""
  _check_label(label)
  source = SOURCES[label]
  spec = importlib.util.find_spec(source.package)  # Finds the wheel without importing it.
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
        f"The photos dataset reads {source.name} from the {source.package} package, which is "
        "not installed; pip install scikit-image scikit-learn (pyproject's dependencies).")
  path = pathlib.Path(spec.submodule_search_locations[0]) / source.path
  with Image.open(path) as image:
    image.load()
  if image.mode not in ("L", "RGB"):
    raise ValueError(f"{source.path} has PIL mode {image.mode}; expected L or RGB.")
  if source.flatten:
    grey = np.asarray(image.convert("L"), np.float64)
    light = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(source.flatten)), np.float64)
    image = Image.fromarray(np.clip(np.rint(grey / np.maximum(light, 1.0) * grey.mean()), 0, 255)
                            .astype(np.uint8))
  return image if colour or image.mode == "L" else image.convert("L")


def photo_size(label: int) -> tuple[int, int]:
  """(width, height) of source photograph `label` in pixels."""
  return photograph(label).size


def _support(zoom: float) -> float:
  """Radius in source pixels of the pixels the filter reads around a sample point."""
  return _FILTER_SUPPORT * max(1.0 / zoom, 1.0)


def _half_footprint(zoom: float, storage_size: int) -> float:
  """Half side, source pixels, of `footprint` about the centre (before rounding out)."""
  return (storage_size / 2 + GUARD) / zoom + _support(zoom / 2)


def min_region_side(storage_size: int = MAX_STORAGE_SIZE) -> int:
  """Pixels a region needs along each axis to hold the footprint of one patch at the
  smallest zoom of ZOOM_RANGE."""
  return math.ceil(2 * _half_footprint(ZOOM_RANGE[0], storage_size)) + 2


@functools.lru_cache(maxsize=NUM_CLASSES)
def regions(label: int) -> Mapping[str, Box]:
  """`{"train": box, "test": box}`: the disjoint rectangles of photograph `label` that
  each split's examples are cut from. The longer side is split; the test region is the
  last TEST_FRACTION of it (at least `min_region_side()`), the train region the rest."""
  width, height = photo_size(label)
  need = min_region_side()
  long_side = max(width, height)
  test = max(round(TEST_FRACTION * long_side), need)
  if min(width, height) < need or long_side - test < need:
    raise ValueError(
        f"Photograph {CLASS_NAMES[label]} ({width}x{height}) is too small for two regions "
        f"of {need} px; raise ZOOM_RANGE[0] or drop it from SOURCES.")
  cut_at = long_side - test
  if width >= height:
    boxes = {"train": (0, 0, cut_at, height), "test": (cut_at, 0, width, height)}
  else:
    boxes = {"train": (0, 0, width, cut_at), "test": (0, cut_at, width, height)}
  return types.MappingProxyType(boxes)


def inside(box: Box, region: Box) -> bool:
  """Whether integer box `box` lies inside `region`."""
  return (box[0] >= region[0] and box[1] >= region[1]
          and box[2] <= region[2] and box[3] <= region[3])


def split_of(label: int, center: Sequence[float]) -> str:
  """The split whose region of photograph `label` holds the point `center` (x, y)."""
  x, y = float(center[0]), float(center[1])
  for split, (x0, y0, x1, y1) in regions(label).items():
    if x0 <= x < x1 and y0 <= y < y1:
      return split
  raise ValueError(f"center {tuple(center)} lies outside photograph {CLASS_NAMES[label]}.")


def view_box(zoom: float, center: Sequence[float], size: int,
             shift: Sequence[float] = (0, 0)) -> tuple[float, float, float, float]:
  """The square (x0, y0, x1, y1), source pixels, that a cut shows: `size / zoom` wide
  about `center`, moved by `-shift / zoom` so the content moves `shift` output pixels."""
  half = size / (2 * zoom)
  cx = float(center[0]) - float(shift[0]) / zoom
  cy = float(center[1]) - float(shift[1]) / zoom
  return (cx - half, cy - half, cx + half, cy + half)


def read_box(zoom: float, center: Sequence[float], size: int,
             shift: Sequence[float] = (0, 0)) -> Box:
  """The source pixels a cut may read: its view box widened by the filter's support and
  rounded out to whole pixels (a superset of what PIL reads)."""
  x0, y0, x1, y1 = view_box(zoom, center, size, shift)
  support = _support(zoom)
  return (math.floor(x0 - support), math.floor(y0 - support),
          math.ceil(x1 + support), math.ceil(y1 + support))


def footprint(zoom: float, center: Sequence[float], storage_size: int) -> Box:
  """The source pixels that an example stored at `storage_size` px with this zoom and
  centre may be read from: every cut of it at a canvas `c >= storage_size / 2` (zoom
  `zoom * c / storage_size`) shifted by up to `GUARD * c / storage_size` px along each
  axis. The guard is `GUARD / zoom` source pixels on each side of the patch."""
  half = _half_footprint(zoom, storage_size)
  cx, cy = float(center[0]), float(center[1])
  return (math.floor(cx - half), math.floor(cy - half),
          math.ceil(cx + half), math.ceil(cy + half))


def cut_from(photo: Image.Image, zoom: float, center: Sequence[float], size: int, *,
             shift: Sequence[float] = (0, 0)) -> np.ndarray:
  """The patch of PIL image `photo` at `zoom`, `center`, `shift` (output pixels), uint8
  `[size, size, 3]` (grey as 3 equal channels). `ValueError` if it would read outside."""
  if not zoom > 0 or size < 1:
    raise ValueError(f"zoom must be > 0 and size >= 1, got zoom={zoom}, size={size}.")
  box = read_box(zoom, center, size, shift)
  if not inside(box, (0, 0, *photo.size)):
    raise ValueError(
        f"A {size} px cut at zoom {zoom:.4g}, center {tuple(center)}, shift {tuple(shift)} "
        f"reads source pixels {box} outside the {photo.size[0]}x{photo.size[1]} photograph; "
        "cut nearer its middle or at a higher zoom (nothing is padded).")
  image = np.asarray(photo.resize((size, size), _FILTER, box=view_box(zoom, center, size, shift)))
  return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def cut(label: int, zoom: float, center: Sequence[float], size: int, *,
        shift: Sequence[float] = (0, 0), colour: bool = False,
        split: str | None = None) -> np.ndarray:
  """Cuts a patch of photograph `label` again, uint8 `[size, size, 3]`.

  Args:
    label: class index into CLASS_NAMES (one photograph per class).
    zoom: output pixels per source pixel of this cut. A stored example shown at canvas
      `c` is `cut(label, zoom * c / storage_size, center, c)`.
    center: (x, y) of the patch centre, source pixels.
    size: output side in pixels.
    shift: (dx, dy) output pixels the content moves (right, down): the camera moves
      `-shift / zoom` source pixels. Whole pixels give exact translations.
    colour: RGB as the "colour" config stores it; else grey in 3 equal channels.
    split: if given, `ValueError` unless every pixel the cut reads lies in that split's
      region, e.g. `split_of(label, center)`.

  `cut(label, zoom, center, S, colour=...)` with an example's stored `zoom` and `center`
  (float32) and side `S` gives its stored image exactly.
  """
  _check_label(label)
  if split is not None:
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}.")
    box, region = read_box(zoom, center, size, shift), regions(label)[split]
    if not inside(box, region):
      raise ValueError(
          f"A {size} px cut of {CLASS_NAMES[label]} at zoom {zoom:.4g}, center "
          f"{tuple(float(c) for c in center)}, shift {tuple(shift)} reads source pixels {box}, "
          f"outside its {split} region {region}; use a smaller shift or a larger canvas "
          f"(stored examples keep {GUARD} stored px of guard).")
  return cut_from(photograph(label, colour), zoom, center, size, shift=shift)


def _centre_range(region: Box, half: float) -> tuple[np.ndarray, np.ndarray] | None:
  """Bounds (x, y) of centres whose box of half side `half` (rounded out) stays inside
  `region`, kept 0.01 px in from the limit so float32 rounding cannot cross it."""
  lo = np.array(region[:2], np.float64) + half + 0.01
  hi = np.array(region[2:], np.float64) - half - 0.01
  return (lo, hi) if np.all(lo <= hi) else None


def sample_example(index: int, *, seed: int, split: str = "train", storage_size: int = 64,
                   colour: bool = False) -> dict[str, Any]:
  """Draws example `index` of `split`: its metadata and its `[S, S, 3]` uint8 image.

  Labels cycle through the classes (`index % 16`); the zoom is log-uniform in
  ZOOM_RANGE; the centre is uniform over the positions whose `footprint` stays inside the
  split's region. Zoom and centre are float32, as stored, and `cut(label, zoom, center,
  S, colour=colour)` gives `image`.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  if not 1 <= storage_size <= MAX_STORAGE_SIZE:
    raise ValueError(
        f"storage_size must be in [1, {MAX_STORAGE_SIZE}] (the regions are sized for "
        f"MAX_STORAGE_SIZE), got {storage_size}.")
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  label = index % NUM_CLASSES
  lo, hi = ZOOM_RANGE
  zoom = np.float32(lo * (hi / lo) ** rng.uniform())
  region = regions(label)[split]
  lo_c, hi_c = _centre_range(region, _half_footprint(float(zoom), storage_size))
  center = rng.uniform(lo_c, hi_c).astype(np.float32)
  if not inside(footprint(float(zoom), center, storage_size), region):
    raise AssertionError(f"Example {index} of {split} leaves its region; a bug in photos.")
  image = cut(label, float(zoom), center, storage_size, colour=colour)
  return dict(image=image, label=label, family=CLASS_FAMILY[label], zoom=zoom, center=center)


def view_zoom(example_zoom: float, size: int, storage_size: int) -> float:
  """Zoom of the cut that shows a stored example (stored at `storage_size` px) at `size`."""
  return float(example_zoom) * size / storage_size


def shifted_cuts(examples: Mapping[str, np.ndarray], offsets: np.ndarray, size: int, *,
                 options: CutOptions) -> np.ndarray:
  """Stored examples cut again at `size` px with the camera moved so the content moves by
  `offsets` `[N, T, 2]` output pixels (dx, dy): uint8 `[N, T, size, size, 3]`.

  `examples` holds `label`, `zoom` and `center` `[N, 2]`, as `pipeline.builtin_examples`
  returns them; `options` is the dataset's `CutOptions`. Every cut stays inside its
  example's split region (`ValueError` otherwise; `fits_shifts` says which would).
  """
  offsets = np.asarray(offsets, np.int64)
  n, views = offsets.shape[:2]
  out = np.empty((n, views, size, size, 3), np.uint8)
  for i in range(n):
    label, center = int(examples["label"][i]), examples["center"][i]
    zoom = view_zoom(examples["zoom"][i], size, options.storage_size)
    split = split_of(label, center)
    for t, (dx, dy) in enumerate(offsets[i]):
      out[i, t] = cut(label, zoom, center, size, shift=(int(dx), int(dy)),
                      colour=options.colour, split=split)
  return out


def fits_shifts(examples: Mapping[str, np.ndarray], extent: int, size: int, *,
                storage_size: int) -> np.ndarray:
  """bool `[N]`: whether every shift of up to `extent` px along each axis of each example
  at `size` px reads only its own split's region (`shifted_cuts` would not refuse it)."""
  ok = []
  for label, zoom, center in zip(examples["label"], examples["zoom"], examples["center"]):
    label = int(label)
    box = read_box(view_zoom(zoom, size, storage_size), center, size + 2 * int(extent))
    ok.append(inside(box, regions(label)[split_of(label, center)]))
  return np.asarray(ok, bool)


def zoom_bin_cuts(bin_edges: Sequence[float], per_bin: int, canvas_size: int, *,
                  storage_size: int, colour: bool = False, seed: int = 0,
                  split: str = "test") -> dict[str, np.ndarray]:
  """Patches cut afresh from the `split` regions at `canvas_size` px, `per_bin` in each
  zoom bin.

  Zooms are in stored units, like the stored `zoom`: a patch at zoom `z` shows
  `storage_size / z` source pixels, as a stored example at `z` zoomed to the canvas would
  (the cut's own zoom is `z * canvas_size / storage_size`). Labels cycle through the
  classes within each bin; the zoom is log-uniform in the bin; the centre is uniform
  over the positions whose cut reads only the split's region. Returns `image` uint8
  `[B * per_bin, canvas, canvas, 3]`, `label`, `zoom`, `center`, `bin`.
  """
  edges = np.asarray(bin_edges, np.float64)
  if len(edges) < 2 or not np.all(edges > 0) or not np.all(np.diff(edges) > 0):
    raise ValueError(f"zoom bin edges must be positive and increasing, got {list(bin_edges)}.")
  rng = np.random.default_rng(seed)
  images, labels, zooms, centers, bins = [], [], [], [], []
  for b, (lo, hi) in enumerate(itertools.pairwise(edges)):
    for i in range(per_bin):
      label = i % NUM_CLASSES
      zoom = float(lo * (hi / lo) ** rng.uniform())
      cut_zoom = view_zoom(zoom, canvas_size, storage_size)
      half = canvas_size / (2 * cut_zoom) + _support(cut_zoom)
      bounds = _centre_range(regions(label)[split], half)
      if bounds is None:
        raise ValueError(
            f"Zoom {zoom:.3g} (bin {lo:g}..{hi:g}) shows {storage_size / zoom:.0f} source px, "
            f"more than the {split} region of {CLASS_NAMES[label]} {regions(label)[split]} "
            f"holds; start the zoom bins higher (photos.ZOOM_BINS starts at {ZOOM_BINS[0]}).")
      center = rng.uniform(*bounds)
      images.append(cut(label, cut_zoom, center, canvas_size, colour=colour, split=split))
      labels.append(label)
      zooms.append(zoom)
      centers.append(center)
      bins.append(b)
  return {
      "image": np.stack(images),
      "label": np.asarray(labels, np.int32),
      "zoom": np.asarray(zooms),
      "center": np.asarray(centers).reshape(-1, 2),
      "bin": np.asarray(bins, np.int32),
  }


@dataclasses.dataclass(eq=False)
class PhotosConfig(tfds.core.BuilderConfig):
  """A size, colour and sampling of `photos`."""
  storage_size: int = 64  # Stored image side in pixels; zoom is in these per source pixel.
  colour: bool = False  # RGB; else grey (PIL's luma) in 3 equal channels.
  num_train: int = 10_000
  num_test: int = 2_000
  seed: int = 0  # Splits are drawn from (seed, split, index).


class Photos(GeneratedSplits, tfds.core.GeneratorBasedBuilder):
  """TFDS builder `photos`: cut on the CPU from photographs in installed wheels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      PhotosConfig(
          name="default", description="Grey, 64 px, 10000 train / 2000 test.",
          storage_size=64, colour=False, num_train=10_000, num_test=2_000),
      PhotosConfig(
          name="colour", description="RGB, 64 px, 10000 train / 2000 test.",
          storage_size=64, colour=True, num_train=10_000, num_test=2_000),
      PhotosConfig(
          name="small", description="Grey, 32 px, 512 train / 128 test (tests, smoke runs).",
          storage_size=32, colour=False, num_train=512, num_test=128),
      PhotosConfig(
          name="sweep32", description="Grey, 32 px, 4096 train / 1024 test (quick CPU sweeps).",
          storage_size=32, colour=False, num_train=4096, num_test=1024),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.storage_size
    return self.dataset_info_from_configs(
        description=(
            "Real photographs at known zooms: 16 classes, one per photograph shipped with "
            "scikit-image and scikit-learn (periodic textures, stochastic textures, object "
            "scenes), each example a square patch cut at a zoom log-uniform in "
            f"{ZOOM_RANGE} stored px per source px from its split's region of the "
            "photograph. Metadata reproduce each image with progressive.data.photos.cut."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "family": tfds.features.ClassLabel(names=FAMILY_NAMES),
            "zoom": tfds.features.Scalar(dtype=np.float32),
            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
        }),
        supervised_keys=("image", "label"),
        homepage=None,
    )

  def sample(self, index: int, split: str) -> dict[str, Any]:
    config = self.builder_config
    return sample_example(index, seed=config.seed, split=split,
                          storage_size=config.storage_size, colour=config.colour)


def builder_config(name: str) -> PhotosConfig:
  """The builder config called `name`; `ValueError` listing them for an unknown one."""
  configs = Photos.builder_configs
  if name not in configs:
    raise ValueError(
        f"config.data.builder_config must be one of {sorted(configs)} for photos, got {name!r}.")
  return configs[name]


def prepare(config_name: str = "default",
            data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns the `photos` builder for `config_name`, generating it if needed
  (`scale_shapes.prepare_builder`)."""
  return prepare_builder(Photos, config_name, data_dir)
