"""Shift (in)stability: Azulay & Weiss's jaggedness and Zhang's shift consistency.

- Jaggedness (Azulay & Weiss 2018): translate each image in 1-pixel steps along a line;
  count the steps at which the correct class enters or leaves the top-k between
  neighbouring shifts. Reported as the mean count per image (`mean_changes`) and the
  fraction of images with at least one change (`frac_changed`).
- Consistency (Zhang 2019): the fraction of images whose top-1 prediction is the same
  under two random shifts, each offset drawn uniformly from `[-max_shift, max_shift]`^2.

- The canvas protocol (Azulay & Weiss 2019, `canvas_protocol`): each image at a size `S`
  embedded in a larger black canvas and moved one pixel at a time across its free range;
  a grid of images by positions, correct or not, and top-k jaggedness. It takes any
  `predict_fn` and any images (no dataset of this package needed).

Shifted views are never made by wrapping pixels round unless `mode="circular"` is
asked. `"render"` draws a `scale_shapes` scene at the input size and moves all of it
(outline and fill) by whole pixels on a canvas grown by the largest shift on each side,
in the scene's flat background colour, so every object keeps every pixel at every shift
(the model then sees the grown canvas); or cuts a `photos` patch again from its
photograph with the camera moved (a true camera shift, at the input size). `"reflect"`,
`"edge"` and `"constant"` crop a window out of the image padded that way (a pure
translation of the content); `"circular"` rolls the pixels.
An offset `(dx, dy)` moves the content `dx` pixels right and `dy` pixels down.
Every measure reports `n_images`, the images it measured (`num_images`, its older name,
holds the same count), and `canvas`, the side of the views the model saw.
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


def _paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int) -> None:
  """Writes `image` `[h, w, C]` into `canvas` `[H, W, C]` with its corner at (top, left),
  the part outside the canvas cut off."""
  h, w = image.shape[:2]
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
  if y0 < y1 and x0 < x1:
    canvas[y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left]


def render_translated(
    examples: Mapping[str, np.ndarray], offsets: np.ndarray, size: int, *, render_options,
    margin: int | None = None,
) -> np.ndarray:
  """`scale_shapes` scenes drawn at `size` px and moved by `offsets` `[N, T, 2]` whole
  pixels on a canvas grown by `margin` px on each side: uint8
  `[N, T, size + 2 * margin, size + 2 * margin, 3]`.

  `margin` defaults to the largest offset, so every object keeps all its pixels at every
  shift (a scene's object lies inside its `size` canvas). The scene's own pixels are
  those of `render(..., size)`, at offset 0 at `[margin:margin + size]` on both axes; the
  canvas around it is the scene's flat background colour. The whole scene moves, texture
  bands included (as `render(..., pattern_shift=...)` with the centre moved would draw
  it); `margin=0` keeps the `size` canvas, and a shifted object may then leave it.
  `examples` holds `label`, `object_scale`, `center` `[N, 2]` and `seed`, as
  `Run.test_examples` returns them; `render_options` is the dataset's builder config
  (`DatasetInfo.render_options`, `scale_shapes.render_options(name)`).
  """
  offsets = np.asarray(offsets, np.int64)
  n, views = offsets.shape[:2]
  if margin is None:
    margin = int(np.max(np.abs(offsets))) if offsets.size else 0
  side = size + 2 * int(margin)
  options = render_options._asdict()
  out = np.empty((n, views, side, side, 3), np.uint8)
  for i in range(n):
    seed = int(examples["seed"][i])
    scene = scale_shapes.render(
        int(examples["label"][i]), float(examples["object_scale"][i]),
        tuple(float(c) for c in examples["center"][i]), size, seed=seed, **options)
    background = scale_shapes.nuisances(
        seed, texture_periods=options["texture_periods"],
        period_mode=options["period_mode"]).background
    out[i] = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    for t, (dx, dy) in enumerate(offsets[i]):
      _paste(out[i, t], scene, margin + int(dy), margin + int(dx))
  return out


def canvas_side(examples: Mapping[str, np.ndarray], extent: int, size: int, mode: str) -> int:
  """The side of the views `shifted_views` makes of `examples` for shifts of up to
  `extent` px at input `size`: `size + 2 * extent` for `scale_shapes` scenes in
  `"render"` mode (the canvas grows), else `size`."""
  grows = mode == "render" and "zoom" not in examples
  return int(size) + 2 * int(extent) if grows else int(size)


def shifted_views(
    examples: Mapping[str, np.ndarray],
    offsets: np.ndarray,
    *,
    size: int,
    mode: str = "render",
    render_options=None,
    margin: int | None = None,
) -> np.ndarray:
  """Views of every example at every offset `[N, T, 2]`: `[N, T, side, side, 3]`.

  `"render"` draws `scale_shapes` scenes on a canvas grown by `margin` px on each side
  (`render_translated`; default: the largest offset) or cuts `photos` patches again at
  `size` with the camera moved (needs the dataset's `render_options`); the other modes
  first zoom `examples["image"]` to `size` (as training does) and then shift by whole
  pixels of that size, returning float32 in 0..255 at `size`.
  """
  if mode == "render":
    if render_options is None:
      raise ValueError("mode='render' redraws scale_shapes scenes: pass the dataset's "
                       "render_options (DatasetInfo.render_options), or use another mode.")
    if "zoom" in examples:  # photos: cut again from the photograph, the camera moved.
      return photos.shifted_cuts(examples, offsets, size, options=render_options)
    return render_translated(examples, offsets, size, render_options=render_options, margin=margin)
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  images = np.asarray(jax.device_get(resize_images(examples["image"], size)))
  return translate(images, offsets, mode)


def at_view_size(predict_at: Callable[[np.ndarray, int], np.ndarray]) -> Callable:
  """`images -> logits` at the images' own side from `predict_at(images, size)` (e.g.
  `Run.predict`): what the shift measures need where the canvas grows beyond the input
  size (a predictor fixed at `size`, `Run.predictor(size)`, would zoom the canvas back)."""
  return lambda images: predict_at(images, int(np.shape(images)[1]))


def in_frame(predict_at: Callable[[np.ndarray, int], np.ndarray], size: int) -> Callable:
  """`images -> logits` of each image's central `size` window, for a network that runs
  only at `size` (a `"flatten"` head): on a canvas grown around the frame, that window is
  the scene shifted inside a `size` frame, so an object near its edge may leave it (the
  grown canvas's whole-object guarantee does not hold)."""
  def predict(images):
    margin = (int(np.shape(images)[1]) - size) // 2
    return predict_at(np.asarray(images)[:, margin:margin + size, margin:margin + size], size)
  return predict


def view_predictor(run) -> Callable:
  """The predictor the shift measures use for `run` (an `analysis.Run`): the grown canvas
  at its own side (`at_view_size`), or, for a network fixed at its training size (a
  `"flatten"` head), the central frame of it (`in_frame`)."""
  if run.config.model.get("head") == "flatten":
    return in_frame(run.predict, run.train_size)
  return at_view_size(run.predict)


def _predict_views(predict: Callable, views: np.ndarray) -> np.ndarray:
  """Logits `[N, T, C]` of views `[N, T, H, W, 3]`."""
  n, t = views.shape[:2]
  logits = np.asarray(predict(views.reshape(n * t, *views.shape[2:])))
  return logits.reshape(n, t, -1)


def keep_inside(examples: Mapping[str, np.ndarray], extent: int, size: int, *,
                render_options=None) -> tuple[dict, dict]:
  """The examples every shift of up to `extent` px on each axis at input `size` moves
  without changing their content, and the counts (`total`, `would_leave`, `moved`,
  `left_out`).

  `scale_shapes` scenes: all of them, unchanged; their views grow the canvas by `extent`
  on each side (`render_translated`), so no object leaves it. `would_leave` counts the
  objects some shift would have pushed across the border of a `size` canvas (those the
  grown canvas keeps whole); nothing is moved or left out.

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
  center = np.asarray(examples["center"], np.float64).reshape(-1, 2)
  # Bounding-circle radius, the largest shift, and one pixel for the antialiased edge.
  room = scale / 2 + (extent + 1) / size
  would_leave = np.any((center - room[:, None] < 0) | (center + room[:, None] > 1), axis=1)
  return dict(examples), {"total": len(scale), "would_leave": int(would_leave.sum()),
                          "moved": 0, "left_out": 0}


def _shiftable(examples, extent: int, size: int, mode: str, render_options):
  """`(examples, counts, side)`: the examples a sweep of up to `extent` px shifts
  (`keep_inside` in `"render"` mode; every one otherwise), their counts (None outside
  `"render"` mode) and the side of their views (`canvas_side`)."""
  counts = None
  if mode == "render" and render_options is not None:
    examples, counts = keep_inside(examples, extent, size, render_options=render_options)
  return examples, counts, canvas_side(examples, extent, size, mode)


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

  `predict(images [B, side, side, 3]) -> logits` at the views' own side: the `canvas`
  (`size + 2 * max_shift` for `scale_shapes` in `"render"` mode, else `size`), e.g.
  `at_view_size(run.predict)`. Returns the measures overall and per family, the top-k
  accuracy at each shift, `n_images` (with `inside`: the counts of `keep_inside`; photos
  whose camera moves leave their region are left out), and per image the `correct` flags
  `[N][T]` and the softmax probability of the true class `prob_correct` `[N][T]`, with
  `labels` (the data behind the plot).
  """
  examples, counts, side = _shiftable(examples, max_shift, size, mode, info.render_options)
  labels = np.asarray(examples["label"])
  sweep = sweep_offsets(max_shift, direction)
  result = {"mode": mode, "size": int(size), "canvas": side, "topk": int(topk),
            "direction": [int(d) for d in direction],
            "shifts": list(range(-max_shift, max_shift + 1)),
            "n_images": len(labels), "num_images": len(labels), "inside": counts}
  if not len(labels):
    return {**result, **jaggedness(np.zeros((0, len(sweep)), bool)), "family": {},
            "accuracy_by_shift": [], "changes": [], "labels": [], "correct": [],
            "prob_correct": []}
  offsets = np.broadcast_to(sweep, (len(labels), *sweep.shape))
  views = shifted_views(examples, offsets, size=size, mode=mode,
                        render_options=info.render_options, margin=max_shift)
  logits = _predict_views(predict, views)
  correct = topk_correct(logits, labels[:, None], topk)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  prob_correct = np.take_along_axis(probs, labels[:, None, None], axis=-1)[..., 0]
  changes = count_changes(correct)
  return {
      **result,
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

  `predict` and the `canvas` are as in `shift_sweep`. Returns `consistency` overall and
  per family, `n_images` (with `inside`), and the accuracy of each of the two views
  (`accuracy_a`, `accuracy_b`, with their per-family `breakdown`s).
  """
  examples, counts, side = _shiftable(examples, max_shift, size, mode, info.render_options)
  labels = np.asarray(examples["label"])
  result = {"mode": mode, "size": int(size), "canvas": side, "max_shift": int(max_shift),
            "n_images": len(labels), "num_images": len(labels), "inside": counts}
  if not len(labels):
    return {**result, "consistency": None, "family": {}, "accuracy_a": None, "accuracy_b": None}
  offsets = random_offsets(np.random.default_rng(seed), len(labels), 2, max_shift)
  views = shifted_views(examples, offsets, size=size, mode=mode,
                        render_options=info.render_options, margin=max_shift)
  pred = np.argmax(_predict_views(predict, views), -1)
  return {
      **result,
      "consistency": consistency(pred[:, 0], pred[:, 1]),
      "family": _by_family(lambda m: consistency(pred[m, 0], pred[m, 1]), labels, info),
      "accuracy_a": breakdown(pred[:, 0] == labels, labels, info),
      "accuracy_b": breakdown(pred[:, 1] == labels, labels, info),
  }


# --- Shifts that mean translation: one whole subsampling period, every object whole ---

PERIOD_DIRECTIONS = ((1, 0), (0, 1), (1, 1))  # Horizontal, vertical, diagonal.


def period_shifts(period: int) -> list[int]:
  """The steps of a sweep over one whole subsampling period, centred on 0:
  `-(period // 2) .. period - period // 2` (`period + 1` views, `period` neighbour
  pairs; the first and last view sit at the same phase of the network's grid)."""
  start = -(period // 2)
  return list(range(start, start + period + 1))


def period_extent(period: int) -> int:
  """The largest shift of `period_shifts(period)` in pixels: the margin by which the
  period sweep grows a `scale_shapes` canvas on each side."""
  shifts = period_shifts(period)
  return max(abs(shifts[0]), abs(shifts[-1]))


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

  With `mode="render"` every `scale_shapes` scene is shifted over the whole period on a
  canvas grown by `period_extent(period)` px on each side (`canvas`: `size + period` for
  an even period, so a `size` on the grid stays on it), every object whole at every
  shift; `photos` patches are cut with the camera moved, those whose cuts would leave
  their split's region left out (`inside`: the counts of `keep_inside`). `predict` takes
  the views at their own side, as in `shift_sweep`; `n_images` says how many images were
  measured. Per direction: jaggedness (`mean_changes`, top-1 correctness changes between
  neighbouring shifts), two measures that do not depend on accuracy (`pred_change_rate`:
  the fraction of neighbouring shifts whose predicted class changes; `prob_change`: the
  mean absolute change of the true class's probability between neighbours), each with a
  bootstrap 95% interval over images; and consistency over `pairs` random pairs of shifts
  within the period per image (Zhang), with its interval.
  """
  rng = np.random.default_rng(seed)
  shifts = period_shifts(period)
  extent = period_extent(period)
  examples, counts, side = _shiftable(examples, extent, size, mode, info.render_options)
  labels = np.asarray(examples["label"])
  result = {"mode": mode, "size": int(size), "canvas": side, "period": int(period),
            "shifts": shifts, "n_images": len(labels), "num_images": len(labels),
            "inside": counts, "directions": {}, "pairs": int(pairs)}
  if not len(labels):  # Every photos patch's camera moves would leave its region.
    empty = {k: None for name in ("mean_changes", "pred_change_rate", "prob_change")
             for k in (name, f"{name}_ci")}
    result["directions"] = {f"{d[0]},{d[1]}": {**empty, "accuracy_by_shift": []} for d in directions}
    result.update(consistency=None, consistency_ci=None, consistency_family={})
    return result

  def views_at(offsets):
    return shifted_views(examples, offsets, size=size, mode=mode,
                         render_options=info.render_options, margin=extent)

  for direction in directions:
    steps = np.asarray(shifts)[:, None] * np.asarray(direction, np.int64)[None, :]
    offsets = np.broadcast_to(steps, (len(labels), *steps.shape))
    logits = _predict_views(predict, views_at(offsets))
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
  pred = np.argmax(_predict_views(predict, views_at(offsets)), -1).reshape(len(labels), pairs, 2)
  agree = np.mean(pred[..., 0] == pred[..., 1], axis=1)
  result["consistency"] = float(agree.mean()) if len(agree) else None
  result["consistency_ci"] = _bootstrap(agree, rng)
  result["consistency_family"] = _by_family(
      lambda m: float(agree[m].mean()) if m.any() else None, labels, info)
  return result


# --- Azulay & Weiss's canvas protocol: any images, any predictor ---


def canvas_positions(size: int, canvas: int, direction: Sequence[int] = (0, 1)) -> np.ndarray:
  """Top-left corners `(x, y)` `[T, 2]` of a `size` px image moved one pixel at a time
  across the free range `0 .. canvas - size` of a `canvas` px canvas along `direction`
  (`(0, 1)` down, as Azulay & Weiss's figures; `(1, 0)` right; `(1, 1)` diagonal), the
  other axis centred (`(canvas - size) // 2`)."""
  free = int(canvas) - int(size)
  if free < 1:
    raise ValueError(f"The canvas ({canvas} px) must be larger than the image ({size} px).")
  dx, dy = (int(d) for d in direction)
  if (dx, dy) not in ((1, 0), (0, 1), (1, 1)):
    raise ValueError(f"direction must be (1, 0), (0, 1) or (1, 1), got {tuple(direction)}.")
  steps = np.arange(free + 1)
  centre = np.full_like(steps, free // 2)
  return np.stack([steps if dx else centre, steps if dy else centre], axis=1)


def embed(images: np.ndarray, corners: np.ndarray, canvas: int, fill=0.0) -> np.ndarray:
  """Images `[N, S, S, C]` placed on a `canvas` px canvas filled with `fill` (a scalar or
  one value per channel) with their top-left corner at each of `corners` `[T, 2]` (x, y):
  float32 `[N, T, canvas, canvas, C]`."""
  images = np.asarray(images, np.float32)
  n, size, _, channels = images.shape
  out = np.empty((n, len(corners), canvas, canvas, channels), np.float32)
  out[:] = np.broadcast_to(np.asarray(fill, np.float32), (channels,))
  for t, (x, y) in enumerate(np.asarray(corners, np.int64)):
    out[:, t, y:y + size, x:x + size] = images
  return out


def canvas_protocol(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    size: int,
    canvas: int,
    topk: int = 1,
    direction: Sequence[int] = (0, 1),
    fill=0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
  """Azulay & Weiss's protocol ("Why do deep convolutional networks generalize so poorly
  to small image transformations?", 2019) on any predictor and any images.

  Each image `[N, H, W, C]` (eval-transformed, in the units `predict_fn` takes) is resized
  to `size` px where it is not already (`resize_images`: bilinear, antialiased when
  shrinking), embedded in a `canvas` px canvas filled with `fill` (black: 0 for 0..255
  images; for normalised inputs, black in their units, `-mean / std` per channel), and
  moved one pixel at a time across the canvas's free range along `direction`
  (`canvas_positions`; they used 100 px images in 150 px canvases, moved vertically).
  `predict_fn(views [B, canvas, canvas, C]) -> logits [B, classes]` is called on at most
  `batch_size` views at a time.

  Returns `size`, `canvas`, `topk`, `direction`, `positions` (the moving axis's offset of
  the image in the canvas, pixels), `n_images`; the grid `correct` `[N][T]` (1 where the
  true class is among the top-k logits at that position, `topk_correct`), per image the
  `changes` between neighbouring positions, `labels`; the top-k `accuracy` over every
  view, `accuracy_by_position`; and jaggedness (`mean_changes`, `frac_changed`, each
  with a bootstrap 95% interval over images).
  """
  corners, logits = canvas_logits(predict_fn, images, labels, size=size, canvas=canvas,
                                  direction=direction, fill=fill, batch_size=batch_size)
  return canvas_measures(logits, labels, corners, size=size, canvas=canvas, topk=topk,
                         direction=direction, seed=seed)


def canvas_logits(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    size: int,
    canvas: int,
    direction: Sequence[int] = (0, 1),
    fill=0.0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
  """The views of `canvas_protocol` and their logits: `(corners [T, 2], logits [N, T, C])`,
  so that several top-k measures (`canvas_measures`) come from one pass."""
  images = np.asarray(images)
  labels = np.asarray(labels, np.int64)
  if images.ndim != 4 or len(images) != len(labels):
    raise ValueError(f"images must be [N, H, W, C] with one label each, got {images.shape} "
                     f"and {labels.shape} labels.")
  corners = canvas_positions(size, canvas, direction)
  if images.shape[1:3] != (size, size):
    images = np.asarray(jax.device_get(resize_images(images, size)))
  per_batch = max(1, int(batch_size) // len(corners))  # Images whose views fill a batch.
  logits = []
  for start in range(0, len(images), per_batch):
    views = embed(images[start:start + per_batch], corners, canvas, fill)
    logits.append(_predict_views(predict_fn, views))
  logits = np.concatenate(logits) if logits else np.zeros((0, len(corners), 1), np.float32)
  return corners, logits


def canvas_measures(
    logits: np.ndarray,
    labels: np.ndarray,
    corners: np.ndarray,
    *,
    size: int,
    canvas: int,
    topk: int = 1,
    direction: Sequence[int] = (0, 1),
    seed: int = 0,
) -> dict[str, Any]:
  """`canvas_protocol`'s result from the logits `[N, T, C]` of its views at `corners`
  (`canvas_logits`) for one `topk`."""
  labels = np.asarray(labels, np.int64)
  moving = 1 if tuple(int(d) for d in direction) == (0, 1) else 0
  correct = topk_correct(logits, labels[:, None], topk) if len(labels) else np.zeros(
      (0, len(corners)), bool)
  changes = count_changes(correct)
  rng = np.random.default_rng(seed)
  return {
      "size": int(size),
      "canvas": int(canvas),
      "topk": int(topk),
      "direction": [int(d) for d in direction],
      "positions": np.asarray(corners)[:, moving].tolist(),
      "n_images": len(labels),
      **jaggedness(correct),
      "mean_changes_ci": _bootstrap(changes, rng),
      "frac_changed_ci": _bootstrap(changes > 0, rng),
      "accuracy": float(correct.mean()) if correct.size else None,
      "accuracy_by_position": correct.mean(axis=0).tolist() if len(labels) else [],
      "changes": changes.tolist(),
      "labels": labels.tolist(),
      "correct": correct.astype(int).tolist(),
  }
