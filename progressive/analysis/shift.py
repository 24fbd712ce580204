"""Shift (in)stability: Azulay & Weiss's jaggedness and Zhang's shift consistency.

- Jaggedness (Azulay & Weiss 2018): translate each image in 1-pixel steps along a line;
  count the steps at which the correct class enters or leaves the top-k between
  neighbouring shifts. Reported as the mean count per image (`mean_changes`) and the
  fraction of images with at least one change (`frac_changed`).
- Consistency (Zhang 2019): the fraction of images whose top-1 prediction is the same
  under two random shifts, each offset drawn uniformly from `[-max_shift, max_shift]`^2.

Shifted views are never made by wrapping pixels round unless `mode="circular"` is
asked. `"render"` redraws a `scale_shapes` scene with its object (outline and fill)
moved by whole output pixels over the flat background, or cuts a `photos` patch again
from its photograph with the camera moved (a true camera shift); `"reflect"`, `"edge"` and
`"constant"` crop a window out of the image padded that way (a pure translation of the
content); `"circular"` rolls the pixels.
An offset `(dx, dy)` moves the content `dx` pixels right and `dy` pixels down.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from progressive.data import photos, pipeline, scale_shapes
from progressive.data.families import breakdown
from progressive.data.families import by_family as _by_family
from progressive.data.resize import resize_images

MODES = ("render", "reflect", "edge", "constant", "circular")


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
  """Whether the label is among the top `k` logits: `[..., C]`, `[...]` -> bool `[...]`.

  The label's rank counts the classes with a strictly larger logit (ties favour it).
  """
  logits = np.asarray(logits)
  labels = np.broadcast_to(np.asarray(labels), logits.shape[:-1])
  own = np.take_along_axis(logits, labels[..., None], axis=-1)
  return np.sum(logits > own, axis=-1) < k


def count_changes(correct: np.ndarray) -> np.ndarray:
  """Transitions of `correct` `[N, T]` (bool, along the sweep) per image: int `[N]`."""
  correct = np.asarray(correct, bool)
  return np.sum(correct[:, 1:] != correct[:, :-1], axis=1)


def jaggedness(correct: np.ndarray) -> dict[str, float]:
  """Azulay & Weiss's measures of a sweep: `correct` bool `[N, T]`, True where the label
  is in the top-k at shift t. Returns `mean_changes` and `frac_changed`."""
  changes = count_changes(correct)
  return {
      "mean_changes": float(np.mean(changes)) if len(changes) else None,
      "frac_changed": float(np.mean(changes > 0)) if len(changes) else None,
  }


def consistency(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
  """Zhang's consistency: the fraction of images whose top-1 classes `[N]` agree."""
  pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
  return float(np.mean(pred_a == pred_b)) if len(pred_a) else None


def sweep_offsets(max_shift: int, direction: Sequence[int] = (1, 0)) -> np.ndarray:
  """Offsets `[2 * max_shift + 1, 2]` of a 1-pixel sweep from `-max_shift` to `max_shift`
  steps along `direction` (`(1, 0)` horizontal, `(0, 1)` vertical, `(1, 1)` diagonal)."""
  steps = np.arange(-max_shift, max_shift + 1)
  return steps[:, None] * np.asarray(direction, np.int64)[None, :]


def random_offsets(rng: np.random.Generator, num: int, views: int, max_shift: int) -> np.ndarray:
  """Offsets `[num, views, 2]` uniform in `[-max_shift, max_shift]` on each axis."""
  return rng.integers(-max_shift, max_shift + 1, size=(num, views, 2))


def translate(images: np.ndarray, offsets: np.ndarray, mode: str = "reflect") -> np.ndarray:
  """Shifted copies of images `[N, H, W, C]` by `offsets` `[N, T, 2]` -> `[N, T, H, W, C]`.

  `mode` is `"reflect"`, `"edge"` or `"constant"` (pad that way, then crop a window:
  content enters from the padding) or `"circular"` (wrap around).
  """
  images, offsets = np.asarray(images), np.asarray(offsets, np.int64)
  n, h, w, _ = images.shape
  out = np.empty((n, offsets.shape[1], *images.shape[1:]), images.dtype)
  if mode == "circular":
    for i in range(n):
      for t, (dx, dy) in enumerate(offsets[i]):
        out[i, t] = np.roll(images[i], (dy, dx), axis=(0, 1))
    return out
  if mode not in ("reflect", "edge", "constant"):
    raise ValueError(f"mode must be one of {MODES[1:]} for images, got {mode!r}.")
  m = int(np.max(np.abs(offsets))) if offsets.size else 0
  if mode == "reflect" and m >= min(h, w):
    raise ValueError(f"A reflect-padded shift must be under the image side {min(h, w)}, got {m}.")
  padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)), mode=mode)
  for i in range(n):
    for t, (dx, dy) in enumerate(offsets[i]):
      out[i, t] = padded[i, m - dy:m - dy + h, m - dx:m - dx + w]
  return out


def render_translated(
    examples: Mapping[str, np.ndarray], offsets: np.ndarray, size: int, *, render_options
) -> np.ndarray:
  """`scale_shapes` scenes redrawn at `size` px with centres moved by `offsets` `[N, T, 2]`
  output pixels (`dx / size` canvas fractions): uint8 `[N, T, size, size, 3]`.

  `examples` holds `label`, `object_scale`, `center` `[N, 2]` and `seed`, as
  `Run.test_examples` returns them; `render_options` is the dataset's builder config
  (`DatasetInfo.render_options`, `scale_shapes.render_options(name)`).
  """
  offsets = np.asarray(offsets, np.int64)
  n, views = offsets.shape[:2]
  out = np.empty((n, views, size, size, 3), np.uint8)
  for i in range(n):
    cx, cy = (float(c) for c in examples["center"][i])
    for t, (dx, dy) in enumerate(offsets[i]):
      out[i, t] = scale_shapes.render(
          int(examples["label"][i]), float(examples["object_scale"][i]),
          (cx + dx / size, cy + dy / size), size,
          seed=int(examples["seed"][i]), **render_options._asdict(),
          pattern_shift=(dx / size, dy / size),  # The fill moves with the object.
      )
  return out


def shifted_views(
    examples: Mapping[str, np.ndarray],
    offsets: np.ndarray,
    *,
    size: int,
    mode: str = "render",
    render_options=None,
) -> np.ndarray:
  """Views `[N, T, size, size, 3]` of every example at every offset `[N, T, 2]`.

  `"render"` redraws scenes (needs the dataset's `render_options`); the other modes
  first zoom `examples["image"]` to `size` (as training does) and then shift by whole
  pixels of that size, returning float32 in 0..255.
  """
  if mode == "render":
    if render_options is None:
      raise ValueError("mode='render' redraws scale_shapes scenes: pass the dataset's "
                       "render_options (DatasetInfo.render_options), or use another mode.")
    if "zoom" in examples:  # photos: cut again from the photograph, the camera moved.
      return photos.shifted_cuts(examples, offsets, size, options=render_options)
    return render_translated(examples, offsets, size, render_options=render_options)
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  images = np.asarray(jax.device_get(resize_images(examples["image"], size)))
  return translate(images, offsets, mode)


def _predict_views(predict: Callable, views: np.ndarray) -> np.ndarray:
  """Logits `[N, T, C]` of views `[N, T, H, W, 3]`."""
  n, t = views.shape[:2]
  logits = np.asarray(predict(views.reshape(n * t, *views.shape[2:])))
  return logits.reshape(n, t, -1)


def shift_sweep(
    predict: Callable[[np.ndarray], np.ndarray],
    examples: Mapping[str, np.ndarray],
    info: pipeline.DatasetInfo,
    *,
    size: int,
    mode: str = "render",
    max_shift: int = 4,
    direction: Sequence[int] = (1, 0),
    topk: int = 1,
) -> dict[str, Any]:
  """Jaggedness of `predict` along a 1-pixel translation sweep at input `size`.

  `predict(images [B, size, size, 3]) -> logits`, e.g. `run.predictor(size)`.
  Returns the measures overall and per family, the top-k accuracy at each shift, and
  per image the `correct` flags `[N][T]` and the softmax probability of the true
  class `prob_correct` `[N][T]`, with `labels` (the data behind the plot).
  """
  labels = np.asarray(examples["label"])
  sweep = sweep_offsets(max_shift, direction)
  offsets = np.broadcast_to(sweep, (len(labels), *sweep.shape))
  views = shifted_views(examples, offsets, size=size, mode=mode,
                        render_options=info.render_options)
  logits = _predict_views(predict, views)
  correct = topk_correct(logits, labels[:, None], topk)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  prob_correct = np.take_along_axis(probs, labels[:, None, None], axis=-1)[..., 0]
  changes = count_changes(correct)
  return {
      "mode": mode,
      "size": int(size),
      "topk": int(topk),
      "direction": [int(d) for d in direction],
      "shifts": list(range(-max_shift, max_shift + 1)),
      "num_images": len(labels),
      **jaggedness(correct),
      "family": _by_family(lambda m: jaggedness(correct[m]), labels, info),
      "accuracy_by_shift": correct.mean(axis=0).tolist(),
      "changes": changes.tolist(),
      "labels": labels.tolist(),
      "correct": correct.astype(int).tolist(),
      "prob_correct": np.round(prob_correct, 5).tolist(),
  }


def shift_consistency(
    predict: Callable[[np.ndarray], np.ndarray],
    examples: Mapping[str, np.ndarray],
    info: pipeline.DatasetInfo,
    *,
    size: int,
    mode: str = "render",
    max_shift: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
  """Zhang's consistency of `predict` between two random shifts of every example.

  Returns `consistency` overall and per family, and the accuracy of each of the two
  views (`accuracy_a`, `accuracy_b`, with their per-family `breakdown`s).
  """
  labels = np.asarray(examples["label"])
  offsets = random_offsets(np.random.default_rng(seed), len(labels), 2, max_shift)
  views = shifted_views(examples, offsets, size=size, mode=mode,
                        render_options=info.render_options)
  pred = np.argmax(_predict_views(predict, views), -1)
  return {
      "mode": mode,
      "size": int(size),
      "max_shift": int(max_shift),
      "num_images": len(labels),
      "consistency": consistency(pred[:, 0], pred[:, 1]),
      "family": _by_family(lambda m: consistency(pred[m, 0], pred[m, 1]), labels, info),
      "accuracy_a": breakdown(pred[:, 0] == labels, labels, info),
      "accuracy_b": breakdown(pred[:, 1] == labels, labels, info),
  }


# --- Shifts that mean translation: one whole subsampling period, objects kept inside ---

PERIOD_DIRECTIONS = ((1, 0), (0, 1), (1, 1))  # Horizontal, vertical, diagonal.


def period_shifts(period: int) -> list[int]:
  """The steps of a sweep over one whole subsampling period, centred on 0:
  `-(period // 2) .. period - period // 2` (`period + 1` views, `period` neighbour
  pairs; the first and last view sit at the same phase of the network's grid)."""
  start = -(period // 2)
  return list(range(start, start + period + 1))


def keep_inside(examples: Mapping[str, np.ndarray], extent: int, size: int, *,
                render_options=None) -> tuple[dict, dict]:
  """`scale_shapes` scenes whose object stays inside the `size` px canvas at every shift
  of up to `extent` px on each axis: centres moved inwards where needed, scenes whose
  object cannot fit at all left out. Returns the kept examples and the counts
  (`total`, `would_leave`: objects that some shift would have pushed across the border,
  `moved`, `left_out`).

  `photos` patches (examples with a `zoom`; `render_options` their `CutOptions`) have no
  object to leave the canvas: a shift moves the camera over the photograph. Patches whose
  shifted cuts would read beyond their split's region (past the guard) are left out."""
  if "zoom" in examples:
    if render_options is None:
      raise ValueError("keep_inside on photos examples needs their render_options "
                       "(DatasetInfo.render_options, a photos.CutOptions).")
    fits = photos.fits_shifts(examples, extent, size, storage_size=render_options.storage_size)
    kept = {k: np.asarray(v)[fits] for k, v in examples.items()}
    return kept, {"total": len(fits), "would_leave": 0, "moved": 0,
                  "left_out": int((~fits).sum())}
  scale = np.asarray(examples["object_scale"], np.float64)
  center = np.asarray(examples["center"], np.float64)
  # Bounding-circle radius, the largest shift, and one pixel for the antialiased edge.
  room = scale / 2 + (extent + 1) / size
  would_leave = np.any((center - room[:, None] < 0) | (center + room[:, None] > 1), axis=1)
  fits = room <= 0.5
  moved = np.clip(center, room[:, None], 1 - room[:, None])
  kept = {k: np.asarray(v)[fits] for k, v in examples.items()}
  kept["center"] = moved[fits]
  counts = {"total": len(scale), "would_leave": int(would_leave.sum()),
            "moved": int((would_leave & fits).sum()), "left_out": int((~fits).sum())}
  return kept, counts


def _bootstrap(values: np.ndarray, rng: np.random.Generator, num: int = 1000) -> list[float] | None:
  """The 95% percentile bootstrap interval of the mean of per-image `values` `[N]`."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return None
  means = values[rng.integers(0, len(values), (num, len(values)))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def period_sweep(
    predict: Callable[[np.ndarray], np.ndarray],
    examples: Mapping[str, np.ndarray],
    info: pipeline.DatasetInfo,
    *,
    size: int,
    period: int,
    mode: str = "render",
    directions: Sequence[Sequence[int]] = PERIOD_DIRECTIONS,
    pairs: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
  """Shift stability over one whole subsampling `period` (the traced total stride) along
  each of `directions`, at input `size`.

  With `mode="render"` scenes are redrawn with their objects kept inside the canvas at
  every shift (`keep_inside`; the counts are reported). Per direction: jaggedness
  (`mean_changes`, top-1 correctness changes between neighbouring shifts), two measures
  that do not depend on accuracy (`pred_change_rate`: the fraction of neighbouring
  shifts whose predicted class changes; `prob_change`: the mean absolute change of the
  true class's probability between neighbours), each with a bootstrap 95% interval over
  images; and consistency over `pairs` random pairs of shifts within the period per
  image (Zhang), with its interval.
  """
  rng = np.random.default_rng(seed)
  shifts = period_shifts(period)
  extent = max(abs(shifts[0]), abs(shifts[-1]))
  counts = None
  if mode == "render":
    examples, counts = keep_inside(examples, extent, size, render_options=info.render_options)
  labels = np.asarray(examples["label"])
  result = {"mode": mode, "size": int(size), "period": int(period), "shifts": shifts,
            "num_images": len(labels), "inside": counts, "directions": {}, "pairs": int(pairs)}
  if not len(labels):  # Every object too large to stay inside at this size.
    empty = {k: None for name in ("mean_changes", "pred_change_rate", "prob_change")
             for k in (name, f"{name}_ci")}
    result["directions"] = {f"{d[0]},{d[1]}": {**empty, "accuracy_by_shift": []} for d in directions}
    result.update(consistency=None, consistency_ci=None, consistency_family={})
    return result
  for direction in directions:
    steps = np.asarray(shifts)[:, None] * np.asarray(direction, np.int64)[None, :]
    offsets = np.broadcast_to(steps, (len(labels), *steps.shape))
    views = shifted_views(examples, offsets, size=size, mode=mode,
                          render_options=info.render_options)
    logits = _predict_views(predict, views)
    pred = np.argmax(logits, -1)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    prob_true = np.take_along_axis(probs, labels[:, None, None], axis=-1)[..., 0]
    per_image = {
        "mean_changes": count_changes(pred == labels[:, None]).astype(np.float64),
        "pred_change_rate": np.mean(pred[:, 1:] != pred[:, :-1], axis=1),
        "prob_change": np.mean(np.abs(np.diff(prob_true, axis=1)), axis=1),
    }
    entry = {}
    for name, values in per_image.items():
      entry[name] = float(values.mean()) if len(values) else None
      entry[f"{name}_ci"] = _bootstrap(values, rng)
      entry[f"{name}_family"] = _by_family(
          lambda m, v=values: float(v[m].mean()) if m.any() else None, labels, info)
    entry["accuracy_by_shift"] = (pred == labels[:, None]).mean(axis=0).tolist()
    result["directions"][f"{direction[0]},{direction[1]}"] = entry
  # Consistency: `pairs` pairs of random 2-D offsets within the period, per image.
  offsets = rng.integers(shifts[0], shifts[-1] + 1, size=(len(labels), 2 * pairs, 2))
  views = shifted_views(examples, offsets, size=size, mode=mode,
                        render_options=info.render_options)
  pred = np.argmax(_predict_views(predict, views), -1).reshape(len(labels), pairs, 2)
  agree = np.mean(pred[..., 0] == pred[..., 1], axis=1)
  result["consistency"] = float(agree.mean()) if len(agree) else None
  result["consistency_ci"] = _bootstrap(agree, rng)
  result["consistency_family"] = _by_family(
      lambda m: float(agree[m].mean()) if m.any() else None, labels, info)
  return result
