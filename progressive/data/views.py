"""The standard views of photographs as a pretrained network expects them, and the folders
of images the invariance analyses read (`progressive invariance`).

    view = standard_view(Image.open(path).convert("RGB"), 256, 224)  # uint8 [224, 224, 3]
    resize_px, crop_px, interpolation = view_settings(run)

`standard_view` is torchvision's evaluation transform, `Resize(resize_px)` then
`CenterCrop(crop_px)`, pixel for pixel (PIL does the resampling, as in torchvision);
tests/test_invariance.py checks it against torchvision's own output.

A folder of images is laid out `ROOT/<class>/<image>` (ImageNet's validation set by
synset, or one split of a folder dataset). Its class folders are matched to a run's
classes by name, and `choose` picks the same images, stratified over the classes, for
every run an analysis compares. Images decode as torchvision's `ImageFolder` reads them
(`Image.open(path).convert("RGB")`); a file PIL cannot decode is left out and counted.
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from progressive import errors
from progressive.data import decode

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# Resize to the shorter side over the crop's side: 256 / 224, ImageNet's evaluation.
CROP_RATIO = 8 / 7


class ImagesError(errors.Error, ValueError):
  """A folder of images that cannot be analysed: missing, empty, or with classes the
  run does not have."""


def _resample(interpolation: str) -> Image.Resampling:
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}.")
  return INTERPOLATIONS[interpolation]


def resize_shorter(image: Image.Image, resize_px: int, interpolation: str = "bilinear") -> Image.Image:
  """torchvision's `Resize(resize_px)` of a PIL image: the shorter side to `resize_px`, the
  other to `int(resize_px * long / short)` (truncated, as torchvision does)."""
  width, height = image.size
  short, long = (width, height) if width <= height else (height, width)
  new_short, new_long = int(resize_px), int(int(resize_px) * long / short)
  size = (new_short, new_long) if width <= height else (new_long, new_short)
  if size == image.size:
    return image
  return image.resize(size, _resample(interpolation))


def center_corner(height: int, width: int, crop_px: int) -> tuple[int, int]:
  """`(top, left)` of torchvision's `CenterCrop(crop_px)` in a `height` x `width` image."""
  if crop_px > min(height, width):
    raise ValueError(f"A {crop_px} px crop does not fit a {width}x{height} image.")
  return round((height - crop_px) / 2.0), round((width - crop_px) / 2.0)


def standard_view(image: Image.Image, resize_px: int, crop_px: int,
                  interpolation: str = "bilinear") -> np.ndarray:
  """torchvision's `Resize(resize_px)` then `CenterCrop(crop_px)` of a PIL RGB image:
  uint8 `[crop_px, crop_px, 3]`."""
  resized = np.asarray(resize_shorter(image, resize_px, interpolation))
  top, left = center_corner(*resized.shape[:2], crop_px)
  return resized[top:top + crop_px, left:left + crop_px]


def standard_views(images: Sequence[Image.Image], resize_px: int, crop_px: int,
                   interpolation: str = "bilinear") -> np.ndarray:
  """`standard_view` of each image: uint8 `[N, crop_px, crop_px, 3]`."""
  views = [standard_view(image, resize_px, crop_px, interpolation) for image in images]
  return np.stack(views) if views else np.zeros((0, crop_px, crop_px, 3), np.uint8)


def view_settings(run, size: int | None = None) -> tuple[int, int, str]:
  """`(resize_px, crop_px, interpolation)` of a run's standard view: an imported network's
  own (the config's `pretrained` section, as the importer writes it), else the 0.875
  centre crop at the run's size (`round(size * 8 / 7)`, bilinear). At another `size`
  (a test size) the crop is `size` and the resize keeps the same ratio to it."""
  pretrained = run.config.get("pretrained")
  if pretrained is not None and pretrained.get("arch") is not None:
    resize_px, crop_px = int(pretrained["resize_px"]), int(pretrained["crop_px"])
    interpolation = str(pretrained["interpolation"])
  else:
    resize_px, crop_px, interpolation = None, int(run.train_size), "bilinear"
  size = crop_px if size is None else int(size)
  ratio = CROP_RATIO if resize_px is None else resize_px / crop_px
  return (resize_px if size == crop_px and resize_px else round(size * ratio)), size, interpolation


# --- Folders of images ---------------------------------------------------------------------


def list_folder(root) -> dict[str, list[str]]:
  """The files of each class folder of `ROOT/<class>/<image>`, sorted (hidden entries and
  anything that is not a file left out); `ImagesError` if `root` is not a folder or holds
  no files in class folders."""
  root = os.path.expanduser(str(root))
  if not os.path.isdir(root):
    raise ImagesError(f"{root} is not a folder; the images are read from ROOT/<class>/<image>.")
  files = {}
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if name.startswith(".") or not os.path.isdir(folder):
      continue
    paths = sorted(e.path for e in os.scandir(folder) if not e.name.startswith(".") and e.is_file())
    if paths:
      files[name] = paths
  if not files:
    raise ImagesError(f"{root} holds no images in class folders; lay them out "
                      "ROOT/<class>/<image> (ImageNet's validation set by synset).")
  return files


def class_labels(folders: Sequence[str], class_names: Sequence[str], root, run_name: str) -> dict:
  """`{folder: the run's class index}`, matched by name; `ImagesError` naming the first
  class folder that is not one of the run's classes."""
  index = {name: i for i, name in enumerate(class_names)}
  for name in folders:
    if name not in index:
      first = ", ".join(list(class_names)[:5])
      raise ImagesError(
          f"The class folder {os.path.join(str(root), name)} is not one of the {len(class_names)} "
          f"classes of {run_name} ({first}, ...): name class folders as the run's classes "
          "(for an ImageNet network, by synset id such as n01440764).")
  return {name: index[name] for name in folders}


def choose(files: Mapping[str, Sequence[str]], seed: int = 0) -> list[tuple[str, str]]:
  """Every `(class, path)` of `files` in a seeded order stratified over the classes: each
  class's files shuffled, then one from each class in turn (the classes in a shuffled
  order, the same each round), so that the first N cover as many classes as they can."""
  rng = np.random.default_rng(seed)
  names = list(files)
  queues = [[files[n][i] for i in rng.permutation(len(files[n]))] for n in names]
  order = rng.permutation(len(names))
  picked, depth = [], 0
  while len(picked) < sum(map(len, queues)):
    picked += [(names[c], queues[c][depth]) for c in order if depth < len(queues[c])]
    depth += 1
  return picked


def open_image(path) -> Image.Image:
  """The file at `path` as torchvision's `ImageFolder` reads it: `Image.open(path)
  .convert("RGB")`; `decode.UnreadableImageError` naming it if PIL cannot decode it
  (decoded whole first: a truncated JPEG fails here, not later)."""
  decode.check(path)
  with Image.open(path) as image:
    return image.convert("RGB")


def load_images(candidates: Sequence[tuple[str, str]], num: int | None) -> dict:
  """The first `num` (None: all) readable images of `candidates` (`(class, path)`, as
  `choose` orders them): `images` (PIL RGB), `classes`, `paths` and `unreadable` (the
  candidates left out on the way, `"<path>: <cause>"`)."""
  images, classes, paths, unreadable = [], [], [], []
  for name, path in candidates:
    if num is not None and len(images) >= num:
      break
    try:
      images.append(open_image(path))
    except decode.UnreadableImageError as e:
      unreadable.append(f"{path}: {e.cause}")
      continue
    classes.append(name)
    paths.append(path)
  return {"images": images, "classes": classes, "paths": paths, "unreadable": unreadable}
