"""Optax optimisers whose learning rate and momentum follow schedules on the device.

`optax.inject_hyperparams` evaluates the schedules from the optimiser's own step count
inside the compiled step, so the host never feeds a value per step, and the current
values sit in `opt_state.hyperparams` for logging.

The learning rate is `lr_scale * lr_fn(step)`, with `lr_scale` (the one-cycle peak,
`config.opt.lr_max`) held in `opt_state.hyperparams` as a value, not baked into the
program as a constant: every point of a learning-rate grid runs the same compiled
training step, so a tuning sweep with a persistent compilation cache compiles it once
per architecture and input size instead of once per rate.

Fine-tuning (`FineTuning`, from the stages' `frozen`, `reset_opt` and `lr_body_div`)
splits the parameters in two groups as fastai's `vision_learner` does: the head (the
module named `head`) and the body (everything else). The body's updates are the head's
scaled by `1 / lr_body_div` (its learning rate, weight decay included); in a frozen
stage they are zero and its optimiser state is kept as it was (fastai's `freeze`: no
step), except for the body's normalisation layers with `opt.train_bn` (fastai's
`train_bn`); `reset_opt` restarts the optimiser state (moments, Adam's count) at a
stage's first step, as fastai's `freeze` and `unfreeze` clear it. All three follow the
optimiser's step count, so a run resumed mid-stage freezes as the stage says. The body's
gradients are still computed in a frozen stage: frozen and unfrozen stages of one shape
share one compiled step.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from progressive import schedules

OPTIMIZERS = ("sgd", "adamw")
HEAD = "head"  # The zoo's classifier module: the head of fine-tuning's split.


def _decay_mask(params):
  """Weight decay on kernels only (ndim > 1): not on biases or norm scales and shifts."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _sgd(learning_rate, lr_scale, momentum, weight_decay, nesterov):
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=_decay_mask),
      optax.sgd(learning_rate * lr_scale, momentum=momentum, nesterov=nesterov),
  )


def _adamw(learning_rate, lr_scale, momentum, weight_decay, b2, eps):
  return optax.adamw(
      learning_rate * lr_scale, b1=momentum, b2=b2, eps=eps, weight_decay=weight_decay,
      mask=_decay_mask,
  )


def param_groups(params) -> Any:
  """A tree like `params` naming each parameter's group: `"head"` (under the top-level
  module `head`), `"norm"` (a normalisation layer of the body: a module holding a
  `scale`, as Flax's BatchNorm does) or `"body"`."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  norms = {path[:-1] for path, _ in leaves if getattr(path[-1], "key", None) == "scale"}

  def group(path, _):
    if getattr(path[0], "key", None) == HEAD:
      return "head"
    return "norm" if path[:-1] in norms else "body"

  return jax.tree_util.tree_map_with_path(group, params)


@dataclasses.dataclass(frozen=True)
class FineTuning:
  """What the stages ask of the optimiser beyond the one-cycle, as functions of the
  global step (`schedules.stage_values`): `frozen` (the body takes no step), `reset`
  (the state restarts: a `reset_opt` stage's first step) and `body_lr` (the body's
  learning rate over the head's); `train_bn`: the body's norm layers train when frozen."""

  frozen: Callable
  reset: Callable
  body_lr: Callable
  train_bn: bool = True

  @classmethod
  def from_plan(cls, plan: Sequence[schedules.Stage], lr_body_div: float,
                train_bn: bool = True) -> "FineTuning | None":
    """The stages' fine-tuning, or None if they ask for none (the optimiser is then the
    plain one, its state as before fine-tuning existed)."""
    divs = [s.lr_body_div if s.lr_body_div is not None else lr_body_div for s in plan]
    if not any(s.frozen or s.reset_opt for s in plan) and all(d == 1 for d in divs):
      return None
    return cls(
        frozen=schedules.stage_values(plan, [s.frozen for s in plan]),
        reset=lambda count: jnp.isin(count, jnp.asarray([s.start for s in plan if s.reset_opt],
                                                        jnp.int32)),
        body_lr=schedules.stage_values(plan, [1.0 / d for d in divs]),
        train_bn=train_bn,
    )


def fine_tuned(tx: optax.GradientTransformation,
               fine_tuning: FineTuning) -> optax.GradientTransformation:
  """`tx` (an `optax.inject_hyperparams` optimiser, whose `count` is the global step)
  with `fine_tuning`'s groups, freezing and resets. Its state is `tx`'s own."""

  def update(grads, state, params=None):
    count = state.count
    frozen = fine_tuning.frozen(count)
    fresh = tx.init(params).inner_state
    state = state._replace(inner_state=jax.tree.map(
        lambda new, old: jnp.where(fine_tuning.reset(count), new, old), fresh, state.inner_state))
    updates, new_state = tx.update(grads, state, params)
    groups = param_groups(updates)
    held = jax.tree.map(lambda g: g == "body" or (g == "norm" and not fine_tuning.train_bn), groups)
    body_lr = fine_tuning.body_lr(count)

    def scale(update, group, hold):
      if group == "head":
        return update
      scaled = (update * body_lr).astype(update.dtype)
      return jnp.where(frozen, jnp.zeros_like(update), scaled) if hold else scaled

    updates = jax.tree.map(scale, updates, groups, held)
    held_state = optax.tree_utils.tree_map_params(
        tx, lambda _, hold: hold, new_state, held, transform_non_params=lambda _: False)
    new_state = jax.tree.map(lambda hold, new, old: jnp.where(frozen, old, new) if hold else new,
                             held_state, new_state, state)
    return updates, new_state

  return optax.GradientTransformation(tx.init, update)


def make_optimizer(
    config: Mapping[str, Any], lr_fn: Callable, momentum_fn: Callable, *, lr_scale: float = 1.0,
    fine_tuning: FineTuning | None = None,
) -> optax.GradientTransformation:
  """SGD (Nesterov optional) or AdamW with LR `lr_scale * lr_fn(step)` and scheduled
  momentum (Adam's beta1); with `fine_tuning`, its groups, freezing and resets (the
  module docstring).

  `config` is `config.opt`: `name`, `weight_decay`, `nesterov` (sgd), `b2` and `eps`
  (adamw). `lr_scale` is stored in the optimiser state (see the module docstring).
  """
  tx = _injected(config, lr_fn, momentum_fn, lr_scale)
  return tx if fine_tuning is None else fine_tuned(tx, fine_tuning)


def with_lr_scale(opt_state, lr_scale: float):
  """`opt_state` of a `make_optimizer` optimiser with its learning-rate scale set to
  `lr_scale`, as `make_optimizer(..., lr_scale=lr_scale)`'s `init` would have set it."""
  hyperparams = dict(opt_state.hyperparams)
  hyperparams["lr_scale"] = jnp.asarray(lr_scale, hyperparams["lr_scale"].dtype)
  return opt_state._replace(hyperparams=hyperparams)


def _injected(config, lr_fn, momentum_fn, lr_scale) -> optax.GradientTransformation:
  name = config["name"]
  if name == "sgd":
    return optax.inject_hyperparams(_sgd, static_args=("nesterov",))(
        learning_rate=lr_fn,
        lr_scale=lr_scale,
        momentum=momentum_fn,
        weight_decay=config["weight_decay"],
        nesterov=config["nesterov"],
    )
  if name == "adamw":
    return optax.inject_hyperparams(_adamw)(
        learning_rate=lr_fn,
        lr_scale=lr_scale,
        momentum=momentum_fn,
        weight_decay=config["weight_decay"],
        b2=config["b2"],
        eps=config["eps"],
    )
  raise ValueError(f"config.opt.name must be one of {OPTIMIZERS}, got {name!r}.")
