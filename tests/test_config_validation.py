"""Bad configs fail fast, naming the field and what it may be."""

import pathlib
import subprocess
import sys

import pytest

from configs import default
from progressive.config_validation import ConfigError, validate


def smoke():
  return default.get_config("smoke")


def test_default_and_smoke_configs_are_valid():
  validate(default.get_config(), num_devices=4)
  validate(smoke(), num_devices=4)


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda c: setattr(c.model, "name", "resnet9000"), r"config\.model\.name must be one of \['simple_cnn'\]"),
        (lambda c: setattr(c.data, "name", "mnist_typo"), r"config\.data\.name must be one of"),
        (lambda c: setattr(c.data, "builder_config", "huge"), r"builder_config must be one of \['default', 'small'\]"),
        (lambda c: setattr(c.opt, "name", "lion"), r"config\.opt\.name must be one of \['adamw', 'sgd'\]"),
        (lambda c: setattr(c.opt, "cycle", "epoch"), r"config\.opt\.cycle must be one of"),
        (lambda c: setattr(c.model, "head", "attention"), r"config\.model\.head must be one of"),
        (lambda c: setattr(c, "batch_size", 62), r"config\.batch_size=62 does not divide evenly over 4 devices"),
        (lambda c: setattr(c, "stages", []), r"config\.stages must list at least one stage"),
        (lambda c: c.stages.__setitem__(0, dict(size=0, steps=2)), r"config\.stages\[0\]\.size must be a positive integer, got 0"),
        (lambda c: c.stages.__setitem__(0, dict(size=-16, steps=2)), r"config\.stages\[0\]\.size must be a positive integer"),
        (lambda c: c.stages.__setitem__(1, dict(size=16, steps=2)), r"config\.stages\[1\]\.size=16 does not grow"),
        (lambda c: c.stages.__setitem__(0, dict(size=4, steps=2)), r"config\.stages\[0\]\.size=4 is below 8"),
        (lambda c: c.stages.__setitem__(0, dict(size=16)), r"exactly one of 'epochs' or 'steps'"),
        (lambda c: c.stages.__setitem__(0, dict(size=16, steps=2, lr=3)), r"unknown keys \['lr'\]"),
        (lambda c: c.stages.__setitem__(0, dict(size=16, steps=2, batch_size=30)), r"config\.stages\[0\]\.batch_size=30 does not divide"),
        (lambda c: setattr(c, "eval_sizes", (16, 2)), r"config\.eval_sizes\[1\]=2 is below 8"),
        (lambda c: setattr(c.opt, "lr_max", 0.0), r"config\.opt\.lr_max must be positive"),
        (lambda c: setattr(c.model, "dtype", "float16"), r"config\.model\.dtype must be one of"),
    ],
)
def test_invalid_configs_name_the_field(edit, pattern):
  config = smoke()
  edit(config)
  with pytest.raises(ConfigError, match=pattern):
    validate(config, num_devices=4)


def test_non_increasing_sizes_allowed_when_not_required():
  config = smoke()
  config.stages[1] = dict(size=16, steps=2)
  config.require_increasing_sizes = False
  validate(config, num_devices=4)


def test_flatten_head_needs_one_size():
  config = smoke()
  config.model.head = "flatten"
  with pytest.raises(ConfigError, match="ties the weights to one input size"):
    validate(config, num_devices=4)
  config.stages = [dict(size=32, steps=2)]
  config.eval_sizes = (32,)
  validate(config, num_devices=4)


def test_cli_reports_config_error_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [
          sys.executable, "-m", "progressive.main", "--config=configs/default.py:smoke",
          f"--workdir={workdir}", "--config.batch_size=63",
      ],
      capture_output=True, text=True, timeout=120, cwd=pathlib.Path(__file__).parents[1],
  )
  assert result.returncode != 0
  assert "config.batch_size=63 does not divide evenly" in result.stderr
  assert not workdir.exists()  # Nothing written, nothing prepared.
