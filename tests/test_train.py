"""End-to-end training on the smoke config: stages, compiles, evals, checkpoints, resume."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from progressive import models, schedules
from progressive.models import layers as model_layers
from progressive.training import activations, evaluate, parallel, steps, train
from progressive.training.metrics import read_rows
from progressive.training.workdir import WorkdirError
from tests import runs
from tests.runs import Killed, die_after_save


@pytest.fixture(scope="module")
def backend_compiles():
  """Names of the functions XLA compiles while the fixture is alive."""
  with runs.backend_compiles() as names:
    yield names


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir, backend_compiles):
  from configs import default

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  config.activation_stats_every = 4  # Recorded, and checked below.
  workdir = tmp_path_factory.mktemp("smoke")
  # Its compiles are counted: none is read from the tests' shared cache (back after the test).
  jax.config.update("jax_compilation_cache_dir", None)
  compilation_cache.reset_cache()
  jax.clear_caches()  # Nor from an earlier run of this config in this process.
  before = len(backend_compiles)
  summary = train.train_and_evaluate(config, str(workdir))
  train_compiles = [n for n in backend_compiles[before:] if "parallel_train_step" in n]
  return config, workdir, summary, train_compiles


def test_smoke_run_trains_through_every_stage(smoke_run):
  config, workdir, summary, _ = smoke_run
  rows = read_rows(workdir / "metrics.jsonl")
  train_rows = [r for r in rows if r["event"] == "train"]
  plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
  assert summary.step == plan[-1].end == 24
  assert [r["step"] for r in train_rows] == list(range(4, 25, 4))
  assert [r["stage"] for r in train_rows] == [0, 0, 1, 1, 2, 2]
  assert [r["size"] for r in train_rows] == [16, 16, 24, 24, 32, 32]
  for row in train_rows:
    assert set(row) >= {"step", "stage", "size", "loss", "accuracy", "lr", "momentum", "images_per_sec"}
    assert row["images_per_sec"] > 0
  # Loss goes down: the last interval is clearly below the first.
  assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.1
  # The one-cycle LR peaks inside the run and ends near lr_max / div_final.
  assert max(r["lr"] for r in train_rows) > 0.5 * config.opt.lr_max
  assert train_rows[-1]["lr"] < 0.05 * config.opt.lr_max


def test_one_compile_per_stage_shape(smoke_run):
  _, workdir, summary, train_compiles = smoke_run
  compile_rows = [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "compile"]
  train_rows = [r for r in compile_rows if r["kind"] == "train"]
  assert [(r["stage"], r["size"], r["batch_size"]) for r in train_rows] == [
      (0, 16, 64), (1, 24, 64), (2, 32, 64)
  ]
  # The eval step: one program per size, at the first evaluation that needs it.
  assert [(r["step"], r["size"]) for r in compile_rows if r["kind"] == "eval"] == [
      (8, 16), (8, 32), (16, 24)
  ]
  assert all(r["seconds"] > 0 and not r["cache_hit"] and not r["reused"] for r in compile_rows)
  # XLA's FLOP count of one step over the whole mesh grows with the stage's size.
  flops = [r["flops"] for r in train_rows]
  assert 0 < flops[0] < flops[1] < flops[2]
  # Counted by XLA itself, not assumed: one backend compile of the step per stage shape.
  assert len(train_compiles) == 3
  assert summary.compile == compile_rows


def test_a_later_run_in_the_process_reuses_the_programs_at_its_own_learning_rate(
    smoke_run, backend_compiles, tmp_path):
  config, workdir, _, _ = smoke_run
  config = config.copy_and_resolve_references()
  config.opt.lr_max /= 2  # A learning-rate grid's next point, at another seed.
  config.seed += 1
  before = len(backend_compiles)
  summary = train.train_and_evaluate(config, str(tmp_path / "half"))
  assert not [n for n in backend_compiles[before:] if "parallel_" in n]
  assert summary.compile and all(r["reused"] and not r["cache_hit"] for r in summary.compile)
  # The shared program follows this run's peak, held in its optimiser state.
  first, half = ({r["step"]: r["lr"] for r in read_rows(w / "metrics.jsonl") if r["event"] == "train"}
                 for w in (workdir, tmp_path / "half"))
  assert first.keys() == half.keys()
  for step, lr in half.items():
    assert lr == pytest.approx(first[step] / 2, rel=1e-6)


def test_runs_share_programs_only_where_their_programs_are_the_same(smoke_config):
  from progressive.data import pipeline
  from progressive.sweeps import spec

  info = pipeline.dataset_info(smoke_config.data)
  mesh = parallel.make_mesh()

  def state(**changes):
    config = spec.apply_overrides(smoke_config, changes)
    plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
    return train.build_state(config, info, plan, mesh)

  base = state()
  for same in (state(**{"opt.lr_max": 0.5}), state(seed=7)):
    assert same.tx is base.tx and same.apply_fn == base.apply_fn
  assert state(**{"opt.lr_max": 0.5}).opt_state.hyperparams["lr_scale"] == 0.5
  for other in (state(**{"opt.pct_start": 0.5}), state(**{"opt.weight_decay": 0.0}),
                state(stages=({"size": 16, "steps": 8},))):
    assert other.tx is not base.tx
  assert state(**{"model.channels": (8, 16, 16)}).apply_fn != base.apply_fn


def test_eval_rows_for_every_eval_size(smoke_run):
  config, workdir, _, _ = smoke_run
  eval_rows = [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "eval"]
  by_step = {}
  for row in eval_rows:
    by_step.setdefault(row["step"], []).append(row["size"])
    assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["loss"])
    assert {"accuracy_shape", "accuracy_texture", "split"} <= set(row)
    assert row["examples"] == 256  # The whole test split of scale_shapes/small.
  assert by_step == {8: [16, 32], 16: [16, 24, 32], 24: [16, 32]}
  for stage in config.stages:
    assert stage["size"] in sum(by_step.values(), [])


def test_outputs_in_workdir(smoke_run):
  config, workdir, _, _ = smoke_run
  assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["16", "24", "8"]
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  stats = read_rows(workdir / "activation_stats.jsonl")
  layers = list(dict.fromkeys(r["layer"] for r in stats))
  # Each ReLU's output after the layer before it (the dead-unit measure), same keys.
  assert layers[:3] == ["conv0/conv", "conv0/bn", "conv0/relu"] and layers[-1] == "head/dense"
  assert [n for n in layers if activations.is_relu(n)] == [f"conv{i}/relu" for i in range(3)]
  assert [r["step"] for r in stats] == [s for s in range(4, 25, 4) for _ in layers]
  for row in stats:
    assert len(row["hist"]) == 40 and 0 <= row["near_zero"] <= 1 and row["std"] > 0


def test_second_invocation_does_not_retrain(smoke_run, capsys):
  config, workdir, _, _ = smoke_run
  lines_before = (workdir / "metrics.jsonl").read_text()
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary.step == 24
  assert "finished run" in capsys.readouterr().out
  assert (workdir / "metrics.jsonl").read_text() == lines_before


def test_workdir_with_another_config_is_refused(smoke_run):
  config, workdir, _, _ = smoke_run
  config = config.copy_and_resolve_references()
  config.model.channels = (8, 16)
  with pytest.raises(WorkdirError, match=r"model\.channels"):
    train.train_and_evaluate(config, str(workdir))


@pytest.mark.slow  # End to end: a second run interrupted and resumed (14 s).
def test_interrupted_run_resumes_to_identical_result(smoke_run, smoke_config, tmp_path, monkeypatch):
  _, _, reference, _ = smoke_run
  reference_rows = read_rows(smoke_run[1] / "metrics.jsonl")
  config = smoke_config
  config.checkpoint_every_steps = 4  # Mid-stage checkpoints, with the data iterator's state.
  config.activation_stats_every = 4  # As the reference run: its rows resume too.
  die_after_save(monkeypatch, 12)  # Mid-way through stage 1.
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  summary = train.train_and_evaluate(config, str(tmp_path))

  assert summary.step == 24
  # Resumed in stage 1 at step 12: compiled stages 1 and 2 only.
  assert [(r["stage"], r["step"]) for r in summary.compile if r["kind"] == "train"] == [(1, 12), (2, 16)]
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(summary.state.params),
      jax.device_get(reference.state.params),
  )
  rows = read_rows(tmp_path / "metrics.jsonl")

  def losses(rows):
    return [(r["step"], r["loss"]) for r in rows if r["event"] == "train"]

  assert losses(rows) == losses(reference_rows)  # No row lost or written twice.
  assert read_rows(tmp_path / "activation_stats.jsonl") == read_rows(smoke_run[1] / "activation_stats.jsonl")
  evals = [(r["step"], r["size"], r["accuracy"]) for r in rows if r["event"] == "eval"]
  assert evals == [(r["step"], r["size"], r["accuracy"]) for r in reference_rows if r["event"] == "eval"]


@pytest.mark.slow  # A training run in this process, 4 s on 2 cores: full suite only.
def test_non_finite_loss_stops_with_step_and_stage(smoke_config, tmp_path):
  config = smoke_config
  config.opt.lr_max = 1e30
  config.opt.div = 1.0
  with pytest.raises(train.NonFiniteLossError, match=r"Non-finite loss .* at step \d+ \(stage 0, 16px\)"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_adamw_with_one_cycle_per_stage_trains(smoke_config, tmp_path):
  config = smoke_config
  config.opt.name = "adamw"
  config.opt.lr_max = 3e-3
  config.opt.weight_decay = 0.01
  config.opt.cycle = "stage"
  summary = train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "train"]
  assert summary.step == 24
  assert rows[-1]["loss"] < rows[0]["loss"]
  # Each stage restarts its cycle: beta1 (logged as momentum) is back near moms[0] at
  # the end of every stage (its last step is 7/8 through the cycle), the LR near its floor.
  for row in rows[1::2]:
    assert row["momentum"] > 0.93 and row["lr"] < 0.1 * config.opt.lr_max


class _CountingSplit:
  """Two eval batches of 4 images whose pixel values are their labels; counts reads."""

  num_examples = 7

  def __init__(self):
    self.reads = 0

  def eval_batches(self, batch_size, num_batches):
    self.reads += 1
    labels = np.arange(8, dtype=np.int32) % 3
    for i in range(num_batches):
      chunk = labels[i * batch_size:(i + 1) * batch_size]
      yield {"image": np.broadcast_to(chunk[:, None, None, None], (batch_size, 2, 2, 3)).astype(np.uint8),
             "label": chunk, "mask": np.arange(i * batch_size, (i + 1) * batch_size) < self.num_examples}


def test_evaluate_reads_the_split_once_for_every_size():
  from progressive.data import pipeline

  info = pipeline.DatasetInfo("fake", 3, ("a", "b", "c"), 2, 7, 7, (0.0,) * 3, (1.0,) * 3)
  sharding = jax.sharding.NamedSharding(parallel.make_mesh(), jax.sharding.PartitionSpec(steps.AXIS))

  def eval_fn(state, batch, size):  # Right for every image at size 16, wrong at 24.
    del state
    prediction = batch["image"][:, 0, 0, 0].astype(np.int32) + (size == 24)
    return {"prediction": prediction, "loss": prediction * 0.0 + size}

  split = _CountingSplit()
  rows = evaluate.evaluate(None, eval_fn, split, [16, 24], batch_size=4, sharding=sharding, info=info)
  assert split.reads == 1
  assert rows == [
      {"size": 16, "accuracy": 1.0, "loss": 16.0, "examples": 7},
      {"size": 24, "accuracy": 0.0, "loss": 24.0, "examples": 7},
  ]


@pytest.mark.slow  # A training run in this process, 5 s on 2 cores: full suite only.
def test_every_stage_closes_its_data_iterator(smoke_config, tmp_path, monkeypatch):
  from progressive.data import pipeline

  opened = []
  original = pipeline.Split.train_iterator

  def recording(self, *args, **kwargs):
    iterator = original(self, *args, **kwargs)
    opened.append(iterator)
    return iterator

  monkeypatch.setattr(pipeline.Split, "train_iterator", recording)
  smoke_config.stages = (dict(size=16, steps=2), dict(size=24, steps=2))
  smoke_config.activation_stats_every = 0
  train.train_and_evaluate(smoke_config, str(tmp_path))
  # Grain's iterators hold threads (or worker processes and their shared memory).
  assert len(opened) == 2 and all(it._closed for it in opened)  # pylint: disable=protected-access


@pytest.mark.slow  # A training run in this process, 7 s on 2 cores: full suite only.
def test_evaluation_reports_accuracy_with_recalibrated_batch_norm(smoke_config, tmp_path):
  from progressive import analysis  # pylint: disable=import-outside-toplevel

  config = smoke_config
  config.eval_bn_images = 128  # One eval batch of training images.
  config.stages = (dict(size=16, steps=4), dict(size=24, steps=4))
  config.activation_stats_every = 0
  result = train.train_and_evaluate(config, str(tmp_path))
  rows = {r["size"]: r for r in result.eval}
  assert set(rows) == {16, 24, 32}
  assert "accuracy_bn" not in rows[24]  # The stage's own size: its statistics are its own.
  assert {"accuracy_bn", "accuracy_bn_shape", "accuracy_bn_texture"} <= set(rows[16])
  # The same control through the analysis toolkit, on one device.
  run = analysis.load_run(tmp_path)
  images = analysis.load_examples(config.data, config.data.train_split, 128)["image"]
  test = run.test_examples()
  for size in (16, 32):
    predicted = np.argmax(run.recalibrated(size, images).predict(test["image"], size), -1)
    assert rows[size]["accuracy_bn"] == pytest.approx(np.mean(predicted == test["label"]), abs=1.5 / 256)


class _OneConv(nn.Module):
  """A 1x1 convolution, batch norm and ReLU: `conv0` of the simple CNN in miniature."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return model_layers.ConvNormAct(1, 1, name="conv0")(x, train)


def test_near_zero_is_measured_after_the_relu():
  """Weights fixed by hand: conv output x, batch norm x / sqrt(1 + 1e-5) + 0.5, ReLU."""
  x = np.array([-2, -1, -0.6, -0.47, 0, 1, 2, 3], np.float32).reshape(1, 2, 4, 1)
  variables = {"params": {"conv0": {"conv": {"kernel": jnp.ones((1, 1, 1, 1))},
                                    "bn": {"scale": jnp.ones(1), "bias": jnp.full(1, 0.5)}}},
               "batch_stats": {"conv0": {"bn": {"mean": jnp.zeros(1), "var": jnp.ones(1)}}}}
  model = _OneConv()
  stats = jax.device_get(jax.jit(lambda v, x: activations.activation_stats(
      model.apply, v, x, relu=True))(variables, x))  # Jit-able, as training records them.
  # ReLU outputs: 0, 0, 0, 0.03, 0.5, 1.5, 2.5, 3.5: four of eight <= 0.05 (three exactly 0).
  assert float(stats["conv0/relu"]["near_zero"]) == pytest.approx(4 / 8)
  assert float(stats["conv0/relu"]["mean"]) == pytest.approx(8.03 / 8, abs=1e-4)
  # fastai's figure reads the convolution's output x: five of eight <= 0.05.
  assert float(stats["conv0/conv"]["near_zero"]) == pytest.approx(5 / 8)
  order = activations.layer_names(model.apply, variables, x)
  rows = activations.stats_rows(stats, step=1, stage=0, size=4, order=order)
  assert [r["layer"] for r in rows] == ["conv0/conv", "conv0/bn", "conv0/relu"]
  assert set(rows[2]) == set(rows[0])  # The rows readers know, one more layer.
  plain = jax.eval_shape(lambda v, x: activations.activation_stats(model.apply, v, x), variables, x)
  assert "conv0/relu" not in plain  # Opt-in.


def test_every_relu_is_found_in_the_traced_model(smoke_config):
  """A residual block's ReLU after its sum, and the stem's, named by their modules."""
  config = smoke_config.model
  config.update(dict(name="resnet18", width=0.25, small_stem=True))
  model = models.build(config, num_classes=4)
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  stats = jax.eval_shape(lambda v, x: activations.activation_stats(
      model.apply, v, x, train=True, relu=True), variables, x)
  relus = [n for n in stats if activations.is_relu(n)]
  assert {"stem/relu", "stage1_block0/conv1/relu", "stage1_block0/relu",
          "stage4_block1/relu"} <= set(relus)
  assert len(relus) == 1 + 8 * 2  # The stem, and two per basic block.
