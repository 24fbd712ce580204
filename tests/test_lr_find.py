"""The LR range test: schedule, smoothing, fastai's suggestions, outputs and the CLI."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from progressive.commands import lr_find as lr_find_command
from progressive.config import ConfigError
from progressive.training import lr_find
from progressive.training.workdir import WorkdirError

ROOT = pathlib.Path(__file__).parents[1]


def test_sweep_grows_exponentially_and_writes_outputs(smoke_config, tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  start, end, n = 1e-5, 1.0, 20
  result = lr_find_command.find_and_report(smoke_config, str(tmp_path), start_lr=start,
                                           end_lr=end, num_steps=n)

  # The LRs the optimiser used, read back from the device.
  lrs = np.asarray(result["lrs"])
  assert len(lrs) == n and not result["stopped_early"]
  np.testing.assert_allclose(lrs[0], start, rtol=1e-6)
  np.testing.assert_allclose(lrs[-1], end, rtol=1e-5)
  np.testing.assert_allclose(lrs, start * (end / start) ** (np.arange(n) / (n - 1)), rtol=1e-5)
  np.testing.assert_allclose(lrs[1:] / lrs[:-1], (end / start) ** (1 / (n - 1)), rtol=1e-5)
  np.testing.assert_allclose(result["smoothed"], lr_find.smooth_losses(result["losses"], 0.98))
  assert result["setup"]["momentum"] == pytest.approx(smoke_config.opt.moms[0])  # From the device.
  assert (result["setup"]["size"], result["setup"]["batch_size"]) == (16, 64)  # Stage 0.

  for name, s in result["suggestions"].items():
    assert n // 10 <= s["step"] < n - lr_find.SKIP_END, name
    assert s["at_lr"] == result["lrs"][s["step"]] and s["loss"] == result["smoothed"][s["step"]]
    assert start <= s["at_lr"] <= end, name
    assert s["lr"] == (s["at_lr"] / 10 if name == "minimum" else s["at_lr"]), name
  assert result["lr_max"] == result["suggestions"]["minimum"]["lr"]

  assert json.loads((tmp_path / "lr_find.json").read_text()) == json.loads(json.dumps(result))
  assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find.json", "lr_find.png", "notes.txt"]
  assert (tmp_path / "notes.txt").read_text() == "mine"


def test_stops_when_the_smoothed_loss_diverges(smoke_config, tmp_path):
  start, end, n = 1e-4, 1e6, 30
  result = lr_find.lr_find(smoke_config, str(tmp_path), start_lr=start, end_lr=end, num_steps=n)
  smoothed = np.asarray(result["smoothed"])
  assert result["stopped_early"] and len(smoothed) < n
  assert "4 x its minimum" in result["stop_reason"]
  # The last recorded step is the first whose smoothed loss passed 4x the minimum so far.
  assert smoothed[-1] > 4 * smoothed.min()
  assert all(s <= 4 * m for s, m in zip(smoothed[:-1], np.minimum.accumulate(smoothed[:-1])))
  expected = lr_find.exponential_lrs(start, end, n)[:len(smoothed)]
  np.testing.assert_allclose(result["lrs"], expected, rtol=1e-5)


def test_non_finite_loss_stops_and_the_json_stays_strict(smoke_config, tmp_path):
  result = lr_find.lr_find(
      smoke_config, str(tmp_path), start_lr=1e-4, end_lr=1e30, num_steps=30, stop_div=False
  )
  assert result["stopped_early"] and result["stop_reason"].startswith("non-finite loss")
  assert result["losses"][-1] is None and result["smoothed"][-1] is None
  json.loads((tmp_path / "lr_find.json").read_text(), parse_constant=pytest.fail)


def test_smoothing_by_hand():
  # beta 0.5: moving averages 2, 2, 1.5, bias corrections 1 - 0.5**k = 0.5, 0.75, 0.875.
  np.testing.assert_allclose(lr_find.smooth_losses([4.0, 2.0, 1.0], 0.5), [4.0, 8 / 3, 12 / 7])
  np.testing.assert_allclose(lr_find.smooth_losses([3.0, 1.0, 2.0], 0.0), [3.0, 1.0, 2.0])


def _synthetic_curve():
  """20 points; fastai suggests from indices 2..14 (num_steps // 10 to the last 5)."""
  lrs = lr_find.exponential_lrs(1e-6, 1.0, 20)
  losses = np.full(20, 9.0)
  losses[0] = 0.5  # Lower than anything, but before the window.
  losses[16] = 0.1  # Likewise, after it.
  # Steps:                -0.1 -0.2 -1.0 -0.9 -0.1 -0.1 -0.1 -0.3 +0.2
  losses[2:15] = [5.0, 4.9, 4.7, 3.7, 2.8, 2.7, 2.6, 2.5, 2.2, 2.4, 3.0, 5.0, 9.0]
  return lrs, losses


def test_suggestions_by_hand():
  lrs, losses = _synthetic_curve()
  s = lr_find.suggest(lrs, losses, num_steps=20)
  assert s["minimum"]["step"] == 10 and s["minimum"]["lr"] == pytest.approx(lrs[10] / 10)
  # The steepest forward difference is 4 -> 5 (-1.0): fastai takes its left end, 4
  # (central differences, np.gradient, would pick 5: (-1.0 - 0.9) / 2).
  assert s["steep"]["step"] == 4 and s["steep"]["lr"] == lrs[4]
  # The longest decreasing run is 5.0 ... 2.2 (9 points, window positions 0..8); fastai
  # puts its start one before it (-1) and takes -1 + int(9 / 3) + int(9 / 6) = 3: step 5.
  assert s["valley"]["step"] == 5 and s["valley"]["lr"] == lrs[5]
  assert s["minimum"]["loss"] == 2.2 and s["steep"]["loss"] == 4.7


def test_valley_with_short_decreasing_runs():
  lrs = lr_find.exponential_lrs(1e-3, 1.0, 4)
  assert lr_find._valley(lrs, np.arange(4.0)) == (lrs[0], 0)  # As fastai.
  # The longest run is 1.0, 0.0 (positions 0..1): fastai's arithmetic gives
  # -1 + int(2 / 3) + int(1 / 3) = -1, its last point; here the run's first.
  assert lr_find._valley(lrs, np.asarray([1.0, 0.0, 1.0, 2.0])) == (lrs[0], 0)


def test_suggestions_stop_at_the_first_non_finite_loss():
  lrs, losses = _synthetic_curve()
  losses[9], losses[11] = np.nan, 0.01
  s = lr_find.suggest(lrs, losses, num_steps=20)
  assert s["minimum"]["step"] == 8 and s["steep"]["step"] == 4
  assert lr_find.suggest(lrs[:8], losses[:8], num_steps=20) == dict.fromkeys(lr_find.SUGGESTIONS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(start_lr=1.0, end_lr=0.1), r"--end_lr=0.1 must be a number above --start_lr=1.0"),
        (dict(start_lr=0.0), r"--start_lr=0.0 must be a positive number"),
        (dict(num_steps=1), r"--num_steps=1 must be an integer >= 2"),
        (dict(batch_size=30), r"--batch_size=30 does not divide evenly over 4 devices"),
        (dict(size=4), r"--size=4 must be an integer >= \d+"),
        (dict(beta=1.0), r"--smoothing=1.0 \(fastai's beta\) must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_fail_before_any_work(smoke_config, tmp_path, kwargs, message):
  workdir = tmp_path / "lr"
  with pytest.raises(ConfigError, match=message):
    lr_find.lr_find(smoke_config, str(workdir), **kwargs)
  assert not workdir.exists()


def test_a_training_runs_workdir_is_refused(smoke_config, tmp_path):
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(WorkdirError, match=r"holds a training run's checkpoints.*--workdir="):
    lr_find.lr_find(smoke_config, str(tmp_path))
  assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]


def _run_cli(data_dir, *args):
  return subprocess.run(
      [sys.executable, "-m", "progressive", "lr-find", "--config=configs/default.py:smoke",
       f"--config.data.data_dir={data_dir}", *args],
      capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
  )


@pytest.mark.slow
def test_cli(data_dir, tmp_path):
  run = _run_cli(
      data_dir, f"--workdir={tmp_path}", "--num_steps=12", "--start_lr=1e-4", "--end_lr=1"
  )
  assert run.returncode == 0, run.stderr
  assert "LR range test: 12/12 steps" in run.stdout
  lr_max = json.loads((tmp_path / "lr_find.json").read_text())["lr_max"]
  assert f"--config.opt.lr_max={lr_max:.3g}" in run.stdout
  assert (tmp_path / "lr_find.png").exists()


@pytest.mark.slow
def test_cli_bad_flag_fails_before_compiling(data_dir, tmp_path):
  run = _run_cli(data_dir, f"--workdir={tmp_path / 'lr'}", "--start_lr=1", "--end_lr=0.1")
  assert run.returncode != 0
  assert "Error: --end_lr=0.1 must be a number above --start_lr=1.0" in run.stderr
  assert "Compiled" not in run.stdout and not (tmp_path / "lr").exists()
