"""experiments/run_side_by_side.sh: several sweeps at once, their datasets prepared first.
Apart from test_experiments.py so that the test runs on whichever worker is free."""

import csv
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).parents[1]

SIDE_BY_SIDE_CONFIG = """
from configs import default

def get_config(arg=None):
  config = default.get_config("smoke")
  config.data.name = "photos" if arg == "photos" else "scale_shapes"
  config.progress_bar = False
  config.stages = [dict(size=16, steps=4)]
  config.eval_sizes = (16,)
  config.checkpoint_every_steps = 0
  return config

def get_sweep(arg=None):
  return [dict(name="p0", seed=0)]
"""


@pytest.mark.slow
def test_side_by_side_prepares_each_dataset_once_then_runs_every_sweep(data_dir, tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(SIDE_BY_SIDE_CONFIG)
  data = tmp_path / "tfds"
  shutil.copytree(data_dir, data)  # photos/small is prepared beside scale_shapes/small.
  root = tmp_path / "root"
  script = REPO / "experiments" / "run_side_by_side.sh"
  args = ["bash", str(script), str(root), str(data), "1", "0", f"{config}", f"{config}:photos",
          "--", "--shift_images=8", "--bn_images=64"]
  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert "aggregating what finished" not in result.stdout  # Each sweep aggregated itself.
  assert result.stdout.count("prepared scale_shapes/small") == 1
  assert result.stdout.count("prepared photos/small") == 1
  for name in ("tiny", "tiny_photos"):
    assert (root / f"{name}.log").exists()
    with (root / name / "results.csv").open() as f:
      assert [r["name"] for r in csv.DictReader(f)] == ["p0"]
  none = subprocess.run(["bash", str(script), str(root), str(data), "1", "0"], cwd=REPO,
                        capture_output=True, text=True, timeout=60)
  assert none.returncode == 2 and "No sweep given" in none.stderr
