"""Accuracy against scale: whole-image test sizes, object scale, and the receptive field.

Two questions, each broken down by class family (shape vs texture) and by class:

- `size_matrix`: accuracy on test images zoomed to each size in a list, for one or more
  checkpoints (rows) - for runs trained at different sizes, the train-size by
  test-size matrix.
- `object_scale_accuracy`: accuracy over bins of object scale at one canvas size, on
  scenes redrawn with `scale_shapes.render`; for `photos`, over bins of zoom, on patches
  cut afresh from the photographs' test regions (`photos.zoom_bin_cuts`).

`receptive_field` reads the model's final receptive field from `progressive.models.geometry`, so
both can mark where it stops covering the object.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from progressive.data import photos, pipeline, scale_shapes
from progressive.data.families import breakdown
from progressive.data.families import mean_or_none as _mean
from progressive.models import geometry

# Object-scale bins (diameter, fraction of the canvas); the dataset draws 0.3 to 0.9.
SCALE_BINS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

def groups(info: pipeline.DatasetInfo) -> list[str]:
  """`"all"` then the family names: the keys of every per-family table."""
  return ["all", *(info.family_names or ())]


def _pick(result: Mapping[str, Any], group: str):
  return result["all"] if group == "all" else result["family"][group]


def predict_sizes(
    predict: Callable[[np.ndarray, int], np.ndarray], images: np.ndarray, sizes: Sequence[int]
) -> dict[int, np.ndarray]:
  """`{size: logits [N, classes]}` from `predict(images, size)` for every size."""
  return {int(s): np.asarray(predict(images, int(s))) for s in sizes}


def size_matrix_from_logits(
    logits: Mapping[str, Mapping[int, np.ndarray]],
    labels: np.ndarray,
    info: pipeline.DatasetInfo,
) -> dict[str, Any]:
  """The accuracy matrix from `{row label: {test size: logits [N, classes]}}`.

  Returns `rows`, `sizes`, `accuracy` `{group: [rows][sizes]}` (groups: "all" and the
  families) and `class_accuracy` `{class: [rows][sizes]}`.
  """
  rows = list(logits)
  sizes = sorted({s for per_size in logits.values() for s in per_size})
  table = {row: {s: breakdown(np.argmax(l, -1) == labels, labels, info)
                 for s, l in logits[row].items()} for row in rows}
  cell = lambda row, s, get: get(table[row][s]) if s in table[row] else None
  return {
      "rows": rows,
      "sizes": sizes,
      "num_images": len(labels),
      "accuracy": {
          g: [[cell(r, s, lambda b, g=g: _pick(b, g)) for s in sizes] for r in rows]
          for g in groups(info)
      },
      "class_accuracy": {
          c: [[cell(r, s, lambda b, c=c: b["class"][c]) for s in sizes] for r in rows]
          for c in info.class_names
      },
  }


def size_matrix(
    runs: Mapping[str, Any], images: np.ndarray, labels: np.ndarray, sizes: Sequence[int]
) -> dict[str, Any]:
  """Accuracy of each run (`{row label: Run}`) on `images` zoomed to each of `sizes`.

  `images` uint8 `[N, S, S, 3]`, `labels` `[N]`. Rows are the runs (or checkpoints of
  one run, e.g. `stage_end_runs(run)`), columns the test sizes; see
  `size_matrix_from_logits` for the result.
  """
  info = next(iter(runs.values())).info
  logits = {label: predict_sizes(r.predict, images, sizes) for label, r in runs.items()}
  result = size_matrix_from_logits(logits, labels, info)
  result["train_sizes"] = [int(r.train_size) for r in runs.values()]
  result["steps"] = [int(r.step) for r in runs.values()]
  return result


def receptive_field(model_config: Mapping[str, Any], size: int, num_classes: int) -> int:
  """Input pixels seen by one position of the map the head pools (`features_rf`).

  A global pool sees everything, so this is the last receptive field that can fail to
  cover an object: where `object_px > features_rf` no single feature sees it whole.
  """
  return int(geometry.totals(geometry.layer_table(model_config, size, num_classes))["features_rf"])


def rf_coverage(features_rf: int, object_scales: np.ndarray, sizes: Sequence[int]) -> dict:
  """Where the receptive field stops covering objects as the test size grows.

  An object of scale `o` (diameter, fraction of the canvas) spans `o * size` pixels.
  Returns `features_rf`, `covered_fraction` per size (objects with `o * size <= rf`),
  `median_object_scale` and `uncovered_from_size = rf / median scale`: the test size
  above which the median object is wider than the receptive field.
  """
  scales = np.asarray(object_scales, np.float64)
  median = float(np.median(scales)) if len(scales) else None
  return {
      "features_rf": int(features_rf),
      "sizes": [int(s) for s in sizes],
      "covered_fraction": [_mean(scales * s <= features_rf) for s in sizes],
      "median_object_scale": median,
      "uncovered_from_size": features_rf / median if median else None,
  }


def render_scale_bins(
    bin_edges: Sequence[float],
    per_bin: int,
    canvas_size: int,
    *,
    render_options,
    num_classes: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Scenes drawn with `scale_shapes.render`, `per_bin` in each object-scale bin.

  Labels cycle through the classes within each bin; the scale is uniform in the bin;
  the centre keeps the object inside the canvas; nuisances come from fresh seeds;
  `render_options` (`DatasetInfo.render_options`) draws them as the dataset's builder
  config does (its storage size, texture periods and period mode).
  Returns `image` uint8 `[B * per_bin, canvas, canvas, 3]`, `label`, `object_scale`, `bin`.
  """
  rng = np.random.default_rng(seed)
  images, labels, scales, bins = [], [], [], []
  for b, (lo, hi) in enumerate(zip(bin_edges[:-1], bin_edges[1:])):
    for i in range(per_bin):
      label = i % num_classes
      scale = float(rng.uniform(lo, hi))
      r = scale / 2
      center = tuple(float(c) for c in rng.uniform(r, 1 - r, size=2))
      images.append(scale_shapes.render(
          label, scale, center, canvas_size, seed=int(rng.integers(2**62)),
          **render_options._asdict()))
      labels.append(label)
      scales.append(scale)
      bins.append(b)
  return {
      "image": np.stack(images),
      "label": np.asarray(labels, np.int32),
      "object_scale": np.asarray(scales),
      "bin": np.asarray(bins, np.int32),
  }


def object_scale_accuracy(
    predict: Callable[[np.ndarray], np.ndarray],
    info: pipeline.DatasetInfo,
    *,
    canvas_size: int,
    bin_edges: Sequence[float] | None = None,
    per_bin: int = 24,
    seed: int = 0,
    features_rf: int | None = None,
) -> dict[str, Any]:
  """Accuracy over bins of object scale, on scenes rendered at `canvas_size` pixels.

  `predict(images [N, canvas, canvas, 3]) -> logits`, e.g. `run.predictor(canvas_size)`.
  Scenes are drawn as the dataset's builder config draws them (`info.render_options`):
  canvas-anchored texture periods stay in pixels of its storage size, so a canvas other
  than the stored size shows the scene zoomed, as resizing would; object-anchored
  periods follow the object's scale. Returns `bin_edges`,
  `bin_centers`, `object_px` (centre scale times canvas), `count`, `accuracy`
  `{group: [bins]}`, `class_accuracy` `{class: [bins]}` and, given `features_rf`, the
  object scale `rf_scale` above which the receptive field no longer covers the object.
  `bin_edges` default: SCALE_BINS.

  For `photos` the bins are of zoom (stored px per source px, default
  `photos.ZOOM_BINS`; `quantity` says which), `bin_centers` are their geometric means,
  `source_px` the source pixels the canvas spans at each centre, `train_range` the
  zooms the stored examples were drawn from, and there is no object
  for a receptive field to cover (`rf_scale` None).
  """
  zoom = info.name == pipeline.PHOTOS
  if zoom:
    edges = np.asarray(photos.ZOOM_BINS if bin_edges is None else bin_edges, np.float64)
    data = photos.zoom_bin_cuts(edges, per_bin, canvas_size, seed=seed,
                                **info.render_options._asdict())
  else:
    edges = np.asarray(SCALE_BINS if bin_edges is None else bin_edges, np.float64)
    data = render_scale_bins(
        edges, per_bin, canvas_size, render_options=info.render_options,
        num_classes=info.num_classes, seed=seed,
    )
  correct = np.argmax(np.asarray(predict(data["image"])), -1) == data["label"]
  per_bin_results = [
      breakdown(correct[data["bin"] == b], data["label"][data["bin"] == b], info)
      for b in range(len(edges) - 1)
  ]
  centers = np.sqrt(edges[:-1] * edges[1:]) if zoom else (edges[:-1] + edges[1:]) / 2
  result = {
      "quantity": "zoom" if zoom else "object_scale",
      "canvas_size": int(canvas_size),
      "bin_edges": edges.tolist(),
      "bin_centers": centers.tolist(),
      **({"source_px": (info.render_options.storage_size / centers).tolist(),
          "train_range": list(photos.ZOOM_RANGE)} if zoom
         else {"object_px": (centers * canvas_size).tolist()}),
      "count": [int(np.sum(data["bin"] == b)) for b in range(len(edges) - 1)],
      "accuracy": {g: [_pick(r, g) for r in per_bin_results] for g in groups(info)},
      "class_accuracy": {c: [r["class"][c] for r in per_bin_results] for c in info.class_names},
  }
  if info.family_names is not None:
    result["class_family"] = {
        c: info.family_names[f] for c, f in zip(info.class_names, info.class_family)
    }
  if features_rf is not None:
    result["features_rf"] = int(features_rf)
    covers = features_rf < canvas_size and not zoom
    result["rf_scale"] = features_rf / canvas_size if covers else None
  return result
