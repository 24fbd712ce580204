"""The command line: one pattern for every entry point (`progressive.cli`)."""

import importlib
import os
import pathlib
import subprocess
import sys
import types

import pytest
from absl import flags, logging

from progressive import cli

REPO = pathlib.Path(__file__).parents[1]
SMOKE = f"--config={REPO / 'configs' / 'default.py'}:smoke"
MODULES = {name: module for name, (module, _) in cli.COMMANDS.items()}


def test_entry_points_import_together_and_define_no_flags():
  modules = [importlib.import_module(m) for m in MODULES.values()]
  defined = flags.FLAGS.flags_by_module_dict()
  assert not [m for m in defined if m.startswith("progressive") or m == "__main__"]
  for name in ("config", "workdir", "sizes", "start_lr", "print_commands", "num_images"):
    assert name not in flags.FLAGS
  for (name, module_name), module in zip(MODULES.items(), modules):
    assert module.COMMAND.name == name and cli.load(name) is module.COMMAND, module_name
    for _ in range(2):  # A fresh FlagValues each time: no clash.
      fv = cli.make_flags(module.COMMAND, ["prog"])
      assert "verbosity" in fv and "help" in fv


def test_parse_reads_config_and_overrides_from_the_given_argv():
  main = importlib.import_module("progressive.commands.train")
  fv = cli.parse(main.COMMAND, ["prog", SMOKE, "--config.opt.lr_max=0.5", "--workdir=/tmp/x"])
  assert fv.config.opt.lr_max == 0.5 and fv.workdir == "/tmp/x" and not fv.force
  bench = importlib.import_module("progressive.commands.bench")
  fv = cli.parse(bench.COMMAND, ["prog", SMOKE, "--sizes=16,32"])
  assert fv.config.opt.lr_max == 0.2 and fv.sizes == ["16", "32"]


@pytest.mark.parametrize(
    "args,message",
    [
        ([SMOKE, "--config.opt.nme=1"], '--config.opt.nme names no config field. Did you mean "name"'),
        ([SMOKE, "--config.nosuch.x=1"], "--config.nosuch.x names no config field."),
        ([SMOKE.replace(":smoke", ":nosuch")], "Unknown config variant 'nosuch'"),
        ([SMOKE, "--config.opt.lr_max=abc"], "flag --config.opt.lr_max=abc: could not convert"),
        (["--config=configs/nosuch.py"], "Cannot load --config=configs/nosuch.py: [Errno 2]"),
        (["--config=configs/nosuch.py", "--config.seed=1"], "Cannot load the config file: [Errno 2]"),
        ([], "Flag --config must have a value other than None."),
        ([SMOKE, "--nosuch=1"], "Unknown command line flag 'nosuch'"),
        ([SMOKE, "extra"], "Unexpected arguments ['extra']"),
    ],
)
def test_a_bad_command_line_is_one_line(args, message):
  main = importlib.import_module("progressive.commands.train")
  with pytest.raises(cli.Error) as info:
    cli.parse(main.COMMAND, ["prog", "--workdir=/tmp/x", *args])
  assert message in cli.one_line(info.value) and "\n" not in cli.one_line(info.value)


def test_execute_maps_errors_and_signals_to_exit_codes(monkeypatch, capsys):
  from progressive.config import ConfigError  # pylint: disable=import-outside-toplevel
  from progressive.training import (
    checkpoints,
    train,  # pylint: disable=import-outside-toplevel
  )

  main = importlib.import_module("progressive.commands.train")
  fv = cli.parse(main.COMMAND, ["prog", SMOKE, "--workdir=/tmp/x"])
  verbosity = logging.get_verbosity()
  outcomes = iter([
      ConfigError("config.x is bad,\nsee y."),
      train.NonFiniteLossError("loss is nan at step 3."),
      checkpoints.CheckpointWriteError("Not enough space for the checkpoint of step 16."),
      types.SimpleNamespace(interrupted="SIGTERM"),
      types.SimpleNamespace(interrupted=None),
  ])

  def fake_train(config, workdir, force):
    outcome = next(outcomes)
    if isinstance(outcome, Exception):
      raise outcome
    return outcome

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  try:
    assert cli.execute(main.COMMAND, fv) == 2
    assert capsys.readouterr().err == "Error: config.x is bad, see y.\n"
    with pytest.raises(SystemExit) as info:
      cli.execute(main.COMMAND, fv)
    assert info.value.code == "Training stopped: loss is nan at step 3."  # Exit status 1.
    assert cli.execute(main.COMMAND, fv) == 1  # A full disk: not a usage error.
    assert capsys.readouterr().err == "Error: Not enough space for the checkpoint of step 16.\n"
    assert cli.execute(main.COMMAND, fv) == 128 + 15
    assert cli.execute(main.COMMAND, fv) is None
    assert logging.get_verbosity() == logging.WARNING
  finally:
    logging.set_verbosity(verbosity)


def test_a_multi_process_run_leaves_together_only_once_it_finished(monkeypatch):
  """After a distributed run's command returns, every process meets at JAX's shutdown
  barrier before exiting; a run that failed here leaves it to JAX's exit handler."""
  from progressive.config import ConfigError  # pylint: disable=import-outside-toplevel
  from progressive.training import parallel, train  # pylint: disable=import-outside-toplevel

  main = importlib.import_module("progressive.commands.train")
  fv = cli.parse(main.COMMAND, ["prog", SMOKE, "--workdir=/tmp/x"])
  events = []
  monkeypatch.setattr(parallel, "initialize_distributed",
                      lambda config: events.append("join") or True)
  monkeypatch.setattr(parallel, "shutdown_distributed", lambda: events.append("leave"))
  outcomes = iter([types.SimpleNamespace(interrupted=None), ConfigError("config.x is bad.")])

  def fake_train(config, workdir, force):
    events.append("train")
    outcome = next(outcomes)
    if isinstance(outcome, Exception):
      raise outcome
    return outcome

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  verbosity = logging.get_verbosity()
  try:
    assert cli.execute(main.COMMAND, fv) is None
    assert events == ["join", "train", "leave"]
    assert cli.execute(main.COMMAND, fv) == 2
    assert events[3:] == ["join", "train"]
  finally:
    logging.set_verbosity(verbosity)


def _run(*args, timeout=120):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=dict(env, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(result, message):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


BAD_LR = [SMOKE, "--config.opt.lr_max=-1"]
BAD_ARGS = {
    "train": BAD_LR,
    "lr-find": BAD_LR,
    "bench": BAD_LR,
    "arch": [SMOKE, "--config.model.name=nosuch", "--num_classes=10"],
    "analyze": [],
    "sweep": [f"--config={REPO / 'configs' / 'antialias.py'}:smoke", "--set=opt.nosuch=1"],
    "invariance": [f"--images={REPO}"],
    "import": ["--arch=resnet18", f"--weights={REPO / 'nosuch.pth'}"],
    "imagenet-val": [f"--src={REPO}", f"--out={REPO / 'nosuch'}"],
}
MESSAGES = {
    "train": "config.opt.lr_max must be positive, got -1.0.",
    "lr-find": "config.opt.lr_max must be positive, got -1.0.",
    "bench": "config.opt.lr_max must be positive, got -1.0.",
    "arch": "config.model.name must be one of",
    "analyze": "holds no run",
    "invariance": "holds no run",
    "import": "nosuch.pth",
    "imagenet-val": "holds no ILSVRC2012_val_*.JPEG files",
    "sweep": "Sweep override 'opt.nosuch' names no config field.",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_command_reports_a_bad_config_in_one_line(name, tmp_path):
  workdir = tmp_path / "run"
  args = BAD_ARGS[name] + ([] if name in ("arch", "bench", "imagenet-val")
                           else [f"--workdir={workdir}"])
  result = _run("-m", "progressive", name, *args)
  _assert_one_line_error(result, MESSAGES[name])
  assert not workdir.exists()


@pytest.mark.slow
def test_progressive_help_lists_the_commands():
  result = _run("-m", "progressive", "--help")
  assert result.returncode == 0, result.stderr
  for name in cli.COMMANDS:
    assert f"\n  {name} " in result.stdout
  _assert_one_line_error(_run("-m", "progressive", "nosuch"), "Unknown command 'nosuch'")
