"""fastai's `ClassificationInterpretation` for any dataset, and what a fastai user looks at
before and after training: the inputs as the pipeline made them and the loss curves.

    result, images = interpret.interpret_run(run)     # whole eval split, at the training size
    result["per_class"], result["most_confused"], result["top_losses"]
    batches = interpret.show_batch(run)             # first training inputs of each stage
    curves = interpret.training_curves(run)         # loss and accuracy against steps

Every result is a JSON-able dict; `plots` draws them and `report` writes them to
`DIR/analysis/`. Nothing here needs a dataset's metadata beyond its class names.
"""

import csv
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from progressive import schedules
from progressive.data import pipeline
from progressive.data.resize import resize_images
from progressive.training import parallel
from progressive.training.metrics import read_rows

CHANCE_MARGIN = 0.05  # Accuracy this close to 1 / num_classes reads as chance.


def _test_batches(run, num: int | None, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
  """`(images, labels, mask)` of fixed size `batch_size` over the first `num` examples of the
  run's eval split (default: all), eval-transformed as evaluation sees them; `mask` marks
  real examples. A split is never held whole, so the whole ImageNet validation set fits."""
  data = run.config.data
  if data["name"] in pipeline.BUILTINS:  # Held in memory anyway.
    arrays = pipeline.builtin_examples(data, data.eval_split, num=num)[0]
    images, labels = arrays["image"], arrays["label"]
    for start in range(0, len(labels), batch_size):
      chunk, count = images[start:start + batch_size], len(labels[start:start + batch_size])
      pad = batch_size - count
      yield (np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]),
             np.concatenate([labels[start:start + batch_size], np.zeros(pad, labels.dtype)]),
             np.arange(batch_size) < count)
    return
  reader = pipeline.open_split(data, data.eval_split)
  left = reader.num_examples if num is None else min(num, reader.num_examples)
  for batch in reader.eval_batches(batch_size):
    if left <= 0:
      return
    keep = batch["mask"] & (batch["unreadable"] == 0)  # Undecodable files (skip_unreadable) out.
    mask = keep & (np.cumsum(keep) <= left)
    left -= int(mask.sum())
    yield batch["image"], batch["label"], mask


def interpret_run(run, *, num_images: int | None = None, size: int | None = None,
              top_losses: int = 9, batch_size: int = 256) -> tuple[dict[str, Any], np.ndarray]:
  """Predictions of `run` on the first `num_images` of its eval split (default: all of
  it) at `size` (default: its training size), as `interpretation` reads them, and the
  images of the top losses (uint8 `[top_losses, S, S, 3]`, in the result's order)."""
  size = int(size or run.train_size)
  count = run.info.num_test if num_images is None else min(num_images, run.info.num_test)
  batch_size = max(1, min(batch_size, count))
  logits, labels, kept = [], [], None  # kept: (losses, indices, images) of the worst so far.
  seen = 0
  for images, batch_labels, mask in _test_batches(run, num_images, batch_size):
    batch_logits = run.predict(images, size, batch_size=batch_size)[mask]
    batch_labels, images = batch_labels[mask], images[mask]
    losses = _losses(batch_logits, batch_labels)
    indices = seen + np.arange(len(batch_labels))
    if kept is not None:
      losses = np.concatenate([kept[0], losses])
      indices = np.concatenate([kept[1], indices])
      images = np.concatenate([kept[2], images])
    worst = np.argsort(-losses, kind="stable")[:top_losses]
    kept = (losses[worst], indices[worst], images[worst])
    logits.append(batch_logits)
    labels.append(batch_labels)
    seen += len(batch_labels)
  num_classes = run.info.num_classes
  logits = np.concatenate(logits) if logits else np.zeros((0, num_classes), np.float32)
  labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
  result = interpretation(logits, labels, run.info.class_names, top_losses=top_losses)
  result.update(size=size, step=int(run.step), split=str(run.config.data.eval_split),
                num_test=int(run.info.num_test))
  top_images = kept[2] if kept is not None else np.zeros((0, size, size, 3), np.uint8)
  return result, top_images


def _losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-example cross-entropy, float64 `[N]`."""
  logp = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1))
  return np.maximum(-logp[np.arange(len(labels)), np.asarray(labels)], 0.0)  # No -0.0.


def interpretation(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                   top_losses: int = 9, most_confused: int = 10) -> dict[str, Any]:
  """fastai's `ClassificationInterpretation` of logits `[N, classes]` and labels `[N]`.

  Returns `num_images`, `accuracy`, `class_names`, `per_class` (one row per class:
  `class`, `count`, `correct`, `accuracy`, None without examples), `confusion`
  (`[true][predicted]` counts), `most_confused` (the largest off-diagonal cells, at most
  `most_confused`, each `true`, `predicted`, `count`) and `top_losses` (the `top_losses`
  highest cross-entropies, each `index`, `true`, `predicted`, `loss`, `probability` of
  the predicted class and `p_true`).
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
  names = [str(c) for c in class_names]
  predicted = np.argmax(logits, -1) if len(logits) else np.zeros(0, np.int64)
  k = len(names)
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class = []
  for c, name in enumerate(names):
    n, right = int(confusion[c].sum()), int(confusion[c, c])
    per_class.append({"class": name, "count": n, "correct": right,
                      "accuracy": right / n if n else None})
  off = [(int(confusion[t, p]), t, p) for t in range(k) for p in range(k)
         if t != p and confusion[t, p]]
  off.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1)) if len(logits) else logits
  losses = _losses(logits, labels) if len(logits) else np.zeros(0)
  worst = np.argsort(-losses, kind="stable")[:top_losses]
  return {
      "num_images": int(len(labels)),
      "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
      "class_names": names,
      "per_class": per_class,
      "confusion": confusion.tolist(),
      "most_confused": [{"true": names[t], "predicted": names[p], "count": n}
                        for n, t, p in off[:most_confused]],
      "top_losses": [{"index": int(i), "true": names[labels[i]], "predicted": names[predicted[i]],
                      "loss": float(losses[i]), "probability": float(probs[i, predicted[i]]),
                      "p_true": float(probs[i, labels[i]])} for i in worst],
  }


def _csv(rows: Sequence[Sequence[Any]]) -> str:
  out = io.StringIO()
  csv.writer(out, lineterminator="\n").writerows(rows)
  return out.getvalue()


def confusion_csv(result: Mapping[str, Any]) -> str:
  """The confusion matrix as CSV: a header of predicted class names, one row per true class."""
  names = result["class_names"]
  return _csv([["true \\ predicted", *names],
               *([name, *row] for name, row in zip(names, result["confusion"]))])


def per_class_csv(result: Mapping[str, Any]) -> str:
  """Per-class accuracy as CSV: class, count, correct, accuracy (empty without examples)."""
  return _csv([["class", "count", "correct", "accuracy"],
               *([r["class"], r["count"], r["correct"],
                  "" if r["accuracy"] is None else r["accuracy"]] for r in result["per_class"])])


def show_batch(run, num_images: int = 8) -> list[dict[str, Any]]:
  """The first `num_images` training inputs of every stage, as the pipeline made them:
  augmented, at the stage's size. Each stage's first batch comes from the training
  split opened as training opens it, in that stage's order (`parallel.stage_seed`), and
  an example's augmentation depends only on its position and the seed, so these are
  the first images of the first batch training saw (on one process; a multi-process run
  gives each process a shard). Images held at the dataset's size (the built-ins) are
  zoomed to the stage's size, as the device zooms them in training.

  Returns one dict per stage: `stage`, `size`, `seed`, `image` uint8 `[n, size, size, 3]`
  and `label` `[n]`.
  """
  data = run.config.data
  split = pipeline.open_split(data, data.train_split, train=True)
  stages = []
  for stage in run.stages():
    seed = parallel.stage_seed(run.config.seed, stage.index)
    n = max(1, min(num_images, stage.batch_size, split.num_examples))
    batch = split.train_dataset(n, seed=seed, size=stage.size)[0]
    images = np.asarray(batch["image"])
    if images.shape[1] != stage.size:
      images = np.asarray(resize_images(images, stage.size)).round().clip(0, 255).astype(np.uint8)
    stages.append({"stage": stage.index, "size": int(stage.size), "seed": int(seed),
                   "image": images, "label": np.asarray(batch["label"])})
  return stages


def _finite(value) -> float | None:
  return float(value) if value is not None and math.isfinite(value) else None


def training_curves(run) -> dict[str, Any]:
  """Loss and accuracy against steps from `metrics.jsonl`: `train` (the train rows'
  `step`, `loss`, `accuracy`: means over the steps since the last row) and `eval` (the
  eval rows at the size of the stage they were taken in: `step`, `size`, `accuracy`,
  `loss`), with the stage `boundaries` and `stage_sizes`. A step logged twice (a resumed
  run) keeps its last row; non-finite values are None."""
  plan = run.stages()
  path = run.workdir / "metrics.jsonl"
  rows = read_rows(path) if path.exists() else []

  def stage_of(row) -> schedules.Stage:
    if "stage" in row and 0 <= int(row["stage"]) < len(plan):
      return plan[int(row["stage"])]
    return schedules.stage_at(plan, max(int(row["step"]) - 1, 0))

  train = {int(r["step"]): r for r in rows if r.get("event") == "train"}
  evals = {int(r["step"]): r for r in rows
           if r.get("event") == "eval" and int(r.get("size", -1)) == stage_of(r).size}
  train_steps, eval_steps = sorted(train), sorted(evals)
  return {
      "train": {"step": train_steps,
                "loss": [_finite(train[s].get("loss")) for s in train_steps],
                "accuracy": [_finite(train[s].get("accuracy")) for s in train_steps]},
      "eval": {"step": eval_steps,
               "size": [int(evals[s]["size"]) for s in eval_steps],
               "accuracy": [_finite(evals[s].get("accuracy")) for s in eval_steps],
               "loss": [_finite(evals[s].get("loss")) for s in eval_steps]},
      "boundaries": [s.start for s in plan[1:]],
      "stage_sizes": [s.size for s in plan],
  }


def chance_warning(accuracy: float | None, num_classes: int, size: int, *,
                   margin: float = CHANCE_MARGIN, recalibrated: float | None = None) -> str | None:
  """A warning when `accuracy` (at `size` px) is within `margin` of chance
  (1 / `num_classes`) or below it, else None. `recalibrated`, the accuracy at the same
  size with batch-norm statistics recomputed there, tells a network that learnt but
  whose stored statistics have not settled (a very short run) from one that did not."""
  if accuracy is None or num_classes < 2:
    return None
  chance = 1 / num_classes
  if accuracy >= chance + margin:
    return None
  where = (f"is within {margin * 100:.0f} points of" if accuracy > chance - margin
           else "is below")
  head = (f"Warning: accuracy {accuracy:.2f} at {size} px {where} chance "
          f"(1/{num_classes} = {chance:.2f})")
  if recalibrated is not None and recalibrated >= chance + margin:
    return (f"{head} with the batch-norm statistics training stored, but {recalibrated:.2f} with "
            f"them recomputed at {size} px: the stored statistics have not settled (a short "
            "run), so read the analyses below with the recalibrated control in mind.")
  return (f"{head}: the network has not learnt the task, and the analyses below describe an "
          "untrained network.")
