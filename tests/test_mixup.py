"""Label smoothing, mixup and CutMix: fastai 2.7's numbers, the draws the step makes on
each device, and a resumed run that repeats them.

fastai's outputs are in tests/fixtures/mixup.npz (tests/make_mixup_fixtures.py, fastai
2.7.18 under torch 1.13); images there are NCHW.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from progressive import config as config_lib
from progressive import models, optim, schedules
from progressive.config import ConfigError, validate
from progressive.data.resize import preprocess
from progressive.training import mixing, parallel, steps, train
from tests.runs import Killed, assert_same_params, die_after_save, train_rows

FIXTURE = np.load(pathlib.Path(__file__).parent / "fixtures" / "mixup.npz")
MEAN, STD = (0.5,) * 3, (0.29,) * 3
NUM_CLASSES = 12
draw = jax.jit(mixing.draw, static_argnums=(1, 2, 3, 4, 5))  # One compile per shape, not per op.
mix_images = jax.jit(mixing.mix_images)
OBJECTIVE = mixing.Objective(label_smoothing=0.1, mixup_alpha=0.4, cutmix_alpha=1.0, seed=5)
# A shard of the training step's batch below (4 images of 8 px) under OBJECTIVE.
DRAW_BOTH = (4, 8, 8, OBJECTIVE.mixup_alpha, OBJECTIVE.cutmix_alpha)


def _nhwc(images):
  return np.transpose(images, (0, 2, 3, 1))


def _mix(lam, perm, box=(0, 0, 0, 0), cutmix=False):
  return mixing.Mix(jnp.asarray(lam, jnp.float32), jnp.asarray(perm, jnp.int32),
                    jnp.asarray(box, jnp.int32), jnp.asarray(cutmix))


# --- fastai's numbers ----------------------------------------------------------------


def test_label_smoothing_equals_fastai_optax_and_the_formula():
  logits, labels, eps = FIXTURE["logits"], FIXTURE["labels"], float(FIXTURE["smooth_eps"])
  ours = np.asarray(mixing.loss(mixing.Objective(label_smoothing=eps), logits, labels))
  np.testing.assert_allclose(ours, FIXTURE["smooth_losses"], rtol=1e-6)
  np.testing.assert_allclose(ours.mean(), FIXTURE["smooth_loss"], rtol=1e-6)
  one_hot = jax.nn.one_hot(labels, logits.shape[1])
  np.testing.assert_allclose(
      ours, optax.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, eps)), rtol=1e-6)
  # fastai's formula by hand, in float64: eps / K * sum(-log p) + (1 - eps) * -log p[y].
  x = logits.astype(np.float64)
  log_p = x - x.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  by_hand = eps / x.shape[1] * -log_p.sum(1) + (1 - eps) * -log_p[np.arange(len(x)), labels]
  np.testing.assert_allclose(ours, by_hand, rtol=1e-6)
  assert not np.allclose(ours, mixing.loss(mixing.PLAIN, logits, labels), rtol=1e-3)


def test_mixup_images_and_smoothed_loss_equal_fastai():
  mix = _mix(FIXTURE["mixup_lam"], FIXTURE["mixup_perm"])
  images = _nhwc(FIXTURE["mixup_images"])
  np.testing.assert_allclose(mixing.mix_images(mix, images), _nhwc(FIXTURE["mixup_out"]),
                             rtol=1e-6, atol=1e-6)
  # fastai's MixUp over LabelSmoothingCrossEntropy lerps the two labels' losses; ours
  # smooths the mixed targets: the same number.
  objective = mixing.Objective(label_smoothing=float(FIXTURE["smooth_eps"]))
  loss = mixing.loss(objective, FIXTURE["logits"], FIXTURE["labels"], mix).mean()
  np.testing.assert_allclose(loss, FIXTURE["mixup_smooth_loss"], rtol=1e-6)
  # The image's own label always has the larger weight: lam >= 1/2.
  np.testing.assert_array_equal(mixing.larger_label(mix, FIXTURE["labels"]), FIXTURE["labels"])


def test_cutmix_box_and_images_equal_fastai():
  for (lam, cy, cx, height, width), expected in zip(FIXTURE["box_cases"], FIXTURE["box_expected"]):
    box, _ = mixing.cutmix_box(jnp.float32(lam), int(cy), int(cx), int(height), int(width))
    np.testing.assert_array_equal(box, expected, err_msg=f"lam={lam}, centre=({cy}, {cx})")
  images = _nhwc(FIXTURE["mixup_images"])
  _, height, width, _ = images.shape
  box, lam = mixing.cutmix_box(FIXTURE["cutmix_beta_lam"][0], *FIXTURE["cutmix_centre"],
                               height, width)
  np.testing.assert_array_equal(box, FIXTURE["cutmix_box"])
  np.testing.assert_allclose(lam, FIXTURE["cutmix_lam"][0], rtol=1e-6)
  perm = FIXTURE["cutmix_perm"]
  mix = _mix(np.full(len(perm), lam), perm, box, cutmix=True)
  np.testing.assert_array_equal(mixing.mix_images(mix, images), _nhwc(FIXTURE["cutmix_out"]))
  # The box covers 64% of the image: accuracy counts the partner's label.
  assert lam < 0.5
  labels = np.arange(len(perm)) + 3
  np.testing.assert_array_equal(mixing.larger_label(mix, labels), labels[perm])


# --- The draws -----------------------------------------------------------------------


def test_mixup_draw_is_what_the_images_get():
  key = mixing.device_key(3, 17, 2)
  images = np.random.default_rng(0).normal(size=(2048, 4, 4, 3)).astype(np.float32)
  mix = draw(key, 2048, 4, 4, 0.4, 0.0)
  lam, perm = np.asarray(mix.lam), np.asarray(mix.perm)
  assert sorted(perm) == list(range(2048)) and not bool(mix.cutmix)
  expected = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[perm]
  np.testing.assert_allclose(mix_images(mix, images), expected, rtol=1e-6, atol=1e-6)
  targets = np.zeros((8, 8), np.float32)
  np.add.at(targets, (np.arange(8), np.arange(8)), lam[:8])
  np.add.at(targets, (np.arange(8), perm[:8] % 8), 1 - lam[:8])
  np.testing.assert_allclose(mixing.mix_labels(mix, np.arange(2048) % 8, 8)[:8], targets,
                             rtol=1e-6, atol=1e-7)
  # lam is max(lam, 1 - lam) of Beta(0.4, 0.4): its mean and spread against numpy's
  # sampler (0.84 and 0.15; Beta(1, 1) would give 0.75 and 0.14).
  reference = np.random.default_rng(0).beta(0.4, 0.4, 200_000)
  reference = np.maximum(reference, 1 - reference)
  assert np.all((lam >= 0.5) & (lam <= 1.0))
  assert abs(lam.mean() - reference.mean()) < 0.015 and abs(lam.std() - reference.std()) < 0.015
  # Another step, device or seed: another draw; the same three numbers: the same draw.
  for seed, step, device in [(3, 18, 2), (3, 17, 1), (4, 17, 2)]:
    other = mixing.device_key(seed, step, device)
    assert not np.array_equal(draw(other, 2048, 4, 4, 0.4, 0.0).lam, lam)
  np.testing.assert_array_equal(draw(mixing.device_key(3, 17, 2), 2048, 4, 4, 0.4, 0.0).lam, lam)


def test_both_alphas_pick_mixup_or_cutmix_per_draw():
  """Each draw is either mixup's or CutMix's (probability 1/2), and the images and lam
  are what it says: the blend, or the partner's pixels in the box with lam the area left."""
  images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
  kinds, boxes = [], set()
  for step in range(64):
    mix = draw(mixing.device_key(0, step, 0), *DRAW_BOTH)
    lam, perm, out = np.asarray(mix.lam), np.asarray(mix.perm), np.asarray(mix_images(mix, images))
    kinds.append(bool(mix.cutmix))
    if kinds[-1]:
      top, bottom, left, right = (int(v) for v in mix.box)
      assert 0 <= top <= bottom <= 8 and 0 <= left <= right <= 8
      boxes.add((top, bottom, left, right))
      np.testing.assert_allclose(lam, 1 - (bottom - top) * (right - left) / 64, rtol=1e-6)
      expected = images.copy()
      expected[:, top:bottom, left:right] = images[perm][:, top:bottom, left:right]
      np.testing.assert_array_equal(out, expected)
    else:
      assert np.all(lam >= 0.5) and len(set(lam.tolist())) > 1
      blend = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[perm]
      np.testing.assert_allclose(out, blend, rtol=1e-6, atol=1e-6)
  assert 16 <= sum(kinds) <= 48 and len(boxes) > 6  # Boxes of many sizes and places.


# --- The training step on 4 devices (conftest's fake host) ---------------------------



@pytest.fixture(scope="module")
def step_results():
  """A one-conv network's first step on 16 images over 4 devices under the plain
  objective and under `OBJECTIVE`, the steps' programs as lowered for zero alphas and
  smoothing (another seed) and for the plain objective; and what went into them."""
  assert jax.device_count() == 4, "conftest sets a fake 4-device host"
  config = default.get_config("smoke")
  config.model.channels = (8,)
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
           "label": rng.integers(0, NUM_CLASSES, (16,), dtype=np.int32)}
  sharded = parallel.shard_batch(batch, parallel.batch_sharding(mesh))
  model = models.build(config.model, num_classes=NUM_CLASSES, bn_axis_name=steps.AXIS)
  plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
  tx = optim.make_optimizer(config.opt, *schedules.make_schedules(plan, config.opt.lr_max))
  state = jax.device_get(steps.create_train_state(model, tx, jax.random.key(0), 8))
  results = {}
  for name, objective in [("plain", mixing.PLAIN), ("off", mixing.Objective(seed=5)),
                          ("mixed", OBJECTIVE)]:
    step = parallel.make_train_step(mesh, MEAN, STD, objective=objective)
    replicated = jax.device_put(state, parallel.replicated(mesh))  # The step donates it.
    results[name + "_program"] = step.lower(replicated, sharded, 8).as_text()
  new, metrics = step(replicated, sharded, 8)
  results["mixed"] = jax.device_get((new.params, new.batch_stats, metrics))
  return config, state, batch, results


def test_zero_alphas_and_smoothing_are_the_plain_step(step_results):
  *_, results = step_results
  # The same program, so bitwise the same outputs (OBJECTIVE's is another).
  assert results["off_program"] == results["plain_program"] != results["mixed_program"]


def test_each_device_mixes_its_shard_with_its_own_draw(step_results):
  """The step's loss equals one computed outside it: shard i mixed by the draw of
  `device_key(seed, step, i)`, the model run on the four mixed shards together."""
  config, state, batch, results = step_results
  model = models.build(config.model, num_classes=NUM_CLASSES)
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  @jax.jit
  def loss_with(mixes):
    """The mean loss with shard i mixed by `mixes[i]`."""
    shard = lambda x: x.reshape(4, 4, *x.shape[1:])
    images = jax.vmap(mixing.mix_images)(mixes, shard(preprocess(batch["image"], 8, MEAN, STD)))
    logits, _ = model.apply(variables, images.reshape(16, 8, 8, 3), train=True,
                            mutable=["batch_stats"])
    losses = jax.vmap(lambda *args: mixing.loss(OBJECTIVE, *args))(
        shard(logits), shard(batch["label"]), mixes)
    return losses.mean()

  mixes = [draw(mixing.device_key(5, int(state.step), i), *DRAW_BOTH) for i in range(4)]
  expected = loss_with(jax.tree.map(lambda *x: jnp.stack(x), *mixes))
  np.testing.assert_allclose(results["mixed"][2]["loss"], expected, rtol=1e-5)
  assert len({np.asarray(m.perm).tobytes() for m in mixes}) > 1  # The shards' own draws.
  same_draw = loss_with(jax.tree.map(lambda x: jnp.stack([x] * 4), mixes[0]))
  assert abs(same_draw - expected) > 1e-3


# --- Config --------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,pattern", [
    ("data.mixup_alpha", -0.1,
     r"config\.data\.mixup_alpha must be a number >= 0 \(0: off\), got -0\.1"),
    ("data.cutmix_alpha", -1.0, r"config\.data\.cutmix_alpha must be a number >= 0"),
    ("opt.label_smoothing", 1.0,
     r"config\.opt\.label_smoothing must be a number in \[0, 1\) \(0: off\), got 1\.0"),
    ("opt.label_smoothing", -0.05, r"config\.opt\.label_smoothing must be a number in \[0, 1\)"),
])
def test_bad_values_name_the_field(field, value, pattern):
  config = default.get_config("smoke")
  group, name = field.split(".")
  config[group][name] = value
  with pytest.raises(ConfigError, match=pattern):
    validate(config, num_devices=4)


def test_a_config_stored_before_these_fields_trains_as_before():
  stored = json.loads(default.get_config("smoke").to_json())
  del stored["data"]["mixup_alpha"], stored["data"]["cutmix_alpha"]
  del stored["opt"]["label_smoothing"]
  config = ml_collections.ConfigDict(config_lib.with_defaults(stored))
  assert mixing.Objective.from_config(config) == mixing.PLAIN
  assert config_lib.FIELDS_BY_NAME["data.mixup_alpha"].on_resume == "fixed"


# --- A resumed run -------------------------------------------------------------------


@pytest.mark.slow  # Three short runs, the last two reading their programs from the cache (10 s).
def test_a_resumed_run_with_mixup_ends_bitwise_as_one_without_a_stop(
    smoke_config, tmp_path, monkeypatch, compilation_cache):
  config = smoke_config
  config.compilation_cache_dir = compilation_cache
  config.data.mixup_alpha = 0.4
  config.data.cutmix_alpha = 1.0
  config.opt.label_smoothing = 0.1
  config.stages = (dict(size=16, steps=8),)
  config.eval_sizes = (16,)
  config.activation_stats_every = 0
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  objectives, make_train_step = [], parallel.make_train_step
  monkeypatch.setattr(parallel, "make_train_step",
                      lambda *args, **kwargs: objectives.append(kwargs["objective"])
                      or make_train_step(*args, **kwargs))
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
  assert objectives == [mixing.Objective(0.1, 0.4, 1.0, seed=config.seed)]  # What the run fits.
  monkeypatch.undo()
  die_after_save(monkeypatch, 4)  # Mid-way through the stage.
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(tmp_path / "resumed"))
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed.step == reference.step == 8
  assert_same_params(resumed.state.params, reference.state.params)
  assert_same_params(resumed.state.batch_stats, reference.state.batch_stats)
  assert train_rows(tmp_path / "resumed") == train_rows(tmp_path / "reference")
