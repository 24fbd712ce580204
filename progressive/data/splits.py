"""Split specs ("train", "train[:90%]", "test[:500]") and process shards, by TFDS's rules,
for every kind of dataset: the built-in ones, image folders and TFDS datasets."""

from collections.abc import Mapping

import tensorflow_datasets as tfds

# TFDS imports some of its modules lazily, and a few of those open etils'
# `epy.lazy_imports()` when first imported, which swaps `builtins.__import__` for every
# thread. Left to the first builder (as the data opens, while a stage compiles in the
# background), that window once turned an import JAX made in the compile thread into a
# lazy module of a class, and the compile failed. Imported here, before any thread starts.
from tensorflow_datasets.core import dataset_metadata  # noqa: F401  pylint: disable=unused-import


def folder_and_slice(spec: str) -> tuple[str, str | None]:
  """`("train", "[:90%]")` from "train[:90%]"; `(spec, None)` without a slice."""
  if spec.endswith("]") and "[" in spec:
    name, _, rest = spec.partition("[")
    return name, "[" + rest
  return spec, None


def split_count(spec: str, counts: Mapping[str, int], field: str) -> int:
  """Examples in the split `spec` ("train", or a TFDS slice such as "train[:90%]",
  "train[90%:]", "test[:500]") of a dataset whose splits have `counts` examples;
  `ValueError` naming `field` if it is neither."""
  total = sum(stop - start for start, stop in _slices(spec, counts, field))
  if not total:
    raise ValueError(f"{field}={spec!r} selects no example.")
  return total


def _slices(spec: str, counts: Mapping[str, int], field: str) -> list[tuple[int, int]]:
  """`[start, stop)` of each part of the split `spec`, by TFDS's rules."""
  error = ValueError(
      f"{field} must be one of {sorted(counts)} or a slice of one such as 'train[:90%]' "
      f"(a validation slice: 'train[90%:]'), got {spec!r}."
  )
  try:
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
         for name, n in counts.items()})
  except (AssertionError, KeyError, ValueError, TypeError):
    raise error from None
  bounds = []
  for part in instructions:
    start = part.from_ or 0
    stop = counts[part.splitname] if part.to is None else part.to
    bounds.append((start, max(stop, start)))
  return bounds


def slice_bounds(spec: str, counts: Mapping[str, int], field: str) -> tuple[int, int]:
  """`[start, stop)` of a one-part split `spec` such as "train[90%:]"; `ValueError`
  naming `field` for anything else or an empty slice."""
  bounds = _slices(spec, counts, field)
  if len(bounds) != 1:
    raise ValueError(f"{field}={spec!r}: give one split or one slice of it, e.g. 'train[90%:]'.")
  if bounds[0][0] == bounds[0][1]:
    raise ValueError(f"{field}={spec!r} selects no example.")
  return bounds[0]


def shard_bounds(num_examples: int, shard: int, num_shards: int) -> tuple[int, int]:
  """The contiguous range `[start, stop)` of examples that shard `shard` of `num_shards` reads."""
  return num_examples * shard // num_shards, num_examples * (shard + 1) // num_shards
