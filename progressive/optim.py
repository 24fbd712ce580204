"""Optax optimisers whose learning rate and momentum follow schedules on the device.

`optax.inject_hyperparams` evaluates the schedules from the optimiser's own step count
inside the compiled step, so the host never feeds a value per step, and the current
values sit in `opt_state.hyperparams` for logging.

The learning rate is `lr_scale * lr_fn(step)`, with `lr_scale` (the one-cycle peak,
`config.opt.lr_max`) held in `opt_state.hyperparams` as a value, not baked into the
program as a constant: every point of a learning-rate grid runs the same compiled
training step, so a tuning sweep with a persistent compilation cache compiles it once
per architecture and input size instead of once per rate.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")


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


def make_optimizer(
    config: Mapping[str, Any], lr_fn: Callable, momentum_fn: Callable, *, lr_scale: float = 1.0
) -> optax.GradientTransformation:
  """SGD (Nesterov optional) or AdamW with LR `lr_scale * lr_fn(step)` and scheduled
  momentum (Adam's beta1).

  `config` is `config.opt`: `name`, `weight_decay`, `nesterov` (sgd), `b2` and `eps`
  (adamw). `lr_scale` is stored in the optimiser state (see the module docstring).
  """
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
