"""Ahead-of-time stage compiles, the persistent cache, and no host sync per step."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from progressive import models, optim, schedules
from progressive.data import pipeline
from progressive.training import checkpoints, compilation, parallel, steps, train
from progressive.training.metrics import read_rows
from tests.runs import backend_compiles

REPO = pathlib.Path(__file__).parents[1]


def _setup(config):
  mesh = parallel.make_mesh()
  model = models.build(config.model, num_classes=12, bn_axis_name=steps.AXIS)
  plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
  lr_fn, mom_fn = schedules.make_schedules(plan, config.opt.lr_max)
  state = steps.create_train_state(model, optim.make_optimizer(config.opt, lr_fn, mom_fn), jax.random.key(0), 32)
  return mesh, plan, jax.device_put(state, NamedSharding(mesh, P()))


@pytest.mark.slow
@pytest.mark.parametrize("background", [True, False])
def test_ahead_of_time_stages_match_lazy_jit(smoke_config, background):
  mesh, plan, state = _setup(smoke_config)
  sharding = NamedSharding(mesh, P(steps.AXIS))
  step_fn = parallel.make_train_step(mesh, (0.5,) * 3, (0.3,) * 3)
  eval_fn = parallel.make_eval_step((0.5,) * 3, (0.3,) * 3)
  compiler = compilation.StageCompiler(background=background)
  compilation.submit_compiles(
      compiler, step_fn, eval_fn, state, plan, info=pipeline.dataset_info(smoke_config.data),
      eval_sizes=(16,),
      eval_batch_size=64, sharding=sharding,
  )
  rng = np.random.default_rng(1)
  batches = [
      {"image": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
       "label": rng.integers(0, 12, (64,), dtype=np.int32)}
      for _ in range(len(plan))
  ]
  aot_state, lazy_state = state, jax.tree.map(lambda x: x.copy(), state)
  for stage, batch in zip(plan, batches):
    result, _ = compiler.get(("train", stage.size, stage.batch_size))
    aot_state, aot_metrics = result.executable(aot_state, parallel.shard_batch(batch, sharding))
    lazy_state, lazy_metrics = step_fn(lazy_state, parallel.shard_batch(batch, sharding), stage.size)
    assert float(aot_metrics["loss"]) == float(lazy_metrics["loss"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(aot_state.params), jax.device_get(lazy_state.params))
  eval_result, _ = compiler.get(("eval", 16))
  aot_eval = eval_result.executable(aot_state, parallel.shard_batch(batches[0], sharding))
  np.testing.assert_array_equal(aot_eval["prediction"], eval_fn(lazy_state, parallel.shard_batch(batches[0], sharding), 16)["prediction"])
  compiler.close()


@pytest.mark.slow
def test_no_host_sync_per_step(smoke_config, tmp_path, monkeypatch):
  """Metrics leave the device once per `log_every_steps`, never each step."""
  fetches = []
  real_get = jax.device_get

  def counting_get(tree):
    fetches.append(tree)
    return real_get(tree)

  smoke_config.log_every_steps = 8  # One fetch per 8-step stage.
  smoke_config.activation_stats_every = 12  # And at steps 12 and 24.
  smoke_config.eval_sizes = ()
  monkeypatch.setattr(jax, "device_get", counting_get)
  with jax.transfer_guard_device_to_host("disallow"):  # No implicit transfer anywhere.
    summary = train.train_and_evaluate(smoke_config, str(tmp_path))
  monkeypatch.undo()
  assert summary.step == 24
  train_fetches = [f for f in fetches if isinstance(f, list) and f and "loss" in f[0]]
  assert [len(f) for f in train_fetches] == [8, 8, 8]  # 24 steps, 3 fetches.
  stats_fetches = [f for f in fetches if isinstance(f, dict) and "conv0" in "".join(map(str, f))]
  assert len(stats_fetches) == 2
  # Everything else fetched is evaluation output, once per evaluation: 3 stage ends,
  # each keyed by its size.
  eval_fetches = [f for f in fetches if not any(f is g for g in train_fetches + stats_fetches)]
  assert [list(f) for f in eval_fetches] == [[16], [24], [32]]


@pytest.mark.slow
def test_persistent_cache_serves_a_rerun_at_another_learning_rate(smoke_config, tmp_path):
  """The LR peak is a value in the optimiser state, not a constant in the program: a
  second run with another `lr_max` (and seed), as in a tuning grid, compiles nothing."""
  cache = tmp_path / "cache"
  args = [
      sys.executable, "-m", "progressive", "train", "--config=configs/default.py:smoke",
      f"--config.data.data_dir={smoke_config.data.data_dir}", "--config.progress_bar=False",
      f"--config.compilation_cache_dir={cache}", "--config.activation_stats_every=4",
      "--config.stages=({'size': 16, 'steps': 8}, {'size': 32, 'steps': 8})",
  ]
  runs = {"first": [], "second": ["--config.opt.lr_max=0.05", "--config.seed=3"]}
  for run, extra in runs.items():
    result = subprocess.run(args + extra + [f"--workdir={tmp_path / run}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
  rows = {run: read_rows(tmp_path / run / "metrics.jsonl") for run in runs}
  first, second = ([r for r in rows[run] if r["event"] == "compile"] for run in runs)
  # Per stage, its train and activation-statistics programs; evaluation at 16 and 32 px.
  assert len(first) == len(second) == 6
  assert not any(r["cache_hit"] for r in first)
  assert all(r["cache_hit"] for r in second)
  assert any(cache.iterdir())
  peak = {run: max(r["lr"] for r in rows[run] if r["event"] == "train") for run in runs}
  assert peak["second"] < 0.05 < peak["first"]  # Each run followed its own peak.


def test_persistent_cache_follows_each_run_s_directory(tmp_path):
  """JAX opens its cache once per process: a second run in one process (a notebook, a
  sweep's worker) with another `compilation_cache_dir` writes there, not into the first's."""
  first, second = tmp_path / "first", tmp_path / "second"
  compilation.enable_persistent_cache(str(first))
  jax.jit(lambda x: x * 2 + 1).lower(jax.numpy.ones(3)).compile()
  compilation.enable_persistent_cache(str(second))
  jax.jit(lambda x: x * 3 - 1).lower(jax.numpy.ones(5)).compile()
  assert any(first.iterdir()) and any(second.iterdir())


def _save_and_count_compiles(mngr, step, state, config_json) -> int:
  with backend_compiles() as compiles:
    checkpoints.save(mngr, step, state, {}, stage=0, config_json=config_json)
    checkpoints.wait(mngr)
  return len(compiles)


def test_a_checkpoint_of_a_replicated_state_compiles_nothing(smoke_config, tmp_path, fresh_compiles):
  """Each array is written whole from its first replica (`single_replica_writes`): orbax's
  replica-parallel write would cut every array on each of the 4 devices with a compiled
  slice, dozens of compiles at a process's first checkpoint. The same state restores."""
  _, _, state = _setup(smoke_config)
  config_json = json.loads(smoke_config.to_json())
  mngr = checkpoints.manager(epath.Path(tmp_path), max_to_keep=3)
  try:
    assert _save_and_count_compiles(mngr, 1, state, config_json) == 0
    checkpoints.single_replica_writes(False)  # What this would cost: the counter hears it.
    assert _save_and_count_compiles(mngr, 2, state, config_json) > 10
  finally:
    checkpoints.single_replica_writes()
  restored, _, meta = checkpoints.restore_latest(mngr, epath.Path(tmp_path), state, config_json)
  assert meta["step"] == 2
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  mngr.close()


def test_the_checkpoint_benchmark_times_two_saves():
  """`experiments/checkpoint_bench.py`'s case for one model, in this process, with the
  writes every run uses (docs/BENCHMARKS.md has its table)."""
  sys.path.insert(0, str(REPO / "experiments"))
  try:
    import checkpoint_bench  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(REPO / "experiments"))
  result = checkpoint_bench._one("simple_cnn", replica_parallel=False)  # pylint: disable=protected-access
  assert result["arrays"] == 44 and result["devices"] == jax.device_count() == 4
  assert len(result["seconds"]) == 2 and all(w > 0 and c > 0 for w, c in result["seconds"])
  assert not ocp.type_handlers.get_type_handler(jax.Array)._use_replica_parallel  # pylint: disable=protected-access


LAZY_IMPORT_PROBE = """
import contextlib, sys, threading
from etils import epy

original, opened = epy.lazy_imports, []

@contextlib.contextmanager
def lazy_imports(*args, **kwargs):  # Each window, the module that opened it and the threads.
  opened.append((sys._getframe(2).f_globals.get("__name__"), threading.active_count()))
  with original(*args, **kwargs):
    yield

epy.lazy_imports = lazy_imports
from progressive import cli
try:
  cli.main(["progressive", *sys.argv[1:]])
finally:
  print("WINDOWS", [name for name, threads in opened if threads > 1], file=sys.stderr)
"""


@pytest.mark.slow
def test_no_lazy_import_window_opens_while_a_stage_compiles(smoke_config, tmp_path):
  """etils' `epy.lazy_imports()`, which TFDS's modules open when first imported, swaps
  `builtins.__import__` for every thread: an import that JAX makes while a stage compiles
  in the background then became a lazy module of a class (`jax._src.hijax.HiPspec`), and
  the compile failed. Every such module is imported before the first compile starts."""
  result = subprocess.run(
      [sys.executable, "-c", LAZY_IMPORT_PROBE, "train", "--config=configs/default.py:smoke",
       f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={smoke_config.data.data_dir}",
       "--config.progress_bar=False"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "WINDOWS []" in result.stderr, result.stderr[-2000:]
