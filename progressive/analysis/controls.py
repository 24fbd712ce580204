"""Controls for the scale measurements: what else changes when the test size does.

Zooming the test images to another size changes the objects' pixel size and texture
periods (what the research asks about), but also every feature map's size, its share
of zero-padded border, and so the activation statistics batch norm stored at the
training size. Three controls separate them (docs/ANALYSIS.md):

- `bn_size_matrix`: the size matrix again with batch-norm statistics recomputed at each
  test size (`progressive.training.recalibrate`);
- `canvas_matrix`: the test images cropped or padded to another canvas without any
  resampling (object pixels fixed, the feature-map grid changed), with stored and
  recalibrated statistics;
- `grid`: the model's total subsampling factor (traced by `progressive.models.geometry`) and which
  test sizes are not multiples of it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from progressive.analysis.scale import size_matrix_from_logits
from progressive.models import geometry

CANVAS_MODES = ("edge", "reflect", "constant")  # np.pad modes for a larger canvas.


def canvas(images: np.ndarray, size: int, mode: str = "edge") -> np.ndarray:
  """Images `[N, S, S, C]` on a `size` x `size` canvas without resampling: the centred
  `size` square when `size < S`, else the image centred in a border made by `np.pad`
  with `mode` ("edge", "reflect" or "constant": zeros). Every pixel of the image that
  stays on the canvas is the stored one; the image starts at offset `(size - S) // 2`
  (negative: cropped)."""
  if mode not in CANVAS_MODES:
    raise ValueError(f"canvas mode must be one of {CANVAS_MODES}, got {mode!r}.")
  images = np.asarray(images)
  s = images.shape[1]
  if size <= s:
    start = (s - size) // 2
    return images[:, start:start + size, start:start + size]
  before = (size - s) // 2
  pad = ((0, 0), (before, size - s - before), (before, size - s - before), (0, 0))
  return np.pad(images, pad, mode=mode)


def grid(model_config: Mapping[str, Any], sizes: Sequence[int], num_classes: int) -> dict:
  """`total_stride` of the model and the test `sizes` that are not multiples of it
  (`misaligned`: their last feature map does not tile the image evenly)."""
  stride = int(geometry.totals(geometry.layer_table(model_config, max(sizes), num_classes))["total_stride"])
  return {"total_stride": stride, "misaligned": [int(s) for s in sizes if s % stride]}


def recalibrated_logits(run, images: np.ndarray, sizes: Sequence[int],
                        calibration: np.ndarray) -> dict[int, np.ndarray]:
  """`run`'s logits on `images` at each of `sizes`, with batch-norm statistics recomputed
  at that size from the `calibration` images (`progressive.training.recalibrate`)."""
  return {int(s): run.recalibrated(int(s), calibration).predict(images, int(s)) for s in sizes}


def bn_size_matrix(
    runs: Mapping[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[int],
    calibration: np.ndarray,
) -> dict[str, Any]:
  """`size_matrix` with every run's batch-norm statistics recomputed at each test size
  from the `calibration` images (uint8 training images, zoomed like the test images).
  Runs without batch norm keep their (absent) statistics."""
  info = next(iter(runs.values())).info
  logits = {name: recalibrated_logits(run, images, sizes, calibration) for name, run in runs.items()}
  result = size_matrix_from_logits(logits, labels, info)
  result["train_sizes"] = [int(r.train_size) for r in runs.values()]
  result["steps"] = [int(r.step) for r in runs.values()]
  result["calibration_images"] = len(calibration)
  return result


def canvas_matrix(
    run,
    images: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[int],
    calibration: np.ndarray | None,
    *,
    mode: str = "edge",
) -> dict[str, Any]:
  """Accuracy of `run` on `images` put on each canvas size of `sizes` by `canvas` (no
  resampling), with stored batch-norm statistics and, given `calibration` images and
  batch norm, with statistics recomputed on those images on the same canvas.

  Rows are "stored" (and "recalibrated"); see `size_matrix_from_logits`.
  """
  logits = {"stored": {int(s): run.predict(canvas(images, int(s), mode), int(s)) for s in sizes}}
  if calibration is not None and run.has_batch_norm:
    logits["recalibrated"] = {
        int(s): run.recalibrated(int(s), canvas(calibration, int(s), mode)).predict(
            canvas(images, int(s), mode), int(s))
        for s in sizes
    }
  result = size_matrix_from_logits(logits, labels, run.info)
  result.update(mode=mode, image_size=int(np.asarray(images).shape[1]), train_size=int(run.train_size))
  return result
