"""Faults of training itself: non-finite config values. Each ends in one line."""

import importlib

import pytest
from absl import logging

from progressive import cli
from progressive.config import ConfigError, validate

TRAIN = importlib.import_module("progressive.commands.train").COMMAND


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
