"""The train state and the pure steps: training, evaluation, activation statistics.

Each step is a function of the state and one batch (uint8 images zoomed and normalised
on the device, `progressive.data.resize.preprocess`). None knows about meshes: the
data-parallel wrappers are in `progressive.training.parallel`.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from progressive.data.resize import preprocess
from progressive.training import activations, mixing

AXIS = "batch"  # The data-parallel mesh axis that gradients and BN statistics average over.


class TrainState(train_state.TrainState):
  batch_stats: Any = None


@functools.partial(jax.jit, static_argnames=("model", "image_size"))
def _init_variables(model, rng: jax.Array, image_size: int):
  """The model's variables as one compiled program, cached by the (hashable) module and
  size: run op by op, a deep network's init compiles hundreds of small programs (most of
  a ResNet-50's start-up on a CPU)."""
  return model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))


def create_train_state(model, tx, rng: jax.Array, image_size: int) -> TrainState:
  """Initialises parameters (float32) and batch statistics at `image_size`."""
  variables = _init_variables(model, rng, image_size)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=tx,
  )


def all_finite(tree) -> jax.Array:
  """Whether every element of every array in `tree` is finite (a boolean scalar)."""
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    batch,
    *,
    size: int,
    mean,
    std,
    skip_nonfinite: bool = False,
    objective: mixing.Objective = mixing.PLAIN,
    axis_name: str = AXIS,
):
  """One SGD step on this device's shard of the global batch.

  The loss is the mean over the global batch (`pmean` of the local means), so its
  gradient with respect to the replicated parameters is the average of the per-device
  gradients: under `shard_map`, JAX sums the cotangents of a replicated input over the
  axis itself. Batch-norm statistics are reduced over the axis by the model
  (`bn_axis_name`). N devices thus compute what one device would on the whole batch.
  With `skip_nonfinite`, a step whose loss, gradients, updated parameters, batch
  statistics or optimiser state are not finite (a finite gradient times a huge learning
  rate overflows) leaves the parameters, batch statistics and optimiser state as they
  were (only `step` advances) and counts itself in the `skipped` metric.
  `objective` smooths the labels and mixes the shard's images (mixup or CutMix, drawn
  from the seed, `state.step` and the device's index: `progressive.training.mixing`);
  accuracy then counts the label with the larger weight of each mixed target.
  Returns the new state and the step's metrics (scalars, left on the device).
  """
  images = preprocess(batch["image"], size, mean, std)
  labels = counted = batch["label"]
  mix = None
  if objective.mixes:
    key = mixing.device_key(objective.seed, state.step, jax.lax.axis_index(axis_name))
    mix = mixing.draw(key, *images.shape[:3], objective.mixup_alpha, objective.cutmix_alpha)
    images, counted = mixing.mix_images(mix, images), mixing.larger_label(mix, labels)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        images,
        train=True,
        mutable=["batch_stats"],
    )
    loss = mixing.loss(objective, logits, labels, mix).mean()
    return jax.lax.pmean(loss, axis_name), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  hyperparams = new_state.opt_state.hyperparams
  metrics = {
      "loss": loss,
      "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == counted), axis_name),
      "lr": hyperparams["learning_rate"] * hyperparams["lr_scale"],
      "momentum": hyperparams["momentum"],
  }
  if skip_nonfinite:
    finite = all_finite((loss, grads, new_state.params, new_state.batch_stats, new_state.opt_state))
    kept = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        (new_state.params, new_state.batch_stats, new_state.opt_state),
        (state.params, state.batch_stats, state.opt_state),
    )
    new_state = new_state.replace(params=kept[0], batch_stats=kept[1], opt_state=kept[2])
    metrics["skipped"] = 1 - finite.astype(jnp.int32)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, size: int, mean, std, tta: str = "none"):
  """Per-example predictions and losses at `size` (no statistics updated). `tta="flip"`:
  of the mean softmax over each image and its horizontal mirror (the loss is minus the
  log of that mean at the label)."""
  images = preprocess(batch["image"], size, mean, std)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = state.apply_fn(variables, images)
  if tta == "flip":  # The log of the mean softmax: its softmax is that mean.
    mirrored = state.apply_fn(variables, images[:, :, ::-1])
    pair = jnp.stack([jax.nn.log_softmax(logits), jax.nn.log_softmax(mirrored)])
    logits = jax.nn.logsumexp(pair, axis=0) - jnp.log(2.0)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return {"prediction": jnp.argmax(logits, -1), "loss": loss}


def activation_stats_step(apply_fn, state: TrainState, batch, *, size: int, mean, std):
  """fastai's ActivationStats of every layer with parameters, and of every ReLU's output
  (the dead-unit measure, layers `<module>/relu`), on a training batch, batch norm in
  training mode (`apply_fn` of a model built without `bn_axis_name`)."""
  images = preprocess(batch["image"], size, mean, std)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return activations.activation_stats(apply_fn, variables, images, train=True, relu=True)
