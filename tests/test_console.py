"""The installed `progressive` command as a user runs it: from a directory outside the
repository, with no `PYTHONPATH`, on the config files in `configs/`."""

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from progressive.data import folder
from progressive.sweeps import run as runner
from progressive.sweeps import spec
from progressive.training.metrics import read_rows

REPO = pathlib.Path(__file__).parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.py"))
pytestmark = pytest.mark.slow


def progressive(args, cwd, timeout=600):
  """Runs the installed console script (beside this Python) in `cwd`, without PYTHONPATH."""
  script = pathlib.Path(sys.executable).with_name("progressive")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_every_config_loads_from_another_directory(tmp_path):
  """Each file in configs/ (default variant) loads through `progressive arch`'s parser in a
  process whose directory and path know nothing of the repository."""
  code = ("import sys\nfrom progressive import cli\nfrom progressive.commands import arch\n"
          "for path in sys.argv[1:]:\n"
          "  fv = cli.parse(arch.COMMAND, ['prog', '--config=' + path])\n"
          "  print(path, fv.config.model.name)\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  paths = [str(REPO / "configs" / name) for name in CONFIGS]
  result = subprocess.run([sys.executable, "-c", code, *paths], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(result.stdout.splitlines()) == len(CONFIGS) >= 16


def test_train_photos_smoke_from_another_directory(tmp_path):
  """The workdir given relative to the current directory, as a user types it (orbax
  writes only to absolute paths: this failed at the first checkpoint). (A config
  importing `configs.default` trains a ResNet-18 from another directory in
  tests/test_own_images.py too.)"""
  for config, extra in (("photos.py:smoke", [f"--config.data.data_dir={tmp_path / 'tfds'}"]),):
    workdir = tmp_path / config.split(".")[0]
    result = progressive(["train", f"--config={REPO / 'configs' / config}",
                          f"--workdir={workdir.name}", "--config.progress_bar=False", *extra],
                         cwd=tmp_path)
    assert result.returncode == 0, (config, result.stderr[-3000:])
    assert any(r["event"] == "eval" for r in read_rows(workdir / "metrics.jsonl")), config
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["16", "24", "8"]
    # TFDS's noise (photos is generated here, and its images decoded by TFDS's features).
    for noise in ("Downloading", "Unknown size", "OpenCV", "dataset_info.json"):
      assert noise not in result.stdout + result.stderr, (config, noise)
  assert "Generating photos/" in result.stdout


def test_arch_on_the_folder_config_from_another_directory(tmp_path):
  root = folder.write_photo_folder(tmp_path / "images", {"train": 1, "val": 1}, size=(64, 48))
  result = progressive(["arch", f"--config={REPO / 'configs' / 'folder.py'}", "--size=64",
                        f"--config.data.data_dir={root}"], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "receptive" in result.stdout.lower() or "rf" in result.stdout.lower()


def test_printed_sweep_commands_run_from_another_directory(data_dir, tmp_path):
  """`progressive sweep --print_commands`, given a relative config path in the repository,
  prints commands that run as printed from elsewhere."""
  common = {"data.data_dir": data_dir, "progress_bar": False}
  sweep = spec.load(os.path.relpath(REPO / "configs" / "head.py") + ":smoke", common)
  lines = runner.train_commands(sweep, str(tmp_path / "sweep"))
  assert lines and all(l.startswith(f"progressive train --config={REPO}/configs/head.py:smoke")
                       for l in lines)
  assert len(lines) == 2 and "--config.model.head=flatten" in lines[1]
  assert "'--config.eval_sizes=(32,)'" in lines[1]
  args = shlex.split(lines[-1])
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  result = progressive(args[1:], cwd=elsewhere)
  assert result.returncode == 0, result.stderr[-3000:]
  workdir = pathlib.Path(args[3].split("=", 1)[1])
  assert workdir.is_absolute() and workdir.name == "flatten"
  rows = read_rows(workdir / "metrics.jsonl")
  assert {r["size"] for r in rows if r["event"] == "eval"} == {32}


def test_a_config_file_with_a_syntax_error_or_a_failed_import_is_one_line(tmp_path):
  """For a run's config and a sweep's file alike (the sweep printed a traceback)."""
  configs = tmp_path / "project" / "configs"
  configs.mkdir(parents=True)
  (configs / "broken.py").write_text("import ml_collections\n\ndef get_config(:\n  pass\n")
  (configs / "missing.py").write_text("import ml_collections\nfrom mine import base\n")
  for command in (["arch"], ["sweep", f"--workdir={tmp_path / 'sweep'}"]):
    for name, error in (("broken.py", "invalid syntax at line 3."),
                        ("missing.py", "ModuleNotFoundError: No module named 'mine' (line 2).")):
      result = progressive([*command, f"--config={configs / name}"], cwd=tmp_path)
      assert result.returncode == 2, (command, result.stderr[-3000:])
      assert result.stderr.strip().splitlines() == [
          f"Error: Cannot load the config file {configs / name}: {error}"], command
  assert not (tmp_path / "sweep").exists()


def test_a_config_importing_its_own_defaults_loads_from_its_project(tmp_path):
  """A researcher's project laid out like this repository: `configs/mine.py` imports
  `configs.base`, and loads from any directory."""
  configs = tmp_path / "project" / "configs"
  configs.mkdir(parents=True)
  (configs / "base.py").write_text("from progressive import config\n\n"
                                   "def get_config():\n"
                                   "  return config.default_config()\n")
  (configs / "mine.py").write_text(
      "from configs import base\n\ndef get_config(arg=None):\n"
      "  config = base.get_config()\n  config.model.channels = (4, 8, 16)\n  return config\n")
  result = progressive(["arch", f"--config={configs / 'mine.py'}", "--size=32"], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
