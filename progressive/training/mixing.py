"""The training objective's targets: label smoothing, mixup and CutMix, on the device.

As fastai 2.7 defines them (`fastai.callback.mixup`, `fastai.losses`):

- **Label smoothing** (`LabelSmoothingCrossEntropy(eps)`, optax's `smooth_labels`): the
  cross-entropy against `(1 - eps) * one_hot(y) + eps / K`.
- **Mixup** (`MixUp(alpha)`): a weight per image, `lam ~ Beta(alpha, alpha)` then
  `max(lam, 1 - lam)`, and a permutation of the batch; the image becomes
  `lam * x + (1 - lam) * x[perm]` and the loss `lam * loss(y) + (1 - lam) * loss(y[perm])`.
- **CutMix** (`CutMix(alpha)`): one `lam ~ Beta(alpha, alpha)` for the batch; a box of
  `round(side * sqrt(1 - lam))` px per axis centred on a uniform pixel (half-widths
  floored, clipped to the image) is pasted from `x[perm]`, and the loss weight of the
  image's own label is the area left, `1 - box area / image area`.

Both losses are the cross-entropy against the mixed one-hot targets, and as fastai's
`MixHandler` mixes the losses of a `y_int` loss such as `LabelSmoothingCrossEntropy`,
smoothing applies to the mixed targets (the two are linear, so either order is the
same). fastai has no rule for both at once; with both alphas positive each shard takes
one of them with probability 1/2 (timm's `switch_prob`).

The draws are a function of the run's seed, the step and the device (`device_key`), so a
resumed run repeats them. Each device mixes its own shard: the permutation pairs images
of one shard, and lam, the box and the choice are the shard's own. No image crosses
devices, and N devices mix differently from one device on the same global batch.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the training step fits (`config.opt.label_smoothing`, `config.data.mixup_alpha`,
  `config.data.cutmix_alpha`); `seed` (the run's; 0 where nothing is mixed, so runs at
  other seeds share the step) keys the draws. Frozen: the jitted step closes over it."""

  label_smoothing: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> "Objective":
    """The objective a run's config asks for."""
    mixup, cutmix = float(config.data.mixup_alpha), float(config.data.cutmix_alpha)
    seed = int(config.seed) if mixup > 0 or cutmix > 0 else 0  # Unused unless mixing.
    return cls(float(config.opt.label_smoothing), mixup, cutmix, seed)

  @property
  def mixes(self) -> bool:
    """Whether the images are mixed (mixup, CutMix or both)."""
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


PLAIN = Objective()  # The cross-entropy of the integer labels, nothing mixed.


@struct.dataclass
class Mix:
  """One shard's draw: `lam` `[B]` is each image's weight on its own label, `perm` `[B]`
  its partner's index, `box` the `(top, bottom, left, right)` of the pasted region
  (rows `top:bottom`, columns `left:right`), `cutmix` whether the box is pasted (True)
  or the images blended by `lam` (False)."""

  lam: jax.Array
  perm: jax.Array
  box: jax.Array
  cutmix: jax.Array


def device_key(seed: int, step, index) -> jax.Array:
  """The key of the draws of device `index` (its position on the data axis) at `step`
  (the train state's count of steps taken, restored with a checkpoint)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), index)


def cutmix_box(lam, cy, cx, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """fastai's `CutMix.rand_bbox` centred on pixel `(cy, cx)`: the box's `(top, bottom,
  left, right)` (int32) and the area-corrected lam, `1 - box area / (height * width)`."""
  cut = jnp.sqrt(1.0 - lam)
  cut_h = jnp.round(height * cut).astype(jnp.int32)
  cut_w = jnp.round(width * cut).astype(jnp.int32)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  area = ((bottom - top) * (right - left)).astype(jnp.float32)
  return jnp.stack([top, bottom, left, right]), 1.0 - area / (height * width)


def symmetric_beta(key: jax.Array, alphas) -> jax.Array:
  """A draw of Beta(a, a) for each `a` of `alphas` `[N]`: `G1 / (G1 + G2)` of two gamma
  draws, computed in log space as `jax.random.beta` does, with one sampler for all (a
  quarter of the compile time of one `jax.random.beta` per alpha)."""
  alphas = jnp.asarray(alphas, jnp.float32)
  log_gammas = jax.random.loggamma(key, jnp.stack([alphas, alphas]))
  return jax.nn.sigmoid(log_gammas[0] - log_gammas[1])


def draw(key: jax.Array, batch_size: int, height: int, width: int, mixup_alpha: float,
         cutmix_alpha: float) -> Mix:
  """One shard's mixup or CutMix draw (at least one alpha positive): mixup's lam per
  image, CutMix's box and lam, and with both, which of them (probability 1/2)."""
  key_perm, key_beta, key_y, key_x, key_choice = jax.random.split(key, 5)
  perm = jax.random.permutation(key_perm, batch_size)
  mixup, cutmix = mixup_alpha > 0, cutmix_alpha > 0
  alphas = ([mixup_alpha] * batch_size if mixup else []) + ([cutmix_alpha] if cutmix else [])
  betas = symmetric_beta(key_beta, alphas)  # Mixup's per image, then CutMix's.
  if mixup:
    lam = jnp.maximum(betas[:batch_size], 1.0 - betas[:batch_size])
  if not cutmix:
    return Mix(lam, perm, jnp.zeros(4, jnp.int32), jnp.asarray(False))
  cy = jax.random.randint(key_y, (), 0, height)
  cx = jax.random.randint(key_x, (), 0, width)
  box, cut_lam = cutmix_box(betas[-1], cy, cx, height, width)
  if not mixup:
    return Mix(jnp.full((batch_size,), cut_lam), perm, box, jnp.asarray(True))
  chosen = jax.random.bernoulli(key_choice)
  return Mix(jnp.where(chosen, cut_lam, lam), perm, box, chosen)


def mix_images(mix: Mix, images: jax.Array) -> jax.Array:
  """`[B, H, W, C]` images mixed as `mix` says: `lam * x + (1 - lam) * x[perm]`, or
  `x` with `x[perm]` inside the box."""
  partner = images[mix.perm]
  lam = mix.lam[:, None, None, None]
  blended = lam * images + (1.0 - lam) * partner
  rows = jnp.arange(images.shape[1])[:, None]
  cols = jnp.arange(images.shape[2])[None, :]
  top, bottom, left, right = mix.box
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  pasted = jnp.where(inside[None, :, :, None], partner, images)
  return jnp.where(mix.cutmix, pasted, blended)


def mix_labels(mix: Mix, labels: jax.Array, num_classes: int) -> jax.Array:
  """`[B, num_classes]` targets: `lam * one_hot(y) + (1 - lam) * one_hot(y[perm])`."""
  lam = mix.lam[:, None]
  return (lam * jax.nn.one_hot(labels, num_classes)
          + (1.0 - lam) * jax.nn.one_hot(labels[mix.perm], num_classes))


def larger_label(mix: Mix, labels: jax.Array) -> jax.Array:
  """The label with the larger weight in each mixed target (the image's own at a tie):
  what training accuracy is counted against."""
  return jnp.where(mix.lam >= 0.5, labels, labels[mix.perm])


def loss(objective: Objective, logits: jax.Array, labels: jax.Array,
         mix: Mix | None = None) -> jax.Array:
  """Per-example losses `[B]` of `logits` under `objective`, the images mixed by `mix`
  (None: not mixed). Neither smoothing nor mix: the integer-label cross-entropy."""
  if mix is None and not objective.label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  num_classes = logits.shape[-1]
  if mix is None:
    targets = jax.nn.one_hot(labels, num_classes)
  else:
    targets = mix_labels(mix, labels, num_classes)
  targets = optax.smooth_labels(targets, objective.label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)
