"""Shift (in)stability: Azulay & Weiss's jaggedness and Zhang's shift consistency.

- Jaggedness (Azulay & Weiss 2018): translate each image in 1-pixel steps along a line;
  count the steps at which the correct class enters or leaves the top-k between
  neighbouring shifts. Reported as the mean count per image (`mean_changes`) and the
  fraction of images with at least one change (`frac_changed`).
- Consistency (Zhang 2019): the fraction of images whose top-1 prediction is the same
  under two random shifts, each offset drawn uniformly from `[-max_shift, max_shift]`^2.

Shifted views are never made by wrapping pixels round unless `mode="circular"` is
asked. `"render"` redraws a `scale_shapes` scene with its object (outline and fill)
moved by whole output pixels over the flat background; `"reflect"`, `"edge"` and
`"constant"` crop a window out of the image padded that way (a pure translation of the
content); `"circular"` rolls the pixels.
An offset `(dx, dy)` moves the content `dx` pixels right and `dy` pixels down.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from progressive.evaluate import breakdown, by_family as _by_family
from progressive.data import pipeline
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
    examples: Mapping[str, np.ndarray], offsets: np.ndarray, size: int, *, storage_size: int
) -> np.ndarray:
  """`scale_shapes` scenes redrawn at `size` px with centres moved by `offsets` `[N, T, 2]`
  output pixels (`dx / size` canvas fractions): uint8 `[N, T, size, size, 3]`.

  `examples` holds `label`, `object_scale`, `center` `[N, 2]` and `seed`, as
  `Run.test_examples` returns them.
  """
  from progressive.data import scale_shapes  # pylint: disable=import-outside-toplevel

  offsets = np.asarray(offsets, np.int64)
  n, views = offsets.shape[:2]
  out = np.empty((n, views, size, size, 3), np.uint8)
  for i in range(n):
    cx, cy = (float(c) for c in examples["center"][i])
    for t, (dx, dy) in enumerate(offsets[i]):
      out[i, t] = scale_shapes.render(
          int(examples["label"][i]), float(examples["object_scale"][i]),
          (cx + dx / size, cy + dy / size), size,
          seed=int(examples["seed"][i]), storage_size=storage_size,
          pattern_shift=(dx / size, dy / size),  # The fill moves with the object.
      )
  return out


def shifted_views(
    examples: Mapping[str, np.ndarray],
    offsets: np.ndarray,
    *,
    size: int,
    mode: str = "render",
    storage_size: int | None = None,
) -> np.ndarray:
  """Views `[N, T, size, size, 3]` of every example at every offset `[N, T, 2]`.

  `"render"` redraws scenes (needs `storage_size`); the other modes first zoom
  `examples["image"]` to `size` (as training does) and then shift by whole pixels of
  that size, returning float32 in 0..255.
  """
  if mode == "render":
    if storage_size is None:
      raise ValueError("mode='render' needs the dataset's storage_size.")
    return render_translated(examples, offsets, size, storage_size=storage_size)
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
  views = shifted_views(examples, offsets, size=size, mode=mode, storage_size=info.image_size)
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
      "num_images": int(len(labels)),
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
  views = shifted_views(examples, offsets, size=size, mode=mode, storage_size=info.image_size)
  pred = np.argmax(_predict_views(predict, views), -1)
  return {
      "mode": mode,
      "size": int(size),
      "max_shift": int(max_shift),
      "num_images": int(len(labels)),
      "consistency": consistency(pred[:, 0], pred[:, 1]),
      "family": _by_family(lambda m: consistency(pred[m, 0], pred[m, 1]), labels, info),
      "accuracy_a": breakdown(pred[:, 0] == labels, labels, info),
      "accuracy_b": breakdown(pred[:, 1] == labels, labels, info),
  }
