"""FixRes's fix for the train/test resolution discrepancy: a short fine-tune at the test size.

Touvron et al. (2019) keep the convolutional weights and fine-tune only the classifier
and the batch-norm layers at the test resolution, on training images prepared as test
images are (the whole image resized, no random-resized-crop; flips kept):

    run_ft = finetune(run, size=40, images=train_images, labels=train_labels,
                      steps=32, lr=0.01)
    run_ft.predict(test_images, 40)

Batch norm runs in training mode during the fine-tune, as it did in training; the
population statistics are then recomputed exactly at the size (`progressive.training.recalibrate`),
so `run_ft` is to be compared with the recalibrated run at the same size (what the
fine-tune adds beyond new statistics), and with a fine-tune at the training size (what
a few more steps add anyway).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from progressive.data.resize import preprocess

TRAINABLE = ("head", "bn")  # Parameter-tree keys whose subtrees the fine-tune trains.


def trainable_mask(params: Mapping[str, Any]) -> Any:
  """A tree like `params`: True for the classifier (`head`) and every batch-norm layer's
  scale and bias (`bn`), False for the convolutions."""

  def mark(tree, inside: bool):
    if isinstance(tree, Mapping):
      return {k: mark(v, inside or k in TRAINABLE) for k, v in tree.items()}
    return inside

  return mark(params, False)


@functools.lru_cache(maxsize=32)
def _finetune_step(model, mean, std, size: int, flip: bool, lr: float, momentum: float,
                   has_stats: bool):
  """The fine-tune's optimiser and jitted step, one pair per model and settings in a
  process (`models.build` makes one module per architecture), so the runs of a sweep
  share the compiled step."""
  tx = optax.multi_transform(
      {True: optax.sgd(lr, momentum=momentum), False: optax.set_to_zero()}, trainable_mask)
  apply_fn = model.apply

  @jax.jit
  def step(params, stats, opt_state, batch, labels, key):
    inputs = preprocess(batch, size, mean, std)
    if flip:
      flipped = jax.random.bernoulli(key, 0.5, (inputs.shape[0], 1, 1, 1))
      inputs = jnp.where(flipped, inputs[:, :, ::-1], inputs)

    def loss_fn(params):
      variables = {"params": params, **({"batch_stats": stats} if has_stats else {})}
      if has_stats:
        logits, updates = apply_fn(variables, inputs, train=True, mutable=["batch_stats"])
      else:
        logits, updates = apply_fn(variables, inputs, train=True), {}
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates.get("batch_stats", stats)

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  return tx, step


def finetune(run, size: int, images: np.ndarray, labels: np.ndarray, *, steps: int,
             lr: float, batch_size: int = 128, momentum: float = 0.9, flip: bool = True,
             seed: int = 0, calibration: np.ndarray | None = None):
  """`run` with its classifier and batch-norm parameters fine-tuned at `size` for `steps`
  SGD steps (constant `lr`, `momentum`) on uint8 training `images` `[N, S, S, 3]` zoomed
  whole to `size` (random horizontal flips with `flip`), batches drawn in a fresh
  permutation each epoch (`seed`); then batch-norm statistics recomputed at `size` from
  `calibration` (default: the first 1024 of `images`). Convolution weights stay as they
  were. A run without batch norm has only its classifier trained."""
  if steps < 1:
    raise ValueError(f"finetune needs steps >= 1, got {steps}.")
  images, labels = np.asarray(images), np.asarray(labels)
  batch_size = min(batch_size, len(images))
  if not batch_size:
    raise ValueError("finetune needs at least one training image.")
  params = run.variables["params"]
  stats = run.variables.get("batch_stats", {})
  tx, step = _finetune_step(run.model, tuple(run.info.mean), tuple(run.info.std), int(size),
                            bool(flip), float(lr), float(momentum), bool(stats))

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  opt_state = tx.init(params)
  order, cursor = rng.permutation(len(images)), 0
  for _ in range(steps):
    if cursor + batch_size > len(order):
      order, cursor = rng.permutation(len(images)), 0
    index = np.sort(order[cursor:cursor + batch_size])
    cursor += batch_size
    key, sub = jax.random.split(key)
    batch = jax.device_put(images[index], run.device)
    params, stats, opt_state, _ = step(params, stats, opt_state, batch,
                                       jax.device_put(labels[index], run.device), sub)
  tuned = dataclasses.replace(run, variables={**run.variables, "params": params})
  return tuned.recalibrated(int(size), images[:1024] if calibration is None else calibration)
