"""The input pipeline: a TFDS `array_record` split held in memory, batched by grain.

Images stay uint8 at their stored resolution until the device: resizing to the stage
size and normalising happen inside the compiled step (`progressive.data.resize`).
The training order is a grain `MapDataset` (shuffled afresh every epoch, batched), whose
iterator state is a small dict that goes into every checkpoint, so a resumed run sees
exactly the batches it would have seen.
"""

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np

DATASETS = ("scale_shapes",)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the rest of the code needs to know about a dataset before loading it."""

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_size: int  # Side of the stored (square) images.
  num_train: int
  num_test: int
  mean: tuple[float, float, float]  # Per-channel, in [0, 1] units.
  std: tuple[float, float, float]
  family_names: tuple[str, ...] | None = None  # Class families, where the dataset has them.
  class_family: tuple[int, ...] | None = None


def dataset_info(config: Mapping[str, Any]) -> DatasetInfo:
  """Describes `config.data` without preparing or reading anything."""
  if config["name"] != "scale_shapes":
    raise ValueError(f"config.data.name must be one of {DATASETS}, got {config['name']!r}.")
  from progressive.data import scale_shapes  # pylint: disable=import-outside-toplevel

  builder_configs = scale_shapes.ScaleShapes.builder_configs
  if config["builder_config"] not in builder_configs:
    raise ValueError(
        f"config.data.builder_config must be one of {sorted(builder_configs)} for "
        f"scale_shapes, got {config['builder_config']!r}."
    )
  bc = builder_configs[config["builder_config"]]
  # Measured on the default train split (colours are uniform with a luma-contrast rule).
  return DatasetInfo(
      name="scale_shapes",
      num_classes=len(scale_shapes.CLASS_NAMES),
      class_names=tuple(scale_shapes.CLASS_NAMES),
      image_size=bc.storage_size,
      num_train=bc.num_train,
      num_test=bc.num_test,
      mean=(0.50, 0.50, 0.50),
      std=(0.31, 0.34, 0.29),
      family_names=tuple(scale_shapes.FAMILY_NAMES),
      class_family=tuple(scale_shapes.CLASS_FAMILY),
  )


def shard_bounds(num_examples: int, shard: int, num_shards: int) -> tuple[int, int]:
  """The contiguous range `[start, stop)` of examples that shard `shard` of `num_shards` reads."""
  return num_examples * shard // num_shards, num_examples * (shard + 1) // num_shards


def load_split(
    config: Mapping[str, Any], split: str, *, shard: int = 0, num_shards: int = 1
) -> dict[str, np.ndarray]:
  """Reads one shard of a split (by default all of it) into memory.

  The dataset is prepared on first use. In a multi-process run each process passes its
  `jax.process_index()` and `jax.process_count()`, and reads only its own examples.
  Returns `image` uint8 `[N, S, S, 3]`, `label` int32 `[N]` and, for datasets with class
  families, `family` int32 `[N]`.
  """
  from progressive.data import scale_shapes  # pylint: disable=import-outside-toplevel

  builder = scale_shapes.prepare(config["builder_config"], config["data_dir"])
  source = builder.as_data_source(split=split)
  start, stop = shard_bounds(len(source), shard, num_shards)
  examples = source.__getitems__(list(range(start, stop)))
  arrays = {
      "image": np.stack([e["image"] for e in examples]).astype(np.uint8),
      "label": np.asarray([e["label"] for e in examples], np.int32),
      "family": np.asarray([e["family"] for e in examples], np.int32),
  }
  return arrays


def train_dataset(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int
) -> grain.MapDataset:
  """An endless sequence of `{"image", "label"}` batches, reshuffled every epoch.

  Batches may span an epoch boundary; none is ever short.
  """
  images, labels = arrays["image"], arrays["label"]

  def gather(indices):
    return {"image": images[indices], "label": labels[indices]}

  return (
      grain.MapDataset.range(len(labels))
      .shuffle(seed=seed)
      .repeat()
      .batch(batch_size, drop_remainder=True)
      .map(gather)
  )


def eval_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, num_batches: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches covering a split once; `mask` marks padding rows.

  `num_batches` pads with empty batches up to that count, so that processes holding
  shards of different lengths run the same number of (collective) eval steps.
  """
  n = len(arrays["label"])
  num_batches = -(-n // batch_size) if num_batches is None else num_batches
  for start in range(0, num_batches * batch_size, batch_size):
    stop = min(start + batch_size, n)
    count = max(0, stop - start)
    batch = {}
    for key, values in arrays.items():
      chunk = values[start:start + count]
      pad = [(0, batch_size - count)] + [(0, 0)] * (chunk.ndim - 1)
      batch[key] = np.pad(chunk, pad)
    batch["mask"] = np.arange(batch_size) < count
    yield batch
