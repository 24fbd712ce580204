"""Faults of training itself: non-finite config values, steps and states, and a signal
during a stage's end. Each ends in one line and loses nothing a rerun cannot redo.

Steps are poisoned by wrapping `steps.train_step` (looked up when the step is traced):
an infinite learning rate on chosen steps makes the update overflow while the loss and
gradients stay finite, as `--config.opt.lr_max=inf` did before the config refused it.
"""

import importlib
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import logging
from etils import epath

from progressive import cli
from progressive.config import ConfigError, validate
from progressive.training import checkpoints, compilation, steps, train
from progressive.training.metrics import read_rows
from tests.runs import assert_same_params, eval_rows, train_rows

TRAIN = importlib.import_module("progressive.commands.train").COMMAND


def _poison(monkeypatch, when):
  """Makes the update of the steps where `when(step, size)` holds overflow: `step` is the
  state's step before it (traced), `size` the stage's (static)."""
  real = steps.train_step

  def poisoned(state, batch, *, size, **kwargs):
    hyperparams = state.opt_state.hyperparams
    lr_scale = hyperparams["lr_scale"]
    bad = {**hyperparams, "lr_scale": jnp.where(when(state.step, size), jnp.inf, lr_scale)}
    state, metrics = real(state.replace(opt_state=state.opt_state._replace(hyperparams=bad)),
                          batch, size=size, **kwargs)
    restored = {**state.opt_state.hyperparams, "lr_scale": lr_scale}
    return state.replace(opt_state=state.opt_state._replace(hyperparams=restored)), metrics

  monkeypatch.setattr(steps, "train_step", poisoned)


def _all_finite(workdir) -> dict[int, bool]:
  """Whether every leaf of each checkpoint's state on disk is finite, by step."""
  workdir = epath.Path(workdir)
  return {
      step: all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(
          ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")))
      for step in checkpoints.steps_on_disk(workdir)
  }


def _execute(argv, capsys):
  """Runs `progressive train` in this process: (exit status or SystemExit message, stderr)."""
  fv = cli.parse(TRAIN, ["progressive", *argv])
  verbosity = logging.get_verbosity()
  try:
    status = cli.execute(TRAIN, fv)
  except SystemExit as e:  # `Training stopped: ...`, exit status 1.
    status = e.code
  finally:
    logging.set_verbosity(verbosity)
  return status, capsys.readouterr().err


# Numbers in the config.


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.opt.lr_max=inf",
         ("config.opt.lr_max=inf is infinite (a float beyond 1.8e308 reads as inf); give a "
          "finite one (its default is 0.4).")),
        ("--config.stages=({'size': 16, 'epochs': 1e999},)",
         "config.stages[0].epochs=inf is infinite"),
        ("--config.opt.weight_decay=nan",
         "config.opt.weight_decay=nan is not a number; give a finite one (its default is 0.0005)."),
    ],
)
def test_non_finite_config_values_are_one_line_before_anything_runs(override, message, data_dir,
                                                                    tmp_path, capsys):
  workdir = tmp_path / "run"
  status, err = _execute(["--config=configs/default.py:smoke", f"--workdir={workdir}",
                          f"--config.data.data_dir={data_dir}", override], capsys)
  assert status == cli.EXIT_ERROR
  assert err.startswith(f"Error: {message}") and err.count("\n") == 1, err
  assert not workdir.exists()  # Refused before the workdir, the data or any compile.


def _stage(config, **stage):
  config.stages = (stage,)
  config.eval_sizes = (stage["size"],)


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda c: setattr(c.opt, "moms", (0.95, float("nan"), 0.95)),
         (r"^config\.opt\.moms\[1\]=nan is not a number; give a finite one \(config\.opt\.moms "
          r"defaults to \(0\.95, 0\.85, 0\.95\)\)\.$")),
        (lambda c: _stage(c, size=16, epochs=float("nan")),
         r"^config\.stages\[0\]\.epochs=nan is not a number; .* \(a stage is e\.g\. dict\(size=32"),
        (lambda c: setattr(c.data, "mean", (0.5, float("-inf"), 0.5)),
         r"^config\.data\.mean\[1\]=-inf is infinite"),
        (lambda c: setattr(c, "seed", 2**70),
         r"^config\.seed=1180591620717411303424 does not fit in 64 bits; give a smaller one"),
        (lambda c: _stage(c, size=16, epochs=1e300),  # Finite, but its steps overflow.
         r"^config\.stages\[0\]\.epochs=1e\+300 makes the run longer than 2147483647 steps"),
        (lambda c: _stage(c, size=16, steps=2**40),
         r"^config\.stages\[0\]\.steps=1099511627776 makes the run longer than 2147483647 steps"),
    ],
)
def test_non_finite_or_overflowing_values_name_the_field(edit, pattern, smoke_config):
  edit(smoke_config)
  with pytest.raises(ConfigError, match=pattern):
    validate(smoke_config, num_devices=4)


# Non-finite steps and states.


@pytest.mark.slow  # A training run in this process, 5 s on 2 cores: full suite only.
def test_non_finite_steps_can_be_skipped(smoke_config, tmp_path, monkeypatch):
  _poison(monkeypatch, lambda step, size: step % 4 == 1)  # A quarter of the steps.
  smoke_config.skip_nonfinite = True
  _stage(smoke_config, size=16, steps=12)
  summary = train.train_and_evaluate(smoke_config, str(tmp_path))
  rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "train"]
  assert summary.step == 12
  assert [r["skipped"] for r in rows] == [1] * 3  # Their loss was finite; their update not.
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(summary.state.params)))
  assert all(_all_finite(tmp_path).values())


@pytest.mark.slow  # A training run in this process, 5 s on 2 cores: full suite only.
def test_a_run_that_skips_most_steps_stops_in_one_line(data_dir, tmp_path, monkeypatch, capsys):
  _poison(monkeypatch, lambda step, size: size == 24)  # Every step of the second stage.
  workdir = tmp_path / "run"
  status, err = _execute([
      "--config=configs/default.py:smoke", f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
      "--config.skip_nonfinite=True", "--config.eval_sizes=(16,)",
      "--config.stages=({'size': 16, 'steps': 4}, {'size': 24, 'steps': 8})",
  ], capsys)
  assert status == (
      "Training stopped: 8 of the last 12 steps (to step 12, stage 1, 24px) were skipped as "
      "non-finite (config.skip_nonfinite), more than 50%. The last checkpoint, "
      f"{workdir}/checkpoints/4, holds finite parameters. Lower config.opt.lr_max and train "
      "again in a new --workdir."
  )
  assert "Traceback" not in err and "NaN or Inf" not in err, err
  rows = [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "train"]
  assert [(r["step"], r["skipped"]) for r in rows] == [(4, 0), (8, 4), (12, 4)]
  assert _all_finite(workdir) == {4: True}


@pytest.mark.slow  # A training run in this process, 5 s on 2 cores: full suite only.
def test_a_state_that_is_not_finite_is_never_checkpointed(smoke_config, tmp_path, monkeypatch):
  _poison(monkeypatch, lambda step, size: step == 0)
  smoke_config.stages = (dict(size=16, steps=1), dict(size=24, steps=1))
  smoke_config.eval_sizes = (16,)
  # The loss of step 1 is finite (taken before its update): only the state is not.
  with pytest.raises(train.NonFiniteLossError, match=(
      r"^The state at step 1 \(stage 0, 16px\) is not finite: parameter \['params'\]\S+ "
      r"holds NaN or infinity; it was not checkpointed\. No checkpoint was written\. Lower ")):
    train.train_and_evaluate(smoke_config, str(tmp_path))
  assert checkpoints.steps_on_disk(epath.Path(tmp_path)) == []


# A signal during a stage's end.


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """An uninterrupted smoke run (checkpoints at the stage ends: steps 8, 16, 24)."""
  from configs import default  # pylint: disable=import-outside-toplevel

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


@pytest.mark.slow
def test_sigint_during_the_stage_end_evaluation_stops_before_the_next_stage(
    reference, tmp_path, monkeypatch):
  config, ref_dir = reference
  config = config.copy_and_resolve_references()
  config.compile_ahead = False  # Each program compiles when first used, so a wait shows.
  compiled = []
  real_compile, real_evaluate = compilation._compile, train._Session.evaluate

  def compile_(fn, args, static):
    compiled.append(static)
    return real_compile(fn, args, static)

  def evaluate_then_sigint(self, state, step, stage):
    if stage.index == 0:  # Ctrl-C while the first stage's end is evaluated.
      os.kill(os.getpid(), signal.SIGINT)
    return real_evaluate(self, state, step, stage)

  monkeypatch.setattr(compilation, "_compile", compile_)
  monkeypatch.setattr(train._Session, "evaluate", evaluate_then_sigint)
  summary = train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  assert summary.interrupted == "SIGINT" and summary.step == 8
  assert checkpoints.steps_on_disk(epath.Path(tmp_path)) == [8]  # The stage's end, complete.
  assert 24 not in compiled  # Stage 1's program (24 px) never compiled,
  assert not [r for r in read_rows(tmp_path / "metrics.jsonl") if r.get("stage") == 1]  # nor ran.

  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary.step == 24 and summary.interrupted is None
  assert summary.compile[0]["step"] == 8 and summary.compile[0]["stage"] == 1  # Resumed.
  assert train_rows(tmp_path) == train_rows(ref_dir)
  assert eval_rows(tmp_path) == eval_rows(ref_dir)
  params = [ocp.StandardCheckpointer().restore(w / "checkpoints" / "24" / "state")["params"]
            for w in (tmp_path, ref_dir)]
  assert_same_params(*params)
