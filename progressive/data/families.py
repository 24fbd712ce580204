"""Accuracy by class family (scale_shapes' shape and texture classes, photos' families):
the one per-family breakdown that training, the analyses and the sweeps all report."""

from collections.abc import Callable
from typing import Any

import numpy as np

from progressive.data import pipeline


def mean_or_none(values: np.ndarray) -> float | None:
  """Mean of a boolean array as a float; None when empty (JSON has no NaN)."""
  return float(np.mean(values)) if len(values) else None


def by_family(values: Callable[[np.ndarray], Any], labels, info: pipeline.DatasetInfo) -> dict:
  """`{family: values(mask)}`, `mask` selecting that class family's examples (`{}` for a
  dataset without families)."""
  if info.family_names is None:
    return {}
  family = np.asarray(info.class_family)[np.asarray(labels)]
  return {name: values(family == f) for f, name in enumerate(info.family_names)}


def breakdown(correct: np.ndarray, labels: np.ndarray, info: pipeline.DatasetInfo) -> dict:
  """Accuracy overall, per family and per class of `correct` `[N]` bool.

  Returns `{"all": acc, "family": {name: acc}, "class": {name: acc}}`; a group with no
  example has accuracy None.
  """
  correct, labels = np.asarray(correct, bool), np.asarray(labels)
  return {
      "all": mean_or_none(correct),
      "family": by_family(lambda m: mean_or_none(correct[m]), labels, info),
      "class": {name: mean_or_none(correct[labels == c])
                for c, name in enumerate(info.class_names)},
  }
