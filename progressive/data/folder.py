"""Image-folder datasets: `ROOT/<split>/<class>/<image>`, as torchvision's `ImageFolder`
and fastai's `ImageDataLoaders.from_folder` read them. No preparation, no TensorFlow.

Class names are the sorted names of the class folders, and must be the same in every
split. Any file PIL reads is an image (JPEG, PNG, WebP, BMP, TIFF, GIF, ...); hidden
files are ignored. The index of a split, its files in a fixed order, is built once by
reading every file's header, and cached as JSON (in `ROOT/.progressive_index/`, or
under `~/.cache/progressive/` where ROOT is read-only); it is rebuilt when a class
folder changes. Because the order is a fixed function of the file names, every process
of a multi-process run holds the same index whether it built or read it.

The order is the sorted file list under a fixed permutation, so that any contiguous
shard or slice (`train[:90%]`) mixes the classes.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import skimage.data
from etils import epath
from PIL import Image

from progressive.data import decode, splits

INDEX_VERSION = 1
INDEX_DIR = ".progressive_index"
_ORDER_SEED = 20161201  # The fixed permutation of the sorted files; never change it.


@dataclasses.dataclass(frozen=True)
class Index:
  """The files of one split folder, in the dataset's fixed order."""

  class_names: tuple[str, ...]
  paths: tuple[str, ...]  # Relative to the split folder: "<class>/<file>".
  labels: tuple[int, ...]
  skipped: tuple[str, ...] = ()  # Unreadable files left out (data.skip_unreadable).


def _folders(path: epath.Path) -> list[str]:
  return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folders(split_dir: epath.Path, field: str, spec: str) -> list[str]:
  root = split_dir.parent
  if not root.is_dir():
    raise ValueError(f"config.data.data_dir={str(root)!r} is not a folder; a folder dataset is "
                     "laid out ROOT/<split>/<class>/<image>.")
  if not split_dir.is_dir():
    raise ValueError(
        f"config.data.{field}={spec!r}: there is no folder {split_dir}; {root} has the split "
        f"folders {_folders(root)} (a folder dataset is laid out ROOT/<split>/<class>/<image>)."
    )
  names = _folders(split_dir)
  if not names:
    raise ValueError(
        f"{split_dir} has no class folders; a folder dataset is laid out "
        "ROOT/<split>/<class>/<image>."
    )
  return names


def _signature(split_dir: epath.Path, class_names: list[str]) -> dict[str, int]:
  """Modification times of the split's class folders (they change when a file is added,
  removed or renamed)."""
  return {name: os.stat(split_dir / name).st_mtime_ns for name in class_names}


def _cache_paths(root: epath.Path, split: str) -> list[epath.Path]:
  digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
  home = epath.Path(os.path.expanduser("~")) / ".cache" / "progressive" / "folder_index" / digest
  return [root / INDEX_DIR / f"{split}.json", home / f"{split}.json"]


def _read_cache(paths: list[epath.Path], signature: Mapping[str, int], skip: bool) -> Index | None:
  for path in paths:
    try:
      cached = json.loads(path.read_text())
    except (OSError, ValueError):
      continue
    if (cached.get("version") == INDEX_VERSION and cached.get("signature") == signature
        and cached.get("skip_unreadable") == skip):
      return Index(tuple(cached["class_names"]), tuple(cached["paths"]),
                   tuple(cached["labels"]), tuple(cached["skipped"]))
  return None


def _write_cache(paths: list[epath.Path], index: Index, signature, skip: bool) -> None:
  text = json.dumps({
      "version": INDEX_VERSION, "signature": signature, "skip_unreadable": skip,
      "class_names": index.class_names, "paths": index.paths, "labels": index.labels,
      "skipped": index.skipped,
  })
  for path in paths:  # The first writable place.
    tmp = path.parent / f"{path.name}.{os.getpid()}.tmp"
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp.write_text(text)
      tmp.replace(path)
      return
    except OSError:
      try:
        tmp.unlink(missing_ok=True)
      except OSError:
        pass


def build_index(split_dir: epath.Path, class_names: list[str], *, skip_unreadable: bool) -> Index:
  """Reads every file's header; `ValueError` for an empty class folder or (without
  `skip_unreadable`) a file that is not a readable image, naming it."""
  paths, labels, skipped = [], [], []
  for label, name in enumerate(class_names):
    files = sorted(f.name for f in (split_dir / name).iterdir()
                   if not f.name.startswith(".") and f.is_file())
    readable = 0
    for file in files:
      try:
        decode.image_size(split_dir / name / file)
      except decode.UnreadableImageError as e:
        if not skip_unreadable:
          raise ValueError(
              f"{e}. Remove or replace it, or set config.data.skip_unreadable=True to "
              "leave unreadable files out (they are counted in metrics.jsonl)."
          ) from None
        skipped.append(f"{name}/{file}")
        continue
      paths.append(f"{name}/{file}")
      labels.append(label)
      readable += 1
    if not readable:
      raise ValueError(
          f"The class folder {split_dir / name} has no "
          + ("readable " if files else "") + "images; add some or remove the folder "
          "(every split must have the same classes)."
      )
  order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
  return Index(tuple(class_names), tuple(paths[i] for i in order),
               tuple(labels[i] for i in order), tuple(skipped))


def split_index(config: Mapping[str, Any], spec: str, field: str = "train_split") -> Index:
  """The index of split `spec` (a split folder name, optionally sliced like TFDS:
  "train[:90%]") of `config` (config.data), from the cache when it is current; errors
  name `config.data.<field>`."""
  if not config["data_dir"]:
    raise ValueError(
        'config.data.data_dir must be the dataset root for data.name="folder" (images in '
        "ROOT/<split>/<class>/<image>), e.g. --config.data.data_dir=/data/imagenette2."
    )
  root = epath.Path(config["data_dir"]).expanduser()
  split, part = splits.folder_and_slice(spec)
  split_dir = root / split
  class_names = _class_folders(split_dir, field, spec)
  signature = _signature(split_dir, class_names)
  skip = bool(config["skip_unreadable"])
  caches = _cache_paths(root, split)
  index = _read_cache(caches, signature, skip)
  if index is None:
    index = build_index(split_dir, class_names, skip_unreadable=skip)
    _write_cache(caches, index, signature, skip)
  if part is None:
    return index
  start, stop = splits.slice_bounds(f"{split}{part}", {split: len(index.paths)},
                                    f"config.data.{field}")
  return dataclasses.replace(index, paths=index.paths[start:stop], labels=index.labels[start:stop])


def indexes(config: Mapping[str, Any]) -> tuple[Index, Index]:
  """The train and eval split indexes; `ValueError` if their classes differ."""
  train = split_index(config, config["train_split"], "train_split")
  test = split_index(config, config["eval_split"], "eval_split")
  if train.class_names != test.class_names:
    only_train = sorted(set(train.class_names) - set(test.class_names))
    only_test = sorted(set(test.class_names) - set(train.class_names))
    raise ValueError(
        f"The class folders of {config['train_split']!r} and {config['eval_split']!r} differ "
        f"(only in the first: {only_train}; only in the second: {only_test}); every split "
        f"of {config['data_dir']} needs the same class folders."
    )
  return train, test


class FileReader:
  """Examples of one split folder: each image's bytes, still encoded, and its label."""

  def __init__(self, split_dir, index: Index):
    self.split_dir = str(split_dir)
    self.paths, self.labels = index.paths, np.asarray(index.labels, np.int32)

  def __call__(self, indices: np.ndarray) -> dict[str, Any]:
    images = []
    for i in indices:
      path = os.path.join(self.split_dir, self.paths[int(i)])
      with open(path, "rb") as f:
        images.append(decode.Encoded(f.read(), path))
    return {"image": images, "label": self.labels[np.asarray(indices)]}


def split_dir(config: Mapping[str, Any], spec: str) -> epath.Path:
  """The folder of split `spec` ("train", "train[:90%]", ...)."""
  return epath.Path(config["data_dir"]).expanduser() / splits.folder_and_slice(spec)[0]


# Photographs bundled with scikit-image, one class each, for `write_photo_folder`.
PHOTO_CLASSES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass",
                 "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "rocket")


def write_photo_folder(root, counts: Mapping[str, int], *, size: tuple[int, int] = (500, 375),
                       classes=PHOTO_CLASSES, quality: int = 90, seed: int = 0) -> epath.Path:
  """Writes `ROOT/<split>/<class>/<i>.jpg` for `counts` = {split: images per class}: each a
  random crop (a quarter to all of the area) of the class's scikit-image photograph,
  resized to `size` (width, height; ImageNet's typical 500x375 by default) and saved as
  a JPEG. Real photographs with real JPEG statistics, for tests and the pipeline bench."""
  root = epath.Path(root)
  rng = np.random.default_rng(seed)
  for name in classes:
    photo = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
    width, height = photo.size
    for split, count in counts.items():
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        area = rng.uniform(0.25, 1.0)
        w = min(width, round(float(np.sqrt(area * width * height * size[0] / size[1]))))
        h = min(height, round(w * size[1] / size[0]))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = photo.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        crop.save(folder / f"{i:05d}.jpg", quality=quality)
  return root
