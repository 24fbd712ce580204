"""Flip test-time augmentation: in training's evaluation (`config.eval_tta="flip"`,
`steps.eval_step`) and in the analysis (`ensemble.flip_tta`), the mean softmax over each
image and its horizontal mirror."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from progressive import analysis
from progressive.analysis import ensemble, report
from progressive.config import ConfigError, validate
from progressive.data import pipeline
from progressive.training import steps, train
from progressive.training.metrics import read_rows

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def softmax(logits):
  """numpy's softmax over the last axis (the reference, independent of jax.nn)."""
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def mirror(images):
  return np.asarray(images)[:, :, ::-1]


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)


def linear_predict(seed=1, classes=5):
  """images -> logits: a fixed random linear map of the pixels (it sees the mirror)."""
  weights = np.random.default_rng(seed).normal(size=(8 * 8 * 3, classes)) / 100

  def predict(images):
    return np.asarray(images, np.float64).reshape(len(images), -1) @ weights
  return predict


def test_flip_tta_of_a_mirror_blind_predictor_is_its_softmax(images):
  seen = linear_predict()
  blind = lambda x: seen(np.asarray(x, np.float64) + mirror(x))  # Symmetrised input.
  np.testing.assert_allclose(ensemble.flip_tta(blind, images), softmax(blind(images)), atol=1e-6)
  # A predictor that sees the mirror: the mean of the two softmaxes, not the plain one.
  tta = ensemble.flip_tta(seen, images)
  np.testing.assert_allclose(tta, (softmax(seen(images)) + softmax(seen(mirror(images)))) / 2,
                             atol=1e-6)
  assert np.abs(tta - softmax(seen(images))).max() > 0.01


def test_flip_tta_summary_and_its_report_lines(images):
  seen, labels = linear_predict(), np.arange(6) % 5
  info = pipeline.DatasetInfo("toy", 5, tuple("abcde"), 8, 6, 6, MEAN, STD)
  summary = ensemble.flip_tta_summary(seen, images, labels, info)
  plain = np.mean(np.argmax(seen(images), -1) == labels)
  both = np.mean(np.argmax(softmax(seen(images)) + softmax(seen(mirror(images))), -1) == labels)
  assert (summary["single"]["all"], summary["tta"]["all"]) == (plain, both)
  assert summary["gain"] == both - plain and summary["num_images"] == 6
  lines = report._flip_tta_lines({"size": 8, **summary}, ["all"])
  assert f"| 8 px | {plain:.3f} |" in lines and f"| 8 px, flip TTA | {both:.3f} |" in lines
  assert f"Gain of flip TTA: {both - plain:+.3f}." in lines


class Linear(nn.Module):
  """A dense layer over the flattened image; `symmetric` first averages it with its mirror."""

  symmetric: bool = False

  @nn.compact
  def __call__(self, x):
    if self.symmetric:
      x = (x + x[:, :, ::-1]) / 2
    return nn.Dense(5)(x.reshape(len(x), -1))


def eval_outputs(model, images, labels, tta):
  # Jitted, as training runs them (eagerly, each operation would be its own compile).
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  state = steps.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1),
                                  batch_stats={})
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  step = functools.partial(steps.eval_step, size=8, mean=MEAN, std=STD, tta=tta)
  out = jax.jit(step)(state, batch)
  inputs = (np.asarray(images, np.float32) / 255 - MEAN) / STD
  apply = jax.jit(model.apply)
  logits = lambda x: np.asarray(apply({"params": params}, jnp.asarray(x, jnp.float32)))
  return jax.device_get(out), logits(inputs), logits(mirror(inputs))


def test_eval_step_flip_tta(images):
  labels = np.arange(6) % 5
  blind = eval_outputs(Linear(symmetric=True), images, labels, "flip")[0]
  plain = eval_outputs(Linear(symmetric=True), images, labels, "none")[0]
  np.testing.assert_array_equal(blind["prediction"], plain["prediction"])
  np.testing.assert_allclose(blind["loss"], plain["loss"], rtol=1e-5)
  out, logits, mirrored = eval_outputs(Linear(), images, labels, "flip")
  mean = (softmax(logits) + softmax(mirrored)) / 2
  np.testing.assert_array_equal(out["prediction"], np.argmax(mean, -1))
  np.testing.assert_allclose(out["loss"], -np.log(mean[np.arange(6), labels]), rtol=1e-5)
  plain = eval_outputs(Linear(), images, labels, "none")[0]
  assert np.abs(out["loss"] - plain["loss"]).max() > 1e-4


def test_eval_tta_is_checked(smoke_config):
  smoke_config.eval_tta = "mirror"
  with pytest.raises(ConfigError, match=r"config\.eval_tta must be one of \['flip', 'none'\], "
                     r"got 'mirror'"):
    validate(smoke_config, jax.device_count())


@pytest.mark.slow
def test_training_evaluates_with_flip_tta_as_the_analysis_computes_it(smoke_config, tmp_path):
  """The eval rows of a run with eval_tta="flip" against `ensemble.flip_tta` of its
  checkpoint on the same test images, and that against the two softmaxes by hand."""
  smoke_config.stages = (dict(size=32, steps=4),)
  smoke_config.eval_tta = "flip"
  train.train_and_evaluate(smoke_config, str(tmp_path))
  rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
  assert sorted(r["size"] for r in rows) == [16, 32] and {r["tta"] for r in rows} == {"flip"}
  run = analysis.load_run(tmp_path)
  examples = run.test_examples()
  images, labels = examples["image"], examples["label"]
  for row in rows:
    probs = ensemble.flip_tta(run.predictor(row["size"]), images)
    by_hand = (softmax(run.predict(images, row["size"]))
               + softmax(run.predict(mirror(images), row["size"]))) / 2
    np.testing.assert_allclose(probs, by_hand, atol=1e-6)
    assert np.abs(by_hand - softmax(run.predict(images, row["size"]))).max() > 1e-4
    assert row["examples"] == len(labels)
    assert row["accuracy"] == pytest.approx(np.mean(np.argmax(by_hand, -1) == labels), abs=1e-9)
    assert row["loss"] == pytest.approx(-np.log(by_hand[np.arange(len(labels)), labels]).mean(),
                                        rel=1e-4)
