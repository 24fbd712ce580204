"""Analysis: shift measures and activation statistics on known inputs, then a smoke run
restored and analysed through the library, the CLI and the notebook."""

import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from progressive import analysis, schedules
from progressive import config as config_lib
from progressive.analysis import activations as activation_analysis
from progressive.analysis import ensemble as ensemble_lib
from progressive.analysis import finetune, plots, shift
from progressive.data import pipeline, scale_shapes
from progressive.training import activations, train
from progressive.training.metrics import read_rows

REPO = pathlib.Path(__file__).resolve().parents[1]


def dataclasses_replace(run, variables):
  return dataclasses.replace(run, variables=variables)


@pytest.fixture(scope="module")
def info():
  data = config_lib.default_config().data
  data.builder_config = "small"
  return pipeline.dataset_info(data)


# --- Shift measures on hand-made predictions ---------------------------------------------


def test_topk_correct_ranks_the_true_class():
  logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
  labels = np.array([1, 1])
  np.testing.assert_array_equal(shift.topk_correct(logits, labels, 1), [False, False])
  np.testing.assert_array_equal(shift.topk_correct(logits, labels, 2), [True, False])
  np.testing.assert_array_equal(shift.topk_correct(logits, labels, 3), [True, True])
  # A tie with the top logit counts as correct.
  assert shift.topk_correct(np.array([[1.0, 1.0]]), np.array([1]), 1)[0]


def test_jaggedness_counts_entries_and_exits():
  correct = np.array([
      [1, 1, 0, 1, 1],  # leaves, enters: 2
      [1, 1, 1, 1, 1],  # 0
      [0, 1, 0, 1, 0],  # 4
      [0, 0, 0, 0, 0],  # 0
  ], bool)
  np.testing.assert_array_equal(shift.count_changes(correct), [2, 0, 4, 0])
  result = shift.jaggedness(correct)
  assert result["mean_changes"] == pytest.approx(6 / 4)
  assert result["frac_changed"] == pytest.approx(2 / 4)


def test_consistency_is_the_fraction_of_agreeing_predictions():
  assert shift.consistency([0, 1, 2, 3, 4], [0, 1, 9, 3, 9]) == pytest.approx(3 / 5)
  assert shift.consistency([1, 2], [1, 2]) == 1.0


def test_translate_moves_content_right_and_down_without_wrapping():
  image = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6, 1)
  offsets = np.array([[[1, 0], [0, 2], [-1, -1]]])
  for mode in ("reflect", "edge", "constant"):
    out = shift.translate(image, offsets, mode)[0, ..., 0]
    np.testing.assert_array_equal(out[0][:, 1:], image[0, :, :-1, 0])  # dx=1: right.
    np.testing.assert_array_equal(out[1][2:], image[0, :-2, :, 0])  # dy=2: down.
    np.testing.assert_array_equal(out[2][:-1, :-1], image[0, 1:, 1:, 0])
  edge = shift.translate(image, offsets, "edge")[0, 0, ..., 0]
  np.testing.assert_array_equal(edge[:, 0], image[0, :, 0, 0])  # Entering column: the edge.
  assert not np.array_equal(edge[:, 0], image[0, :, -1, 0])  # Not the wrapped-round one.
  circular = shift.translate(image, offsets, "circular")[0, 0, ..., 0]
  np.testing.assert_array_equal(circular, np.roll(image[0, ..., 0], 1, axis=1))
  with pytest.raises(ValueError, match="mode"):
    shift.translate(image, offsets, "wrap")


def test_render_shift_moves_a_shape_by_whole_output_pixels():
  examples = {
      "label": np.array([3, 5]), "object_scale": np.array([0.5, 0.4]),
      "center": np.array([[0.4, 0.45], [0.5, 0.5]]), "seed": np.array([7, 8]),
  }
  views = shift.render_translated(examples, np.array([[[0, 0], [1, 0], [0, -2]]] * 2), 32,
                                  render_options=scale_shapes.render_options("small"))
  for v in views.astype(int):
    np.testing.assert_array_equal(v[1], np.roll(v[0], 1, axis=1))
    np.testing.assert_array_equal(v[2], np.roll(v[0], -2, axis=0))


def _mean_colour_model(images):
  """A translation-invariant toy classifier: logits from each image's mean colour."""
  mean = np.asarray(images, np.float32).mean(axis=(1, 2))
  weights = np.random.default_rng(0).normal(size=(3, scale_shapes.NUM_CLASSES))
  return mean @ weights


@pytest.mark.parametrize("mode", ["circular", "edge"])
def test_translation_invariant_model_is_perfectly_stable(info, mode):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=(12, 16, 16, 3)).astype(np.uint8)
  if mode == "edge":  # A uniform border: edge padding then shifts content exactly.
    images[:, :5], images[:, -5:], images[:, :, :5], images[:, :, -5:] = 40, 40, 40, 40
  examples = {"image": images, "label": np.arange(12) % scale_shapes.NUM_CLASSES}
  sweep = shift.shift_sweep(_mean_colour_model, examples, info, size=16, mode=mode, max_shift=3)
  assert sweep["mean_changes"] == 0.0 and sweep["frac_changed"] == 0.0
  assert np.ptp(np.asarray(sweep["prob_correct"]), axis=1).max() < 1e-5
  agree = shift.shift_consistency(
      _mean_colour_model, examples, info, size=16, mode=mode, max_shift=3)
  assert agree["consistency"] == 1.0
  assert set(agree["family"]) == {"shape", "texture"}


def test_a_position_dependent_model_is_jagged(info):
  """The same sweep catches a model that looks at one pixel (the test can fail)."""
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, size=(12, 16, 16, 3)).astype(np.uint8)

  def one_pixel(x):
    return _mean_colour_model(np.asarray(x)[:, 8:9, 8:9])

  examples = {"image": images, "label": np.argmax(one_pixel(images), -1)}
  sweep = shift.shift_sweep(one_pixel, examples, info, size=16, mode="circular", max_shift=3)
  assert sweep["accuracy_by_shift"][3] == 1.0  # Correct by construction at shift 0.
  assert sweep["mean_changes"] > 0.5


def test_period_sweep_spans_the_period_and_separates_stable_from_jagged(info):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, size=(10, 16, 16, 3)).astype(np.uint8)

  def one_pixel(x):
    return _mean_colour_model(np.asarray(x)[:, 8:9, 8:9])

  examples = {"image": images, "label": np.argmax(one_pixel(images), -1)}
  stable = shift.period_sweep(_mean_colour_model, examples, info, size=16, period=8, mode="circular")
  jagged = shift.period_sweep(one_pixel, examples, info, size=16, period=8, mode="circular")
  assert stable["shifts"] == list(range(-4, 5)) and len(stable["shifts"]) - 1 == stable["period"] == 8
  assert set(stable["directions"]) == {"1,0", "0,1", "1,1"}
  for measures in stable["directions"].values():
    assert measures["pred_change_rate"] == 0.0 and measures["prob_change"] < 1e-5
  assert stable["consistency"] == 1.0 and stable["pairs"] == 5
  for measures in jagged["directions"].values():
    assert measures["pred_change_rate"] > 0.2 and measures["prob_change"] > 0.01
    low, high = measures["pred_change_rate_ci"]
    assert low <= measures["pred_change_rate"] <= high
  assert jagged["consistency"] < 0.9
  # Objects too large for a 16 px canvas at every shift are measured on a grown one,
  # where the whole object moves over a flat background: a mean-colour model is stable.
  scenes = {"image": images[:2], "label": np.array([0, 1]), "object_scale": np.array([0.9, 1.0]),
            "center": np.full((2, 2), 0.5), "seed": np.array([1, 2])}
  large = shift.period_sweep(_mean_colour_model, scenes, info, size=16, period=8)
  assert large["n_images"] == 2 and large["canvas"] == 24
  assert large["inside"] == {"total": 2, "would_leave": 2, "moved": 0, "left_out": 0}
  assert large["consistency"] == 1.0
  for measures in large["directions"].values():
    assert measures["pred_change_rate"] == 0.0 and measures["prob_change"] < 1e-5


def test_every_test_scene_keeps_its_object_whole_over_the_period(info, data_dir):
  data = config_lib.default_config().data
  data.builder_config, data.data_dir = "small", data_dir
  examples = pipeline.scale_shapes_examples(data, "test", num=64)[0]
  size, period = 32, 8
  extent = shift.period_extent(period)
  kept, counts = shift.keep_inside(examples, extent, size)
  assert counts["would_leave"] > 0  # Some objects would have left a 32 px canvas...
  assert counts["total"] == len(kept["label"]) == 64 and counts["left_out"] == 0
  backgrounds = np.stack([np.rint(scale_shapes.nuisances(
      int(seed), texture_periods=info.render_options.texture_periods).background)
                          for seed in kept["seed"]]).astype(np.uint8)
  scenes = kept["image"]  # The stored test images: the scenes rendered at 32 px.
  object_px = np.any(scenes != backgrounds[:, None, None], axis=-1).sum(axis=(1, 2))
  steps = np.asarray(shift.period_shifts(period))
  for direction in shift.PERIOD_DIRECTIONS:  # ...every one stays whole on the grown canvas.
    offsets = np.broadcast_to(steps[:, None] * np.asarray(direction), (64, len(steps), 2))
    views = shift.render_translated(kept, offsets, size, render_options=info.render_options,
                                    margin=extent)
    assert views.shape[2:4] == (size + period, size + period)
    for t, step in enumerate(steps):
      top, left = extent + step * direction[1], extent + step * direction[0]
      np.testing.assert_array_equal(views[:, t, top:top + size, left:left + size], scenes)
      shown = np.any(views[:, t] != backgrounds[:, None, None], axis=-1).sum(axis=(1, 2))
      np.testing.assert_array_equal(shown, object_px)


# --- Activation statistics against numpy ------------------------------------------------


class _Toy(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.Dense(16, name="dense0")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(h)
    return nn.Dense(3, name="out")(nn.relu(h))


def _numpy_stats(x):
  x = np.asarray(x, np.float64).ravel()
  hist, _ = np.histogram(x, bins=40, range=(0, 10))
  return {"mean": x.mean(), "std": x.std(ddof=1), "near_zero": np.mean(x <= 0.05), "hist": hist}


def _assert_stats(got, want):
  for key in ("mean", "std", "near_zero"):
    assert float(got[key]) == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
  np.testing.assert_array_equal(np.asarray(got["hist"]), want["hist"])


@pytest.mark.parametrize("train", [False, True])
def test_activation_stats_match_numpy(train):
  model = _Toy()
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(32, 5)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  stats = jax.jit(functools.partial(activations.activation_stats, model.apply, train=train))(
      variables, x)
  assert set(stats) == {"dense0", "bn", "out"}  # The modules owning parameters.
  p = jax.tree.map(np.asarray, variables["params"])
  h = x.astype(np.float64) @ p["dense0"]["kernel"] + p["dense0"]["bias"]
  if train:  # Batch statistics, as in a training step.
    normed = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
  else:  # Running statistics, still at their initial mean 0, variance 1.
    normed = h / np.sqrt(1 + 1e-5)
  bn = normed * p["bn"]["scale"] + p["bn"]["bias"]
  out = np.maximum(bn, 0) @ p["out"]["kernel"] + p["out"]["bias"]
  for name, value in (("dense0", h), ("bn", bn), ("out", out)):
    _assert_stats(stats[name], _numpy_stats(value))
  assert stats["bn"]["hist"].dtype == jnp.float32


def test_histogram_edges_follow_torch_histc():
  x = jnp.array([-1.0, 0.0, 0.05, 0.06, 0.25, 9.99, 10.0, 10.5, np.inf])
  s = activations.summarize(x)
  hist = np.asarray(s["hist"])
  assert hist.sum() == 6  # -1, 10.5 and inf are outside [0, 10] and not counted.
  assert hist[0] == 3 and hist[1] == 1 and hist[39] == 2  # 10 itself is in the last bin.
  assert float(s["near_zero"]) == pytest.approx(3 / 9)


def test_stats_rows_are_json_lines_in_call_order():
  model = _Toy()
  x = np.ones((4, 5), np.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  # Jitted, as training and the analysis run it (eagerly, each operation is a compile).
  stats = jax.device_get(jax.jit(functools.partial(activations.activation_stats, model.apply))(
      variables, x))
  order = activations.layer_names(model.apply, variables, x)
  assert order == ["dense0", "bn", "out"]
  rows = activations.stats_rows(stats, step=12, stage=1, size=24, order=order)
  assert [r["layer"] for r in rows] == order
  row = json.loads(json.dumps(rows[0]))
  assert set(row) == {"step", "stage", "size", "layer", "mean", "std", "near_zero", "hist"}
  assert (row["step"], row["stage"], row["size"]) == (12, 1, 24) and len(row["hist"]) == 40
  assert [r["layer"] for r in activations.stats_rows(stats, step=0, stage=0, size=1)] == [
      "bn", "dense0", "out"]  # Without an order: by name.


# --- A restored smoke run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory, data_dir):
  """A finished smoke run (trained over the fake 4-device mesh) with the activation
  statistics training recorded."""
  from configs import default

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  config.activation_stats_every = 4
  workdir = tmp_path_factory.mktemp("analysis_smoke")
  train.train_and_evaluate(config, str(workdir))
  assert activation_analysis.read_stats(workdir)  # Recorded by training (activation_stats_every).
  return workdir


@pytest.fixture(scope="module")
def run(smoke_workdir):
  return analysis.load_run(smoke_workdir)


def test_load_run_restores_the_latest_checkpoint_on_one_device(run, smoke_config):
  assert (run.step, run.stage, run.steps) == (24, 2, (8, 16, 24))
  assert run.train_size == 32
  plan = schedules.stage_plan(smoke_config.stages, smoke_config.batch_size, 1024)
  assert run.stages() == plan
  for leaf in jax.tree.leaves(run.variables):
    assert leaf.sharding.device_set == {jax.local_devices()[0]}  # Trained on 4 devices.
  earlier = run.at_step(8)
  assert (earlier.step, earlier.stage, earlier.train_size) == (8, 0, 16)
  with pytest.raises(analysis.RunError, match=r"steps \[8, 16, 24\]"):
    analysis.load_run(run.workdir, 5)


def test_predictions_reproduce_the_training_evaluation(run):
  """Resizing and normalisation as in training: the logged eval accuracy comes back."""
  test = run.test_examples()
  logged = {r["size"]: r["accuracy"] for r in read_rows(run.workdir / "metrics.jsonl")
            if r["event"] == "eval" and r["step"] == run.step}
  assert set(logged) == {16, 32}
  for size, accuracy in logged.items():
    predicted = np.argmax(run.predict(test["image"], size, batch_size=100), -1)
    assert np.mean(predicted == test["label"]) == pytest.approx(accuracy, abs=1e-6)


def test_metrics_table_and_schedules(run):
  table = run.metrics("train")
  assert list(table["step"]) == [4, 8, 12, 16, 20, 24]
  curves = run.schedule_curves()
  assert curves["boundaries"] == [8, 16] and curves["stage_sizes"] == [16, 24, 32]
  # A train row logs the schedule of its last step (the optimiser's count before it).
  np.testing.assert_allclose(table["lr"], [curves["lr"][s - 1] for s in table["step"]], rtol=1e-5)


def test_size_matrix_and_ensemble(run, info):
  examples = run.test_examples(24)
  rows = analysis.stage_end_runs(run)
  assert list(rows) == ["16 px (step 8)", "24 px (step 16)", "32 px (step 24)"]
  matrix = analysis.size_matrix(rows, examples["image"], examples["label"], [16, 32])
  assert matrix["sizes"] == [16, 32] and matrix["train_sizes"] == [16, 24, 32]
  assert set(matrix["accuracy"]) == {"all", "shape", "texture"}
  assert np.asarray(matrix["accuracy"]["all"]).shape == (3, 2)
  assert len(matrix["class_accuracy"]) == 12
  logits = run.predict(examples["image"], 32)
  assert matrix["accuracy"]["all"][2][1] == pytest.approx(
      np.mean(np.argmax(logits, -1) == examples["label"]))
  combined = analysis.size_ensemble(run, examples["image"], examples["label"], [16, 32])
  probs = (jax.nn.softmax(run.predict(examples["image"], 16)) + jax.nn.softmax(logits)) / 2
  assert combined["ensemble"]["all"] == pytest.approx(
      np.mean(np.argmax(probs, -1) == examples["label"]))
  assert set(combined["single"]) == {"16", "32"}
  geometric = (jax.nn.log_softmax(run.predict(examples["image"], 16)) + jax.nn.log_softmax(logits)) / 2
  assert combined["ensemble_logp"]["all"] == pytest.approx(
      float(np.mean(np.argmax(np.asarray(geometric), -1) == examples["label"])), abs=1e-6)


def test_seed_ensemble_averages_softmaxes_not_logits():
  # Two networks: one sure of class 0, one mildly for class 1. Mean logits pick 1, mean
  # softmax picks 0 (the seed ensemble averages probabilities).
  a, b = np.array([[4.0, 0.0]]), np.array([[0.0, 5.0]])
  assert ensemble_lib.seed_ensemble([a], np.array([0])) == 1.0
  probs = (jax.nn.softmax(a) + jax.nn.softmax(b)) / 2
  assert ensemble_lib.seed_ensemble([a, b], np.array([0])) == float(np.argmax(probs) == 0)
  with pytest.raises(ValueError, match="at least one"):
    ensemble_lib.seed_ensemble([], np.array([0]))


def test_finetune_trains_only_the_classifier_and_batch_norm(run, info):
  mask = finetune.trainable_mask(run.variables["params"])
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat and all(v == ("['head']" in k or "['bn']" in k) for k, v in flat.items())
  train_examples = analysis.load_examples(run.config.data, "train", 128)
  test_examples = run.test_examples(64)
  tuned = finetune.finetune(run, 24, train_examples["image"], train_examples["label"], steps=6,
                            lr=0.05, batch_size=32)
  before, after = run.variables, tuned.variables
  for key in before["params"]:
    for name, old in before["params"][key].items():
      changed = not jax.tree.all(jax.tree.map(np.array_equal, old, after["params"][key][name]))
      assert changed == (name in ("bn", "dense")), (key, name)
  # Statistics are recomputed at the size afterwards: exactly the recalibration of the
  # fine-tuned parameters on the same images.
  again = dataclasses_replace(run, after).recalibrated(24, train_examples["image"])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               again.variables["batch_stats"], after["batch_stats"])
  # Deterministic for one seed; another seed draws other batches and flips.
  same = finetune.finetune(run, 24, train_examples["image"], train_examples["label"], steps=6,
                           lr=0.05, batch_size=32)
  np.testing.assert_array_equal(same.predict(test_examples["image"], 24),
                                tuned.predict(test_examples["image"], 24))
  other = finetune.finetune(run, 24, train_examples["image"], train_examples["label"], steps=6,
                            lr=0.05, batch_size=32, seed=1)
  assert not np.array_equal(other.predict(test_examples["image"], 24),
                            tuned.predict(test_examples["image"], 24))
  with pytest.raises(ValueError, match="steps >= 1"):
    finetune.finetune(run, 24, train_examples["image"], train_examples["label"], steps=0, lr=0.1)


def test_finetune_lowers_the_training_loss_at_the_new_size(run):
  examples = analysis.load_examples(run.config.data, "train", 256)

  def loss(r):
    logits = r.predict(examples["image"], 40)
    return float(np.mean(-jax.nn.log_softmax(logits)[np.arange(len(logits)), examples["label"]]))

  start = run.recalibrated(40, examples["image"])
  tuned = finetune.finetune(run, 40, examples["image"], examples["label"], steps=24, lr=0.05,
                            batch_size=64, flip=False)
  assert loss(tuned) < loss(start)


def test_receptive_field_marks(run, info):
  rf = analysis.receptive_field(run.config.model, 32, info.num_classes)
  assert rf == 17  # 5x5 s2, then two 3x3 s2: 1 + 4 + 2 * 2 + 2 * 4.
  cover = analysis.rf_coverage(rf, np.array([0.3, 0.5, 0.6, 0.9]), [16, 32, 64])
  assert cover["covered_fraction"] == [1.0, 0.5, 0.0]
  assert cover["uncovered_from_size"] == pytest.approx(17 / 0.55)
  by_scale = analysis.object_scale_accuracy(
      run.predictor(32), info, canvas_size=32, bin_edges=(0.2, 0.5, 0.8), per_bin=12,
      features_rf=rf)
  assert by_scale["count"] == [12, 12]
  assert by_scale["object_px"] == [pytest.approx(11.2), pytest.approx(20.8)]
  assert by_scale["rf_scale"] == pytest.approx(17 / 32)


def test_activation_stats_of_a_checkpoint_and_over_training(run):
  rows = activation_analysis.read_stats(run.workdir)
  layers = activation_analysis.layers_in_order(rows)
  # Three conv-BN-ReLU blocks (a row per ReLU output too) and the dense head.
  assert layers[0] == "conv0/conv" and layers[-1] == "head/dense" and len(layers) == 10
  assert [l for l in layers if l.endswith("/relu")] == ["conv0/relu", "conv1/relu", "conv2/relu"]
  series = activation_analysis.over_training(rows, "conv1/bn")
  assert series["hist"].shape == (len(series["step"]), 40) and len(series["step"]) >= 3
  latest = analysis.checkpoint_stats([run], run.test_examples(16)["image"], train=True)
  assert [r["layer"] for r in latest] == layers
  # In training mode every batch norm output is normalised with the batch's statistics.
  bn = {r["layer"]: r for r in latest if r["layer"].endswith("/bn")}
  gamma_beta = run.variables["params"]["conv0"]["bn"]
  gamma, beta = np.asarray(gamma_beta["scale"]), np.asarray(gamma_beta["bias"])
  assert bn["conv0/bn"]["mean"] == pytest.approx(float(beta.mean()), abs=1e-3)
  assert bn["conv0/bn"]["std"] == pytest.approx(
      float(np.sqrt(np.mean(gamma**2) + np.var(beta))), rel=0.01)
  for fig in (plots.layer_stats(rows), plots.colorful_dimension(rows)):
    assert fig.axes
  # A deep network's figure shows a few layers spread over its depth, the first and last.
  few = plots.colorful_dimension(rows, max_layers=3)
  shown = [ax.get_title() for ax in few.axes if ax.get_title()]
  assert len(shown) == 3 and (shown[0], shown[-1]) == (layers[0], layers[-1])
  assert shown[1] in layers[1:-1]
  assert f"3 of {len(layers)} layers" in few.get_suptitle()



def test_the_dead_unit_figure_draws_each_arms_relus_over_training():
  """Claim 6's figure (`plots.near_zero_by_arm`): per arm, the mean over its ReLUs of the
  near-zero fraction at each step, one line per seed and their mean over the steps they
  share, the learning rate beside it, and a colorful dimension per ReLU of the first seed."""
  def rows(seed, steps):
    return [{"step": t, "layer": layer, "mean": 0.0, "std": 1.0, "hist": [float(t)] * 40,
             "near_zero": (0.1 * i + 0.01 * seed + 0.001 * t) if "relu" in layer else 0.9}
            for t in steps for i, layer in enumerate(("conv0/conv", "conv0/relu", "conv1/relu"))]

  lr = (np.arange(4), np.array([0.1, 0.4, 0.2, 0.0]))
  arms = {"bn": [{"seed": 0, "stats": rows(0, (10, 20, 30)), "lr": lr},
                 {"seed": 1, "stats": rows(1, (10, 20)), "lr": lr}],
          "no_bn": [{"seed": 3, "stats": rows(3, (10, 20)), "lr": lr}]}
  fig = plots.near_zero_by_arm(arms)
  grid = np.asarray(fig.axes[:6]).reshape(2, 3)  # Two arms; near-zero and two ReLUs each.
  seed0, seed1, mean = (line.get_ydata() for line in grid[0, 0].get_lines())
  # conv0/relu and conv1/relu: (0.1 + 0.2) / 2 + 0.01 * seed + 0.001 * t; conv0/conv not counted.
  np.testing.assert_allclose(seed0, [0.16, 0.17, 0.18])
  np.testing.assert_allclose(seed1, [0.17, 0.18])
  np.testing.assert_allclose(mean, [0.165, 0.175])
  assert [ax.get_title() for ax in grid[1, 1:]] == ["conv0/relu (seed 3)", "conv1/relu (seed 3)"]
  assert grid[0, 0].get_title(loc="left") == "bn"
  twins = [ax for ax in fig.axes[6:] if ax.get_lines()]
  np.testing.assert_allclose(twins[0].get_lines()[0].get_ydata(), lr[1])

# --- The CLI and the notebook -------------------------------------------------------------


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **extra)
  # One CPU device, like a laptop; machine code unoptimised, as in every test (conftest.py).
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  return env


@pytest.mark.slow
def test_analyze_cli_writes_the_report(smoke_workdir):
  """In a one-device process: the run was trained over a 4-device mesh."""
  out = subprocess.run(
      [sys.executable, "-m", "progressive", "analyze", f"--workdir={smoke_workdir}", "--num_images=32",
       "--per_bin=6", "--max_shift=2"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  folder = smoke_workdir / "analysis"
  report = (folder / "report.md").read_text()
  for name in ("size_matrix", "object_scale", "jaggedness", "ensemble", "layer_stats",
               "colorful_dimension", "schedules", "curves", "show_batch", "confusion_matrix",
               "top_losses"):
    assert f"({name}.png)" in report and (folder / f"{name}.png").stat().st_size > 1000
  for name in ("scale_matrix", "shift", "activation_stats", "ensemble", "schedules",
               "interpretation", "curves", "overview"):
    assert f"({name}.json)" in report
  # The built-in dataset's own words and sections: families, object scale, redrawn shifts.
  assert "shapes (outlines, scale invariant) and textures (fixed pixel periods)" in report
  assert ": left out —" not in report and "## Scale: accuracy by object scale" in report
  interpretation = json.loads((folder / "interpretation.json").read_text())
  assert len(interpretation["per_class"]) == 12 and interpretation["size"] == 32
  assert interpretation["num_images"] == interpretation["num_test"]  # The whole eval split.
  assert [b["size"] for b in interpretation["show_batch"]] == [16, 24, 32]
  overview = json.loads((folder / "overview.json").read_text())
  assert overview["test_images"]["size_matrix"] == 32 and overview["dataset"]["family_names"] == [
      "shape", "texture"]
  assert f"| size matrix, its controls, multi-size ensemble, flip TTA (`--num_images`) | 32 of " \
         f"{interpretation['num_test']} |" in report
  flip = json.loads((folder / "ensemble.json").read_text())["flip_tta"]
  assert flip["size"] == 32 and flip["num_images"] == 32
  assert f"| 32 px, flip TTA | {flip['tta']['all']:.3f} |" in report
  scale_json = json.loads((folder / "scale_matrix.json").read_text())
  assert scale_json["size_matrix"]["sizes"] == [16, 24, 32]
  # The controls: recalibrated statistics (a figure too), the canvas, the grid.
  bn = scale_json["size_matrix_bn"]
  assert bn["sizes"] == [16, 24, 32] and bn["rows"] == scale_json["size_matrix"]["rows"]
  assert bn["calibration_images"] == 1024 and "(size_matrix_bn.png)" in report
  assert scale_json["canvas"]["rows"] == ["stored", "recalibrated"]
  assert scale_json["canvas"]["image_size"] == 32 and scale_json["canvas"]["mode"] == "edge"
  assert scale_json["grid"] == {"total_stride": 8, "misaligned": []}
  assert "recomputed at each test size" in report and "without resampling" in report
  assert scale_json["receptive_field"]["features_rf"] == 17
  shift_json = json.loads((folder / "shift.json").read_text())
  assert shift_json["sweep"]["shifts"] == [-2, -1, 0, 1, 2]
  assert np.asarray(shift_json["sweep"]["correct"]).shape == (32, 5)
  assert 0 <= shift_json["consistency"]["consistency"] <= 1
  period = shift_json["period"]  # One whole period of the traced total stride (8).
  assert period["period"] == 8 and len(period["shifts"]) == 9 and set(period["directions"]) == {"1,0", "0,1", "1,1"}
  assert period["inside"]["total"] == 32 and "### Over one subsampling period" in report
  stats_json = json.loads((folder / "activation_stats.json").read_text())
  assert stats_json["source"] == "recorded" and len(stats_json["checkpoint"]["rows"]) == 10  # 7 layers, 3 ReLUs
  ensemble_json = json.loads((folder / "ensemble.json").read_text())
  assert ensemble_json["sizes"] == [16, 24, 32] and "ensemble" in ensemble_json


@pytest.mark.slow
def test_analyze_cli_names_a_missing_run(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "progressive", "analyze", f"--workdir={tmp_path}"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
  )
  assert out.returncode != 0 and "holds no run" in out.stderr


@pytest.mark.slow
def test_notebook_runs_on_the_smoke_run(smoke_workdir, tmp_path, monkeypatch):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  env = _env(PROGRESSIVE_WORKDIR=str(smoke_workdir), PROGRESSIVE_NUM_IMAGES="32")
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(REPO / "experiments" / "analysis.ipynb", as_version=4)
  assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
  nbclient.NotebookClient(
      notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert len(images) == 11  # Every figure cell drew its figure.


def test_recalibrated_run_takes_its_statistics_from_the_training_split(run):
  from progressive.training import recalibrate  # pylint: disable=import-outside-toplevel

  assert run.has_batch_norm
  at_24 = run.recalibrated(24, num_images=64)
  train_images = analysis.load_examples(run.config.data, run.config.data.train_split, 64)["image"]
  expected = recalibrate.recalibrate(
      run.model.apply, run.variables, train_images, 24, run.info.mean, run.info.std
  )
  jax.tree.map(np.testing.assert_array_equal, at_24.variables["batch_stats"], expected["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, at_24.variables["params"], run.variables["params"])
  assert at_24.step == run.step and run.variables is not at_24.variables
  changed = [not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(at_24.variables["batch_stats"]), jax.tree.leaves(run.variables["batch_stats"]))]
  assert any(changed)
  assert at_24.predict(train_images[:8], 24).shape == (8, run.info.num_classes)
