"""The input pipeline: a dataset split, one process's shard of it, batched by grain.

Three kinds of dataset, each a `Source` (`source_for(name)` picks it) behind one API
(`dataset_info`, `open_split`); split specs such as "train[:90%]" and the process shards
follow TFDS's rules for all three (`progressive.data.splits`):

- the built-in datasets, `scale_shapes` and `photos` (`BUILTINS`): prepared on first
  use, the shard held in memory as uint8 arrays at the stored size, zoomed to each
  stage's size on the device, and redrawn at any scale or shift by the analyses;
- image folders (`name="folder"`, `ROOT/<split>/<class>/<image>`, `progressive.data.folder`):
  no preparation, no TensorFlow;
- any TFDS image classification dataset by name (`cifar10`, `imagenette/320px-v2`,
  `imagenet2012`, ...), prepared beforehand in `array_record` format with `tfds build`
  (which needs TensorFlow) and read here with `builder.as_data_source` (which does
  not), images left encoded (`SkipDecoding`).

Folders and TFDS datasets are decoded on the host one example at a time inside the
grain pipeline (`progressive.data.decode`), each training batch straight at its stage's
size (random-resized-crop and flip, `progressive.data.augment`; JPEGs at reduced DCT
scale), so the host's work follows the stage size; evaluation batches are decoded at
the fixed `config.image_size` (resize and centre crop) and zoomed on the device, one
read for every test size. `DatasetInfo.train_image_size` says which. Normalising
happens on the device, inside the compiled step (`progressive.data.resize`).

An example that fails to decode where its batch is made (a file rewritten after its
index was built, a damaged TFDS record) raises `UnreadableExampleError`, one line naming
it; with `config.data.skip_unreadable` the next readable example of the shard stands in
for it instead. Every batch flags such examples in `"unreadable"`.

The training order is a grain `MapDataset` (shuffled afresh every epoch, batched) whose
iterator state is a small dict that goes into every checkpoint; augmentation is drawn
from (seed, epoch, example), so a resumed run sees exactly the batches it would have seen.
"""

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from progressive import errors
from progressive.data import augment as augment_lib
from progressive.data import decode, folder, photos, scale_shapes, splits

BUILTIN = "scale_shapes"
PHOTOS = "photos"  # Patches of real photographs (progressive.data.photos).
BUILTINS = (BUILTIN, PHOTOS)  # Generated on first use, held in memory, redrawn by analyses.
FOLDER = "folder"  # ROOT/<split>/<class>/<image>, ROOT = config.data.data_dir.
NONE = "none"  # No examples, only `data.class_names`: a network imported without data.
# Per-channel mean and std in [0, 1] units, by dataset name (before any "/config").
NORMALIZATION = {
    # Measured on the default train split (colours are uniform with a luma-contrast rule).
    "scale_shapes": ((0.50, 0.50, 0.50), (0.31, 0.34, 0.29)),
    # Over all pixels of the default (grey) and colour train splits; `_photos_info`
    # picks "photos/colour" for the colour config.
    "photos": ((0.4098, 0.4098, 0.4098), (0.2262, 0.2262, 0.2262)),
    "photos/colour": ((0.4518, 0.3959, 0.3715), (0.2596, 0.2275, 0.2342)),
    # Over all pixels of the 50k training images; fastai's `cifar_stats` to 3 digits.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # ImageNet's training set (torchvision; fastai's `imagenet_stats`), also used for
    # its subsets and for any dataset not in this table.
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenette": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DEFAULT_NORMALIZATION = NORMALIZATION["imagenet2012"]
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
_WORKER_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)
_REPLACED: set[str] = set()  # Examples this process has said it replaced (each said once).


class UnreadableExampleError(errors.Error):
  """An example that failed to decode where its batch was made, without
  `config.data.skip_unreadable`: one line naming it (`path`: its file, or its TFDS
  record), the cause and the fix."""

  def __init__(self, message: str, path: str | None = None):
    super().__init__(message)
    self.path = path

  def __reduce__(self):  # Pickled whole: it crosses from grain's worker processes.
    return type(self), (str(self), self.path)


def _unreadable_example(error: decode.UnreadableImageError, fix: str) -> UnreadableExampleError:
  """The one line for `error`; `fix` (the reader's) comes before the flag."""
  name = error.name or "an encoded image"
  return UnreadableExampleError(
      f"Cannot decode {name} ({error.cause}); {f'{fix}, or set' if fix else 'set'} "
      "config.data.skip_unreadable=True to use a readable neighbour in its place.", path=error.name)


def _report_replaced(error: decode.UnreadableImageError) -> None:
  """Says once per process, on stderr, that a neighbour stands in for an example."""
  name = error.name or "an encoded image"
  if name not in _REPLACED:
    _REPLACED.add(name)
    print(f"Warning: cannot decode {name} ({error.cause}); a readable neighbour stands in "
          "for it (config.data.skip_unreadable).", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the rest of the code needs to know about a dataset before loading it."""

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_size: int  # Side of the square uint8 images in every batch (config.image_size).
  num_train: int  # Examples in config.train_split.
  num_test: int  # Examples in config.eval_split.
  mean: tuple[float, float, float]  # Per-channel, in [0, 1] units.
  std: tuple[float, float, float]
  family_names: tuple[str, ...] | None = None  # Class families, where the dataset has them.
  class_family: tuple[int, ...] | None = None
  # Training batches are decoded on the host at each stage's size (encoded datasets)
  # rather than at image_size and zoomed on the device (datasets held in memory).
  stage_sized: bool = False
  num_skipped: int = 0  # Unreadable files left out (folder datasets, data.skip_unreadable).
  # Folder datasets: every entry of the train and eval split folders left out of their
  # index, "<split>/<class>/<name>: <reason>" (links that loop, dangle or leave ROOT,
  # sub-folders, and the unreadable files above).
  left_out: tuple[str, ...] = ()
  # scale_shapes: what `scale_shapes.render` needs besides an example's metadata to
  # redraw this builder config's scenes (`scale_shapes.RenderOptions`); photos: what
  # `photos.cut` needs to cut its examples again (`photos.CutOptions`); None elsewhere.
  render_options: Any = None

  def train_image_size(self, stage_size: int) -> int:
    """Side of the images in a training batch of a stage at `stage_size` px."""
    return stage_size if self.stage_sized else self.image_size


def _normalization(config: Mapping[str, Any]) -> tuple[tuple, tuple]:
  mean, std = NORMALIZATION.get(config["name"].split("/")[0].split(":")[0], DEFAULT_NORMALIZATION)
  mean = mean if config["mean"] is None else config["mean"]
  std = std if config["std"] is None else config["std"]
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def prepare_command(name: str, data_dir: str, manual: bool = False) -> str:
  """The shell command that prepares TFDS dataset `name` in `data_dir` for this pipeline."""
  command = f"tfds build {name} --data_dir={data_dir} --file_format=array_record"
  return command + (" --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES" if manual else "")


def tfds_name(config: Mapping[str, Any]) -> str:
  """The full TFDS name of `config.data`: `name`, plus `/builder_config` unless that is
  None or "default" (the dataset's default config)."""
  name, builder_config = config["name"], config["builder_config"]
  if builder_config in (None, "default"):
    return name
  if "/" in name:
    raise ValueError(
        f"config.data.name={name!r} already names a builder config; set "
        f"config.data.builder_config to 'default', not {builder_config!r}."
    )
  return f"{name}/{builder_config}"


def _tfds_builder(config: Mapping[str, Any]):
  """The builder of a prepared TFDS dataset; `ValueError` saying how to prepare it if not."""
  try:
    builder_cls = tfds.builder_cls(config["name"].split("/")[0].split(":")[0])
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f"config.data.name={config['name']!r} is neither {BUILTIN!r} nor a TFDS dataset. List TFDS "
        "names with `python -c 'import tensorflow_datasets as tfds; "
        "print(tfds.list_builders())'` or see https://www.tensorflow.org/datasets/catalog; "
        "a builder config goes after a slash, e.g. 'imagenette/320px-v2'."
    ) from None
  name = tfds_name(config)
  configs = sorted(builder_cls.builder_configs)
  config_name = name.split(":")[0].partition("/")[2]
  if config_name and config_name not in configs:
    raise ValueError(
        f"{name!r} (config.data.name, builder_config): {builder_cls.name} has "
        + (f"the builder configs {configs}." if configs else "no builder configs.")
    )
  try:
    builder = tfds.builder(name, data_dir=config["data_dir"])
  except (ValueError, AssertionError) as e:
    raise ValueError(f"config.data.name={name!r}: {e}") from None
  if not builder.is_prepared():
    manual = bool(builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS)
    raise ValueError(
        f"Dataset {name!r} is not prepared in {builder.data_dir_root} (no "
        f"{builder.data_path}). Prepare it once, in array_record format; this needs "
        'TensorFlow (pip install -e ".[prepare]"), training does not:\n'
        f"  {prepare_command(name, builder.data_dir_root, manual)}\n"
        + (f"{name} needs files you download yourself into the manual_dir first; its page "
           "in the TFDS catalog lists them.\n" if manual else "")
        + "Or set config.data.data_dir to where it is prepared."
    )
  formats = {f.value for f in builder.info.available_file_formats()}
  if "array_record" not in formats:
    raise ValueError(
        f"Dataset {name!r} in {builder.data_dir_root} is stored as {sorted(formats)}, "
        "which has no random access; prepare it again in array_record format:\n"
        f"  {prepare_command(name, builder.data_dir_root)}"
    )
  return builder


def _keys(info) -> tuple[str, str]:
  """The image and label feature names of a TFDS dataset."""
  keys = info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  return "image", "label"


def _split_size(info, config: Mapping[str, Any], field: str) -> int:
  split = config[field]
  try:
    return info.splits[split].num_examples
  except (KeyError, ValueError):
    raise ValueError(
        f"config.data.{field}={split!r} is not a split of {tfds_name(config)}; it has "
        f"{sorted(info.splits)} (slices such as 'train[:90%]' work too)."
    ) from None


def _tfds_info(config: Mapping[str, Any]):
  """`(DatasetInfo, builder)` of a prepared TFDS dataset."""
  name = tfds_name(config)
  builder = _tfds_builder(config)
  info = builder.info
  image_key, label_key = _keys(info)
  image, label = info.features[image_key], info.features[label_key]
  if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(
        f"config.data.name={name!r} is not an image classification dataset (an Image "
        f"feature {image_key!r} and a ClassLabel {label_key!r})."
    )
  if image.shape[-1] not in (1, 3):
    raise ValueError(f"{name} images have {image.shape[-1]} channels; only 1 or 3 are supported.")
  image_size = config["image_size"]
  if image_size is None:
    height, width = image.shape[:2]
    if height is None or height != width:
      raise ValueError(
          f"config.data.image_size must be set for {name}: its images are not all one "
          f"square size ({image.shape[:2]}). E.g. 224."
      )
    image_size = height
  mean, std = _normalization(config)
  return DatasetInfo(
      name=name,
      num_classes=label.num_classes,
      class_names=tuple(label.names),
      image_size=image_size,
      num_train=_split_size(info, config, "train_split"),
      num_test=_split_size(info, config, "eval_split"),
      mean=mean,
      std=std,
      stage_sized=True,
  ), builder


def _scale_shapes_info(config: Mapping[str, Any]) -> DatasetInfo:
  builder_configs = scale_shapes.ScaleShapes.builder_configs
  if config["builder_config"] not in builder_configs:
    raise ValueError(
        f"config.data.builder_config must be one of {sorted(builder_configs)} for "
        f"scale_shapes, got {config['builder_config']!r}."
    )
  bc = builder_configs[config["builder_config"]]
  image_size = config["image_size"]
  if image_size not in (None, bc.storage_size):
    raise ValueError(
        f"config.data.image_size={image_size} differs from {bc.storage_size}, the stored "
        f"size of scale_shapes/{bc.name} (its texture periods are in stored pixels); "
        "leave it None."
    )
  counts = {"train": bc.num_train, "test": bc.num_test}
  sizes = {field: splits.split_count(config[field], counts, f"config.data.{field}")
           for field in ("train_split", "eval_split")}
  mean, std = _normalization(config)
  return DatasetInfo(
      name=BUILTIN,
      num_classes=len(bc.class_names()),
      class_names=bc.class_names(),
      image_size=bc.storage_size,
      num_train=sizes["train_split"],
      num_test=sizes["eval_split"],
      mean=mean,
      std=std,
      family_names=bc.family_names(),
      class_family=bc.class_family(),
      render_options=bc.render_options(),
  )


def _photos_info(config: Mapping[str, Any]) -> DatasetInfo:
  bc = photos.builder_config(config["builder_config"])
  image_size = config["image_size"]
  if image_size not in (None, bc.storage_size):
    raise ValueError(
        f"config.data.image_size={image_size} differs from {bc.storage_size}, the stored "
        f"size of photos/{bc.name} (zoom is in stored pixels per source pixel); leave it None."
    )
  counts = {"train": bc.num_train, "test": bc.num_test}
  sizes = {field: splits.split_count(config[field], counts, f"config.data.{field}")
           for field in ("train_split", "eval_split")}
  mean, std = NORMALIZATION["photos/colour" if bc.colour else PHOTOS]
  mean = mean if config["mean"] is None else config["mean"]
  std = std if config["std"] is None else config["std"]
  return DatasetInfo(
      name=PHOTOS,
      num_classes=photos.NUM_CLASSES,
      class_names=photos.CLASS_NAMES,
      image_size=bc.storage_size,
      num_train=sizes["train_split"],
      num_test=sizes["eval_split"],
      mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std),
      family_names=photos.FAMILY_NAMES,
      class_family=photos.CLASS_FAMILY,
      render_options=photos.CutOptions(storage_size=bc.storage_size, colour=bc.colour),
  )


def _folder_info(config: Mapping[str, Any]):
  """`(DatasetInfo, (train_index, eval_index))` of an image-folder dataset."""
  if config["image_size"] is None:
    raise ValueError(
        'config.data.image_size must be set for data.name="folder" (the side of the '
        "evaluation images and of the largest training crops), e.g. 224."
    )
  train, test = folder.indexes(config)
  mean, std = _normalization(config)
  return DatasetInfo(
      name=FOLDER,
      num_classes=len(train.class_names),
      class_names=train.class_names,
      image_size=config["image_size"],
      num_train=len(train.paths),
      num_test=len(test.paths),
      mean=mean,
      std=std,
      stage_sized=True,
      num_skipped=len(train.skipped) + len(test.skipped),
      left_out=folder.left_out_entries(config, train, test),
  ), (train, test)


class NoDataError(errors.Error, ValueError):
  """A split of `data.name="none"`: a run imported without data has no examples."""


def _none_info(config: Mapping[str, Any]) -> DatasetInfo:
  """The classes, input size and normalisation of a run imported without data."""
  names = config["class_names"]
  if not names:
    raise ValueError('config.data.class_names must list the classes of data.name="none" '
                     "(a network imported without data).")
  mean, std = _normalization(config)
  return DatasetInfo(name=NONE, num_classes=len(names), class_names=tuple(names),
                     image_size=config["image_size"], num_train=0, num_test=0, mean=mean, std=std)


def _open_none(config: Mapping[str, Any], split: str, **kwargs) -> "Split":
  del config, kwargs
  raise NoDataError(
      f"This run has no {split!r} split: it was imported without data (data.name='none'). "
      "Give its analyses images: progressive invariance --workdir=WORKDIR --images=FOLDER "
      "(FOLDER/<class>/<image>), or fine-tune it on a dataset with config.init_from=WORKDIR."
  )


class _MemoryReader:
  """Examples held in memory: `arrays[key][indices]` (indices into the shard)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)

  def __call__(self, indices: np.ndarray) -> dict[str, Any]:
    return {k: v[indices] for k, v in self.arrays.items()}


class _TfdsReader:
  """Examples read one by one from a TFDS data source (record keys), images still
  encoded (`SkipDecoding`): the transform decodes them at the size it needs. `name`
  ("cifar10 train") names a record that fails to decode."""

  unreadable_fix = "the prepared dataset is damaged. Prepare it again"

  def __init__(self, source, image_key: str, label_key: str, name: str = "the TFDS dataset"):
    self.source, self.image_key, self.label_key = source, image_key, label_key
    self.name = name

  def __call__(self, keys: np.ndarray) -> dict[str, Any]:
    images, labels = [], []
    for key in keys:
      example = self.source[int(key)]
      image = example[self.image_key]
      if isinstance(image, bytes):
        image = decode.Encoded(image, f"record {int(key)} of {self.name}")
      else:  # A decoded array (e.g. under tfds.testing.mock_data).
        image = np.asarray(image)
        image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
      images.append(image)
      labels.append(example[self.label_key])
    return {"image": images, "label": np.asarray(labels, np.int32)}


@dataclasses.dataclass(frozen=True)
class _BatchFn:
  """Turns a batch of example indices (within the shard) into a batch of fixed-size
  images, `(batch_index, indices) -> {"image", "label", ..., "unreadable"}`. Picklable,
  for grain's worker processes.

  With a `seed`, the train transform of example `i` at position `p` of the endless
  training order draws from `(seed, epoch = p // num_examples, start + i)`.

  An example that fails to decode raises `UnreadableExampleError` (the reader's
  `unreadable_fix` says what to do), or with `skip_unreadable` the next example of the
  shard that decodes (wrapping; its own draw) takes its place, flagged 1 in the int32
  `"unreadable"` that every batch has.
  """

  read: Callable[[np.ndarray], dict[str, Any]]
  transform: augment_lib.Transform
  offset: int  # Reader key of the shard's first example.
  start: int  # Index of the shard's first example in the whole split.
  num_examples: int
  batch_size: int
  seed: int | None = None  # None: the eval transform.
  keys: tuple[str, ...] | None = None  # Keys kept besides "image" and "unreadable" (None: all).
  skip_unreadable: bool = False

  def _image(self, image, i: int, position: int) -> np.ndarray:
    """Example `i`'s image (encoded or decoded) through the transform."""
    if self.seed is not None and self.transform.augment != "none":
      epoch = int(position) // self.num_examples
      return self.transform.train(image, np.random.default_rng([self.seed, epoch, self.start + int(i)]))
    return self.transform.eval(image)

  def _neighbour(self, i: int, position: int, error: decode.UnreadableImageError):
    """The image and other features of the first example after `i` that decodes."""
    for step in range(1, self.num_examples):
      k = (int(i) + step) % self.num_examples
      arrays = self.read(np.asarray([k + self.offset]))
      try:
        image = self._image(arrays.pop("image")[0], k, position)
      except decode.UnreadableImageError as e:
        _report_replaced(e)
        continue
      return image, {key: np.asarray(value)[0] for key, value in arrays.items()}
    raise UnreadableExampleError(
        f"None of the {self.num_examples} examples of this shard can be decoded (the "
        f"first: {error.name or 'an encoded image'}, {error.cause}).", path=error.name)

  def __call__(self, batch_index: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    arrays = self.read(indices + self.offset)
    images = arrays.pop("image")
    arrays = {key: np.array(value) for key, value in arrays.items()}
    unreadable = np.zeros(len(indices), np.int32)
    size = self.transform.size
    augmented = self.seed is not None and self.transform.augment != "none"
    if augmented or not (isinstance(images, np.ndarray) and images.shape[1:3] == (size, size)
                         and self.transform.eval_crop == 1.0):  # Else already the eval output.
      positions = batch_index * self.batch_size + np.arange(len(indices))
      out = []
      for j, (image, i, position) in enumerate(zip(images, indices, positions)):
        try:
          out.append(self._image(image, i, position))
        except decode.UnreadableImageError as e:
          if not self.skip_unreadable:
            raise _unreadable_example(e, getattr(self.read, "unreadable_fix", "")) from None
          _report_replaced(e)
          image, features = self._neighbour(i, position, e)
          out.append(image)
          for key, value in features.items():
            arrays[key][j] = value
          unreadable[j] = 1
      images = out
    batch = {"image": np.stack(images).astype(np.uint8)}
    for key, value in arrays.items():
      if self.keys is None or key in self.keys:
        batch[key] = np.asarray(value, np.int32)
    batch["unreadable"] = unreadable
    return batch


class Split:
  """One process's shard of a dataset split, as fixed-size uint8 batches.

  `num_examples` is the shard's length. Images are `[S, S, 3]` with `S` the config's
  image size; labels (and `scale_shapes`' `family`) are int32, and so is `unreadable`
  (1 where a readable neighbour stood in for an example, `skip_unreadable`; else an
  example that cannot be decoded raises `UnreadableExampleError`).
  """

  def __init__(self, read, *, num_examples: int, offset: int, start: int,
               transform: augment_lib.Transform, train: bool, num_workers: int,
               extra_keys: tuple[str, ...] = (), stage_sized: bool = False,
               skip_unreadable: bool = False):
    self.num_examples = num_examples
    self._stage_sized = stage_sized
    self._read = read
    self._offset, self._start = offset, start
    self._transform = transform
    self._train = train
    self._num_workers = num_workers
    self._extra_keys = extra_keys
    self._skip_unreadable = skip_unreadable

  def _batch_fn(self, batch_size: int, seed: int | None, keys, size: int | None = None) -> _BatchFn:
    transform = self._transform
    if size is not None and self._stage_sized:
      transform = dataclasses.replace(transform, size=size)
    return _BatchFn(self._read, transform, self._offset, self._start,
                    self.num_examples, batch_size, seed, keys, self._skip_unreadable)

  def train_dataset(self, batch_size: int, seed: int, size: int | None = None) -> grain.MapDataset:
    """An endless sequence of `{"image", "label", "unreadable"}` batches, reshuffled
    every epoch.

    Batches may span an epoch boundary; none is ever short. The examples of a split
    opened with `train=True` are augmented (config.augment); otherwise they get the
    eval transform. `size` is the stage's: a split of encoded images decodes its
    batches at that size (`DatasetInfo.train_image_size`); one held in memory ignores it.
    """
    return (
        grain.MapDataset.range(self.num_examples)
        .shuffle(seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map_with_index(self._batch_fn(batch_size, seed if self._train else None, ("label",), size))
    )

  def train_iterator(self, batch_size: int, seed: int, size: int | None = None) -> grain.DatasetIterator:
    """An iterator over `train_dataset` (`get_state` / `set_state` for checkpoints),
    prepared in `config.num_workers` processes when that is above 0 (one thread each, so
    that N workers use N cores). `UnreadableExampleError` comes out of `next` as itself
    from a worker process too: grain pickles it there and raises it again here."""
    options = _READ_OPTIONS if not self._num_workers else _WORKER_READ_OPTIONS
    dataset = self.train_dataset(batch_size, seed, size).to_iter_dataset(options)
    if self._num_workers:
      if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags (notebooks, tests).
        flags.FLAGS.mark_as_parsed()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers))
    return iter(dataset)

  def eval_batches(
      self, batch_size: int, num_batches: int | None = None
  ) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches covering the shard once, eval transform; `mask` marks padding.

    `num_batches` pads with empty batches up to that count, so that processes holding
    shards of different lengths run the same number of (collective) eval steps.
    """
    n = self.num_examples
    num_batches = -(-n // batch_size) if num_batches is None else num_batches
    dataset = (
        grain.MapDataset.range(n)
        .batch(batch_size)
        .map_with_index(self._batch_fn(batch_size, None, None))
    )
    empty = {
        "image": np.zeros((batch_size, self._transform.size, self._transform.size, 3), np.uint8),
        **{k: np.zeros(batch_size, np.int32) for k in ("label", *self._extra_keys, "unreadable")},
    }
    # Decoding and resizing release the GIL: threads stand in for worker processes here.
    threads = max(_READ_OPTIONS.num_threads, self._num_workers)
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    batches = iter(dataset.to_iter_dataset(options))
    for _ in range(num_batches):
      batch = next(batches, None)
      count = 0 if batch is None else len(batch["label"])
      if count < batch_size:
        batch = {
            k: v if batch is None else np.concatenate([batch[k], v[count:]])
            for k, v in empty.items()
        }
      batch["mask"] = np.arange(batch_size) < count
      yield batch


def _encoded_source(builder, split: str):
  """The data source of `split` with its images left encoded (TFDS's `SkipDecoding`), so
  that each transform decodes at the size it needs; decoded where that is not possible
  without TensorFlow (`tfds.testing.mock_data` encodes its random examples with it)."""
  image_key, _ = _keys(builder.info)
  source = builder.as_data_source(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
  try:
    if len(source):
      source[0]  # pylint: disable=pointless-statement
  except ImportError:
    return builder.as_data_source(split=split)
  return source


def _transform(config: Mapping[str, Any], image_size: int) -> augment_lib.Transform:
  return augment_lib.Transform(
      size=image_size,
      augment=config["augment"],
      min_scale=config["rrc_min_scale"],
      eval_crop=config["eval_crop"],
      max_shift=config["max_shift"] or 0,
  )


def prepare_builtin(config: Mapping[str, Any]):
  """The TFDS builder of a built-in dataset (`scale_shapes` or `photos`), prepared in
  `config.data_dir` first if it is not there yet."""
  module = {BUILTIN: scale_shapes, PHOTOS: photos}[config["name"]]
  return module.prepare(config["builder_config"], config["data_dir"])


def prepare_builtins(configs) -> list[Mapping[str, Any]]:
  """Prepares each distinct built-in dataset among the `config.data`s `configs` once, one
  after another (two processes preparing one dataset would collide); returns those
  prepared, in order. Others (TFDS, folders) are left alone."""
  prepared = {}
  for config in configs:
    key = (config["name"], config["builder_config"], config["data_dir"])
    if config["name"] in BUILTINS and key not in prepared:
      prepare_builtin(config)
      prepared[key] = config
  return list(prepared.values())


# Decoded splits of the built-in datasets, kept for the next run in this process (a
# sweep's points, a notebook's analyses, the tests' runs): decoding is most of what
# opening one costs (`_EXAMPLES_CACHE_BYTES` bounds what is kept, the most recent first).
_EXAMPLES_CACHE: dict[tuple, tuple[dict[str, np.ndarray], int]] = {}
_EXAMPLES_CACHE_BYTES = 1 << 30


def _split_files_stamp(builder) -> tuple | None:
  """The prepared dataset's files (name, size, modification time): a dataset prepared
  again, or a file changed, is read again. None where they cannot be listed on this
  host's file system (a bucket): then nothing is kept."""
  path = os.fspath(builder.data_dir)
  try:
    with os.scandir(path) as entries:
      stats = [(e.name, e.stat()) for e in entries]
    return (path, *sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
  except OSError:
    return None


def builtin_examples(
    config: Mapping[str, Any], split: str, *, shard: int = 0, num_shards: int = 1,
    num: int | None = None,
) -> tuple[dict[str, np.ndarray], int]:
  """One shard of a built-in dataset's split (`scale_shapes` or `photos`; at most its
  first `num` examples) in memory, prepared on first use, and the index of its first
  example in the split.

  Every feature is stacked: `image` uint8 `[N, S, S, 3]`, `label` and `family` int32
  `[N]`, and the metadata that redraws the example: `object_scale`, `center`, `seed` for
  `scale_shapes.render`; `zoom` (float32) and `center` for `photos.cut`. The arrays are
  read-only: later calls in this process share them (copy one to change it).
  """
  builder = prepare_builtin(config)
  stamp = _split_files_stamp(builder)
  key = (split, shard, num_shards, num, stamp)
  if key in _EXAMPLES_CACHE:
    arrays, start = _EXAMPLES_CACHE.pop(key)
    _EXAMPLES_CACHE[key] = arrays, start  # The most recent last.
    return dict(arrays), start
  source = builder.as_data_source(split=split)
  start, stop = splits.shard_bounds(len(source), shard, num_shards)
  if num is not None:
    stop = min(stop, start + num)
  examples = source.__getitems__(list(range(start, stop)))
  arrays = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}
  arrays["image"] = arrays["image"].astype(np.uint8)
  for name in ("label", "family"):
    arrays[name] = arrays[name].astype(np.int32)
  if "zoom" in arrays:  # Stored as float32, read back as float64.
    arrays["zoom"] = arrays["zoom"].astype(np.float32)
  for array in arrays.values():
    array.flags.writeable = False
  if stamp is None:
    return arrays, start
  _EXAMPLES_CACHE[key] = arrays, start
  kept = 0
  for old in reversed(list(_EXAMPLES_CACHE)):  # The oldest go first past the bound.
    kept += sum(a.nbytes for a in _EXAMPLES_CACHE[old][0].values())
    if kept > _EXAMPLES_CACHE_BYTES and old != key:
      del _EXAMPLES_CACHE[old]
  return dict(arrays), start


scale_shapes_examples = builtin_examples  # Its name from before `photos`; callers use both.


def _open_builtin(config: Mapping[str, Any], split: str, *, shard: int, num_shards: int,
                  train: bool) -> Split:
  """`scale_shapes` or `photos`: prepared on first use, the shard read into memory."""
  transform = _transform(config, dataset_info(config).image_size)
  examples, start = builtin_examples(config, split, shard=shard, num_shards=num_shards)
  arrays = {key: examples[key] for key in ("image", "label", "family")}
  return Split(
      _MemoryReader(arrays), num_examples=len(arrays["label"]), offset=0, start=start,
      transform=transform, train=train, num_workers=config["num_workers"], extra_keys=("family",),
      skip_unreadable=bool(config["skip_unreadable"]),
  )


def _open_folder(config: Mapping[str, Any], split: str, *, shard: int, num_shards: int,
                 train: bool) -> Split:
  """An image folder: files read and decoded one example at a time."""
  info, indexes = _folder_info(config)
  specs = (config["train_split"], config["eval_split"])
  index = indexes[specs.index(split)] if split in specs else folder.split_index(config, split)
  start, stop = splits.shard_bounds(len(index.paths), shard, num_shards)
  return Split(
      folder.FileReader(folder.split_dir(config, split), index),
      num_examples=stop - start, offset=start, start=start,
      transform=_transform(config, info.image_size), train=train,
      num_workers=config["num_workers"], stage_sized=True,
      skip_unreadable=bool(config["skip_unreadable"]),
  )


def _open_tfds(config: Mapping[str, Any], split: str, *, shard: int, num_shards: int,
               train: bool) -> Split:
  """A prepared TFDS dataset: read lazily, images decoded one example at a time."""
  info, builder = _tfds_info(config)
  transform = _transform(config, info.image_size)
  source = _encoded_source(builder, split)
  start, stop = splits.shard_bounds(len(source), shard, num_shards)
  return Split(
      _TfdsReader(source, *_keys(builder.info), f"{info.name} {split}"), num_examples=stop - start,
      offset=start, start=start, transform=transform, train=train,
      num_workers=config["num_workers"], stage_sized=info.stage_sized,
      skip_unreadable=bool(config["skip_unreadable"]),
  )


@dataclasses.dataclass(frozen=True)
class Source:
  """One kind of dataset: `info(config.data)` describes it, `open(config.data, split, *,
  shard, num_shards, train)` opens one shard of a split."""

  info: Callable[[Mapping[str, Any]], DatasetInfo]
  open: Callable[..., Split]


SOURCES = {
    BUILTIN: Source(_scale_shapes_info, _open_builtin),
    PHOTOS: Source(_photos_info, _open_builtin),
    FOLDER: Source(lambda config: _folder_info(config)[0], _open_folder),
    NONE: Source(_none_info, _open_none),
}
TFDS = Source(lambda config: _tfds_info(config)[0], _open_tfds)  # Every other name.


def source_for(name: str) -> Source:
  """The kind of dataset `config.data.name` names: built in, a folder, else TFDS."""
  return SOURCES.get(name, TFDS)


def dataset_info(config: Mapping[str, Any]) -> DatasetInfo:
  """Describes `config.data` without preparing or reading any examples.

  Raises `ValueError` naming the field for an unknown dataset, config or split, and
  for a TFDS dataset not prepared in `data_dir`, with the command that prepares it.
  """
  return source_for(config["name"]).info(config)


def open_split(
    config: Mapping[str, Any], split: str, *, shard: int = 0, num_shards: int = 1,
    train: bool = False,
) -> Split:
  """Opens one shard of `split` (by default all of it); `train` turns on augmentation.

  In a multi-process run each process passes its `jax.process_index()` and
  `jax.process_count()`, and reads only its own contiguous range of examples.
  `scale_shapes` and `photos` are prepared on first use and their shard read into
  memory; a TFDS dataset must already be prepared (`dataset_info` says how) and is read
  lazily.
  """
  return source_for(config["name"]).open(config, split, shard=shard, num_shards=num_shards,
                                         train=train)
