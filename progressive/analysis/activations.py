"""Activation statistics after the fact: the rows training wrote, one layer's series over
training, and the statistics of restored checkpoints (`progressive.training.activations`
defines them, as fastai's `ActivationStats`).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from progressive.training.activations import (
  HIST_BINS,
  STATS_FILE,
  activation_stats,
  layer_names,
  stats_rows,
)
from progressive.training.metrics import read_rows


def read_stats(path) -> list[dict[str, Any]]:
  """The rows of an `activation_stats.jsonl` file (a workdir or the file; [] if absent)."""
  path = epath.Path(path)
  return read_rows(path / STATS_FILE if path.is_dir() else path)


def layers_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """Layer names in the order they first appear in `rows`."""
  return list(dict.fromkeys(r["layer"] for r in rows))


def over_training(rows: Sequence[Mapping[str, Any]], layer: str) -> dict[str, np.ndarray]:
  """One layer's series over recorded steps: `step`, `mean`, `std`, `near_zero` `[T]`,
  `hist` `[T, 40]`, sorted by step (the last row wins where a step repeats)."""
  by_step = {r["step"]: r for r in rows if r["layer"] == layer}
  steps = sorted(by_step)
  series = {"step": np.asarray(steps, np.int64)}
  for key in ("mean", "std", "near_zero"):
    series[key] = np.asarray([by_step[s][key] for s in steps], np.float64)
  series["hist"] = np.asarray([by_step[s]["hist"] for s in steps], np.float64).reshape(
      len(steps), HIST_BINS
  )
  return series


def checkpoint_stats(
    runs: Sequence[Any], images: np.ndarray, *, size: int | None = None, train: bool = False
) -> list[dict[str, Any]]:
  """`stats_rows` of each restored checkpoint (`analysis.Run`s of one model) on one batch.

  `images` uint8 `[B, S, S, 3]` are resized to `size` (default: each checkpoint's stage
  size) and normalised as in training. Rows come in the model's call order, each ReLU's
  output (`<module>/relu`, the dead-unit measure) after its module's layers, as training
  records them.
  """
  if not runs:
    return []
  first = runs[0]
  fn = jax.jit(lambda v, x: activation_stats(first.apply_fn, v, x, train=train, relu=True))
  order = layer_names(first.apply_fn, first.variables, first.inputs(images[:1], size))
  rows = []
  for run in runs:
    stats = jax.device_get(fn(run.variables, run.inputs(images, size)))
    rows += stats_rows(
        stats, step=run.step, stage=run.stage, size=size or run.train_size, order=order)
  return rows

