"""Image-folder datasets: `ROOT/<split>/<class>/<image>`, as torchvision's `ImageFolder`
and fastai's `ImageDataLoaders.from_folder` read them. No preparation, no TensorFlow.

Class names are the sorted names of the class folders, and must be the same in every
split; or, with `config.data.class_names` (a model's classes, e.g. an imported ImageNet
network's synset ids), that list, of which each split may hold any: a class folder
named otherwise is refused. Any file PIL reads is an image (JPEG, PNG, WebP, BMP, TIFF, GIF, ...); hidden
files are ignored. Symbolic links that loop, dangle or leave ROOT, and sub-folders of a
class folder, are left out and named (`Index.left_out`).

The index of a split, its files in a fixed order, is built once by decoding every file
(JPEGs at 1/8 scale, `decode.check`), so that a truncated or corrupt file is named
before training starts, and cached as JSON (in `ROOT/.progressive_index/`, or under
`~/.cache/progressive/` where ROOT is read-only). The cache is keyed by every file's
name, size and modification time, so adding, removing or rewriting a file rebuilds it;
a cache that does not match its folder (a path that is not `<class>/<file>` inside
ROOT, a wrong label) is rebuilt with a warning. Because the order is a fixed function
of the file names, every process of a multi-process run holds the same index whether it
built or read it.

The order is the sorted file list under a fixed permutation, so that any contiguous
shard or slice (`train[:90%]`) mixes the classes.
"""

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import skimage.data
from etils import epath
from PIL import Image

from progressive.data import decode, splits, views

INDEX_VERSION = 2  # 2: the signature holds every file's size and mtime; left_out.
INDEX_DIR = ".progressive_index"
_ORDER_SEED = 20161201  # The fixed permutation of the sorted files; never change it.
LOOP = "symbolic-link loop"
DANGLING = "dangling symbolic link"
LEAVING = "symbolic link leaving ROOT"
SUB_FOLDER = "sub-folder (images are read only directly inside a class folder)"
NOT_A_FILE = "not a regular file"


@dataclasses.dataclass(frozen=True)
class Index:
  """The files of one split folder, in the dataset's fixed order."""

  class_names: tuple[str, ...]
  paths: tuple[str, ...]  # Relative to the split folder: "<class>/<file>".
  labels: tuple[int, ...]
  # Unreadable files left out (data.skip_unreadable): "<class>/<file>: unreadable (<cause>)".
  skipped: tuple[str, ...] = ()
  # Links that loop, dangle or leave ROOT, sub-folders: "<class>/<name>: <reason>".
  left_out: tuple[str, ...] = ()


class Entry(NamedTuple):
  """One entry of a class folder: its size and modification time (links followed; None
  where a link loops or dangles), and why it is left out (None: an image to read)."""

  size: int | None
  mtime_ns: int | None
  left_out: str | None


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


def _inside(path: str, bases: tuple[str, ...]) -> bool:
  real = os.path.realpath(path)
  return any(real == base or real.startswith(base.rstrip(os.sep) + os.sep) for base in bases)


def _entry(entry: os.DirEntry, bases: tuple[str, ...]) -> Entry:
  """Stats `entry` (following a link) and says whether it is left out, and why."""
  try:
    stat = entry.stat()
  except OSError as e:
    return Entry(None, None, LOOP if e.errno == errno.ELOOP else DANGLING)
  size, mtime = stat.st_size, stat.st_mtime_ns
  if entry.is_symlink() and not _inside(entry.path, bases):
    return Entry(size, mtime, LEAVING)
  if entry.is_dir():
    return Entry(size, mtime, SUB_FOLDER)
  if not entry.is_file():
    return Entry(size, mtime, NOT_A_FILE)
  return Entry(size, mtime, None)


def listing(split_dir: epath.Path, class_names: list[str]) -> dict[str, dict[str, Entry]]:
  """The entries of each class folder (hidden ones aside). A link may point anywhere
  inside ROOT, or inside the folder a linked split or class folder resolves to."""
  root = os.path.realpath(split_dir.parent)
  out = {}
  for name in class_names:
    folder = os.path.join(split_dir, name)
    bases = (root, os.path.realpath(split_dir), os.path.realpath(folder))
    with os.scandir(folder) as entries:
      out[name] = {e.name: _entry(e, bases) for e in entries if not e.name.startswith(".")}
  return out


def _signature(entries: Mapping[str, Mapping[str, Entry]]) -> str:
  """A digest of every entry's class, name, size and modification time: adding,
  removing, renaming or rewriting a file changes it (unless a rewrite keeps both the
  size and the modification time; the batch then catches a file that fails to decode)."""
  flat = sorted((c, n, e.size, e.mtime_ns) for c, files in entries.items() for n, e in files.items())
  return hashlib.sha256(json.dumps(flat).encode()).hexdigest()


def _cache_paths(root: epath.Path, split: str) -> list[epath.Path]:
  digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
  home = epath.Path(os.path.expanduser("~")) / ".cache" / "progressive" / "folder_index" / digest
  return [root / INDEX_DIR / f"{split}.json", home / f"{split}.json"]


def _problem(cached: Mapping[str, Any], split_dir: epath.Path,
             entries: Mapping[str, Mapping[str, Entry]]) -> str | None:
  """What is wrong with the cached index `cached` of `split_dir`, or None: every path
  must be `<class>/<file>`, a listed file that is read (not left out), once; every
  label its class folder's index; the class names the class folders."""
  class_names = list(entries)
  fields = ("class_names", "paths", "labels", "skipped", "left_out")
  if not all(isinstance(cached.get(f), list) for f in fields):
    return f"it lacks one of the lists {', '.join(fields)}"
  if not all(isinstance(s, str) for f in fields if f != "labels" for s in cached[f]):
    return "it holds names that are not strings"
  if cached["class_names"] != class_names:
    return f"its class names {cached['class_names']} are not the class folders {class_names}"
  paths, labels = cached["paths"], cached["labels"]
  if len(paths) != len(labels):
    return f"it has {len(paths)} paths but {len(labels)} labels"
  seen = set()
  for path, label in zip(paths, labels):
    parts = path.split("/")
    if not (len(parts) == 2 and parts[0] in entries and parts[1] in entries[parts[0]]):
      return f"path {path!r} is not <class>/<file> inside {split_dir}"
    reason = entries[parts[0]][parts[1]].left_out
    if reason is not None:
      return f"path {path!r} is a {reason}"
    if path in seen:
      return f"path {path!r} is listed twice"
    seen.add(path)
    expected = class_names.index(parts[0])
    if type(label) is not int or label != expected:  # pylint: disable=unidiomatic-typecheck
      return f"path {path!r} has the label {label!r}, not {expected} (its class folder's index)"
  skipped = {entry.split(": ", 1)[0] for entry in cached["skipped"]}
  missing = sorted(f"{c}/{n}" for c, files in entries.items() for n, e in files.items()
                   if e.left_out is None and f"{c}/{n}" not in seen | skipped)
  if missing:
    return f"it leaves out {missing[0]}" + (f" and {len(missing) - 1} more files" if len(missing) > 1 else "")
  return None


def _read_cache(paths: list[epath.Path], split_dir: epath.Path,
                entries: Mapping[str, Mapping[str, Entry]], skip: bool) -> Index | None:
  """The first current cache of `paths` that matches the folder; a cache that is current
  but does not match it is reported on stderr (and rebuilt by the caller)."""
  signature = _signature(entries)
  for path in paths:
    try:
      cached = json.loads(path.read_text())
    except (OSError, ValueError):
      continue
    if not (isinstance(cached, dict) and cached.get("version") == INDEX_VERSION
            and cached.get("signature") == signature and cached.get("skip_unreadable") == skip):
      continue  # Out of date.
    problem = _problem(cached, split_dir, entries)
    if problem is None:
      return Index(tuple(cached["class_names"]), tuple(cached["paths"]), tuple(cached["labels"]),
                   tuple(cached["skipped"]), tuple(cached["left_out"]))
    print(f"Warning: the cached index {path} is not valid ({problem}); rebuilding it.",
          file=sys.stderr, flush=True)
  return None


def _write_cache(paths: list[epath.Path], index: Index, signature: str, skip: bool) -> None:
  text = json.dumps({
      "version": INDEX_VERSION, "signature": signature, "skip_unreadable": skip,
      "class_names": index.class_names, "paths": index.paths, "labels": index.labels,
      "skipped": index.skipped, "left_out": index.left_out,
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


def _failure(path: str) -> decode.UnreadableImageError | None:
  try:
    decode.check(path)
  except decode.UnreadableImageError as e:
    return e
  return None


def build_index(split_dir: epath.Path, class_names: list[str], *, skip_unreadable: bool,
                entries: Mapping[str, Mapping[str, Entry]] | None = None,
                threads: int | None = None) -> Index:
  """Decodes every file (`decode.check`, in `threads` threads: by default one per core,
  up to 16) of the class folders' `entries` (by default listed now); links and
  sub-folders are left out and named. `ValueError` for a class folder with no images or
  (without `skip_unreadable`) a file that cannot be decoded, naming the first in order."""
  entries = listing(split_dir, class_names) if entries is None else entries
  paths, labels, skipped, left_out = [], [], [], []
  pool = concurrent.futures.ThreadPoolExecutor(threads or min(16, os.cpu_count() or 1))
  try:
    for label, name in enumerate(class_names):
      left_out += [f"{name}/{f}: {e.left_out}" for f, e in sorted(entries[name].items()) if e.left_out]
      files = sorted(f for f, e in entries[name].items() if e.left_out is None)
      # One class at a time: a bounded queue, and an early error leaves little to finish.
      for file, error in zip(files, pool.map(_failure, [os.path.join(split_dir, name, f) for f in files])):
        if error is None:
          paths.append(f"{name}/{file}")
          labels.append(label)
        elif skip_unreadable:
          skipped.append(f"{name}/{file}: unreadable ({error.cause})")
        else:
          raise ValueError(
              f"{error}. Remove or replace it, or set config.data.skip_unreadable=True to "
              "leave unreadable files out (they are counted in metrics.jsonl)."
          )
      if not labels or labels[-1] != label:
        raise ValueError(
            f"The class folder {split_dir / name} has no "
            + ("readable " if entries[name] else "") + "images; add some or remove the folder "
            "(every split must have the same classes)."
        )
  finally:
    pool.shutdown(cancel_futures=True)
  order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
  return Index(tuple(class_names), tuple(paths[i] for i in order),
               tuple(labels[i] for i in order), tuple(skipped), tuple(left_out))


def split_index(config: Mapping[str, Any], spec: str, field: str = "train_split") -> Index:
  """The index of split `spec` (a split folder name, optionally sliced like TFDS:
  "train[:90%]") of `config` (config.data), from the cache when it is current and
  valid; errors name `config.data.<field>`."""
  if not config["data_dir"]:
    raise ValueError(
        'config.data.data_dir must be the dataset root for data.name="folder" (images in '
        "ROOT/<split>/<class>/<image>), e.g. --config.data.data_dir=/data/imagenette2."
    )
  root = epath.Path(config["data_dir"]).expanduser()
  split, part = splits.folder_and_slice(spec)
  split_dir = root / split
  class_names = _class_folders(split_dir, field, spec)
  entries = listing(split_dir, class_names)
  skip = bool(config["skip_unreadable"])
  caches = _cache_paths(root, split)
  index = _read_cache(caches, split_dir, entries, skip)
  if index is None:
    index = build_index(split_dir, class_names, skip_unreadable=skip, entries=entries)
    _write_cache(caches, index, _signature(entries), skip)
  if config.get("class_names"):
    index = _relabel(index, tuple(config["class_names"]), split_dir)
  if part is None:
    return index
  start, stop = splits.slice_bounds(f"{split}{part}", {split: len(index.paths)},
                                    f"config.data.{field}")
  return dataclasses.replace(index, paths=index.paths[start:stop], labels=index.labels[start:stop])


def _relabel(index: Index, class_names: tuple[str, ...], split_dir) -> Index:
  """`index` labelled by position in `class_names` (`config.data.class_names`: a model's
  classes, of which the folder may hold any), not by class folder."""
  position = views.class_labels(index.class_names, class_names, split_dir,
                                "config.data.class_names")
  labels = tuple(position[index.class_names[label]] for label in index.labels)
  return dataclasses.replace(index, class_names=class_names, labels=labels)


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


def left_out_entries(config: Mapping[str, Any], train: Index, test: Index) -> tuple[str, ...]:
  """Every file of the train and eval split folders left out of `train` and `test`
  (their indexes), each prefixed with its split folder: "train/cat/x.jpg: <reason>"."""
  by_folder = {}
  for spec, index in ((config["train_split"], train), (config["eval_split"], test)):
    folder = splits.folder_and_slice(spec)[0]
    by_folder[folder] = sorted(f"{folder}/{e}" for e in index.left_out + index.skipped)
  return tuple(e for entries in by_folder.values() for e in entries)


class FileReader:
  """Examples of one split folder: each image's bytes, still encoded, and its label."""

  # What to do about a file that fails to decode where its batch is made.
  unreadable_fix = ("it changed after the index was built. Replace or remove it (the index "
                    "is rebuilt on the next run)")

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
