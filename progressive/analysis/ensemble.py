"""A multi-size test-time ensemble: the softmax averaged over several input sizes.

    p_ens(c | x) = mean over sizes s of softmax(f(resize(x, s)))_c

one set of weights seeing the image at several scales (RESEARCH.md, claim 4), compared
with each single size; also the mean log-probability (a geometric mean of the softmaxes,
`ensemble_logp`), and `seed_ensemble`: the softmax averaged over networks trained with
different seeds at one size, the usual ensemble a size ensemble competes with.

Beside it, flip test-time augmentation at one size (`flip_tta`, `config.eval_tta="flip"`
in training's evaluation): the softmax averaged over the image and its horizontal mirror,

    p_flip(c | x) = (softmax(f(x))_c + softmax(f(mirror(x)))_c) / 2
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from progressive.analysis.scale import predict_sizes
from progressive.data import pipeline
from progressive.data.families import breakdown


def ensemble_from_logits(
    logits: Mapping[int, np.ndarray], labels: np.ndarray, info: pipeline.DatasetInfo
) -> dict[str, Any]:
  """Accuracy of each size and of the mean softmax over all of them.

  `logits` `{size: [N, classes]}`. Returns `sizes`, `single` `{size: breakdown}`,
  `ensemble` (a `breakdown`: `all`, `family`, `class`), `best_single_size` and
  `gain_over_best` (ensemble minus best single accuracy).
  """
  sizes = sorted(logits)
  labels = np.asarray(labels)
  probs = {s: np.asarray(jax.nn.softmax(np.asarray(logits[s], np.float32), axis=-1)) for s in sizes}
  single = {s: breakdown(np.argmax(probs[s], -1) == labels, labels, info) for s in sizes}
  mean = np.mean([probs[s] for s in sizes], axis=0)
  ensemble = breakdown(np.argmax(mean, -1) == labels, labels, info)
  log_mean = np.mean([np.log(np.maximum(probs[s], 1e-30)) for s in sizes], axis=0)
  best = max(sizes, key=lambda s: single[s]["all"])
  return {
      "sizes": [int(s) for s in sizes],
      "num_images": int(len(labels)),
      "single": {str(s): single[s] for s in sizes},
      "ensemble": ensemble,
      "ensemble_logp": breakdown(np.argmax(log_mean, -1) == labels, labels, info),
      "best_single_size": int(best),
      "gain_over_best": ensemble["all"] - single[best]["all"],
  }


def size_ensemble(run, images: np.ndarray, labels: np.ndarray, sizes: Sequence[int]) -> dict:
  """`ensemble_from_logits` of `run.predict` on uint8 `images` `[N, S, S, 3]` at `sizes`."""
  return ensemble_from_logits(predict_sizes(run.predict, images, sizes), labels, run.info)


def _softmax(logits) -> np.ndarray:
  return np.asarray(jax.nn.softmax(np.asarray(logits, np.float32), axis=-1))


def flip_tta(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
  """Probabilities `[N, classes]`: the mean softmax of `predict` (images -> logits, e.g.
  `run.predictor(size)`) over `images` `[N, H, W, C]` and their horizontal mirrors."""
  images = np.asarray(images)
  return (_softmax(predict(images)) + _softmax(predict(images[:, :, ::-1]))) / 2


def flip_tta_summary(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                     labels: np.ndarray, info: pipeline.DatasetInfo) -> dict[str, Any]:
  """Accuracy of `predict` on `images` alone (`single`) and with flip TTA (`tta`), each a
  `breakdown`, and `gain` (tta minus single)."""
  images, labels = np.asarray(images), np.asarray(labels)
  plain = _softmax(predict(images))
  mean = (plain + _softmax(predict(images[:, :, ::-1]))) / 2
  single = breakdown(np.argmax(plain, -1) == labels, labels, info)
  tta = breakdown(np.argmax(mean, -1) == labels, labels, info)
  return {"num_images": len(labels), "single": single, "tta": tta,
          "gain": tta["all"] - single["all"]}


def seed_ensemble(logits: Sequence[np.ndarray], labels: np.ndarray) -> float:
  """Accuracy of the softmax averaged over several networks' `logits` (`[N, classes]`
  each, the same images in the same order) on `labels`."""
  if not logits:
    raise ValueError("seed_ensemble needs at least one network's logits.")
  probs = [np.asarray(jax.nn.softmax(np.asarray(x, np.float32), axis=-1)) for x in logits]
  return float(np.mean(np.argmax(np.mean(probs, axis=0), -1) == np.asarray(labels)))
