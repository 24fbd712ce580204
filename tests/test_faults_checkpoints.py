"""Damaged or missing checkpoints cost one line each: a damaged latest checkpoint, every
checkpoint damaged, and `checkpoints/` removed while the run trains.

The reference for "nothing lost" is an uninterrupted in-process smoke run checkpointing
every 4 steps (16, 20 and 24 kept): a run that goes on must end with bitwise the same
parameters and the same train and eval rows.
"""

import errno
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

import orbax.checkpoint as ocp
import pytest
from etils import epath
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from progressive.training import checkpoints, train
from tests.runs import assert_same_params, eval_rows, train_rows

REPO = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """An uninterrupted smoke run, checkpointing every 4 steps."""
  from configs import default

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  config.checkpoint_every_steps = 4
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(config, str(workdir))
  assert checkpoints.steps_on_disk(epath.Path(workdir)) == [16, 20, 24]
  return config, workdir


def _params(workdir, step=None):
  step = step or checkpoints.steps_on_disk(epath.Path(workdir))[-1]
  path = epath.Path(workdir) / "checkpoints" / str(step) / "state"
  return ocp.StandardCheckpointer().restore(path)["params"]


def _assert_same_run(workdir, ref_dir):
  assert checkpoints.steps_on_disk(epath.Path(workdir))[-1] == 24
  assert_same_params(_params(workdir), _params(ref_dir))
  assert train_rows(workdir) == train_rows(ref_dir)
  assert eval_rows(workdir) == eval_rows(ref_dir)


def _damage(step_dir: pathlib.Path):
  """Cuts the state's data files in half, as a full disk or a bad copy leaves them."""
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      data = path.read_bytes()
      path.write_bytes(data[: len(data) // 2])


def _lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if line.strip()]


class _Unraisable:
  """Records what reaches `sys.unraisablehook` (tensorstore's reports, printed as
  tracebacks by a plain `progressive train`)."""

  def __init__(self, monkeypatch):
    self.seen = []
    monkeypatch.setattr(sys, "unraisablehook", self.seen.append)


# A damaged checkpoint.


@pytest.mark.slow  # A training run in this process, 6 s on 2 cores: full suite only.
def test_damaged_latest_checkpoint_is_one_line_and_the_previous_resumes(reference, tmp_path,
                                                                         capfd, monkeypatch):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  _damage(workdir / "checkpoints" / "24")
  unraisable = _Unraisable(monkeypatch)
  summary = train.train_and_evaluate(config, str(workdir))
  out, err = capfd.readouterr()
  warnings = [line for line in _lines(out + err) if "cannot be restored" in line]
  kept = list((workdir / checkpoints.CORRUPT_DIR).iterdir())
  assert [p.name.split("-")[0] for p in kept] == ["24"]  # Moved aside, not deleted.
  assert len(warnings) == 1, warnings  # Once, not also through absl.
  assert re.fullmatch(
      rf"WARNING: Checkpoint {re.escape(str(workdir / 'checkpoints' / '24'))} cannot be restored "
      rf"\(ValueError: .{{10,200}}\); moved it to {re.escape(str(kept[0]))}, falling back to step "
      rf"20 \(details in {re.escape(str(workdir / 'error.log'))}\)\.", warnings[0]), warnings[0]
  assert "Traceback" not in out + err and len(_lines(err)) <= 2, err  # absl's OpenCV note.
  assert not unraisable.seen  # Tensorstore's reports (if any came) went to error.log,
  assert "Traceback" in (workdir / "error.log").read_text()  # with the cause.
  assert summary.compile[0]["step"] == 20  # Resumed from the previous checkpoint.
  _assert_same_run(workdir, ref_dir)


def progressive(args, cwd, timeout=600):
  """Runs the installed console script (beside this Python) in `cwd`, without PYTHONPATH."""
  script = pathlib.Path(sys.executable).with_name("progressive")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


@pytest.mark.slow
def test_every_checkpoint_damaged_is_one_line_and_no_restart(reference, tmp_path, data_dir):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  for step in (16, 20, 24):
    _damage(workdir / "checkpoints" / str(step))
  damaged = {p.name: (p / "state").rglob("*") for p in (workdir / "checkpoints").iterdir()}
  damaged = {k: sorted(f.read_bytes() for f in v if f.is_file()) for k, v in damaged.items()}
  metrics = (workdir / "metrics.jsonl").read_bytes()
  command = ["train", f"--config={REPO / 'configs' / 'default.py'}:smoke", f"--workdir={workdir}",
             f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
             "--config.checkpoint_every_steps=4"]
  result = progressive(command, cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-3000:]
  corrupt = workdir / checkpoints.CORRUPT_DIR
  assert _lines(result.stderr) == [(
      f"Error: No checkpoint in {workdir / 'checkpoints'} can be restored: 3 unreadable "
      f"checkpoints (steps 16, 20, 24) are kept in {corrupt} (why: {workdir / 'error.log'}). The "
      "run does not start over on its own: rerun with --force to start over from step 0 in "
      "this workdir, or choose a new --workdir."
  )], result.stderr[-3000:]
  out = _lines(result.stdout)
  assert len(out) == 3 and all("cannot be restored" in line for line in out), out  # One each.
  kept = {p.name.split("-")[0]: p for p in corrupt.iterdir()}
  assert {k: sorted(f.read_bytes() for f in (p / "state").rglob("*") if f.is_file())
          for k, p in kept.items()} == damaged  # Every byte kept.
  assert (workdir / "metrics.jsonl").read_bytes() == metrics  # Nothing trained, nothing cut.
  assert "Traceback" in (workdir / "error.log").read_text()

  # The rerun finds checkpoints/ empty, and still does not start over on its own.
  with pytest.raises(checkpoints.UnreadableCheckpointsError, match="3 unreadable checkpoints"):
    train.train_and_evaluate(config, str(workdir))
  assert (workdir / "metrics.jsonl").read_bytes() == metrics
  # --force asks for it: from step 0, as the reference did; the damaged ones stay aside.
  summary = train.train_and_evaluate(config, str(workdir), force=True)
  assert summary.compile[0]["step"] == 0
  _assert_same_run(workdir, ref_dir)
  assert sorted(p.name.split("-")[0] for p in corrupt.iterdir()) == ["16", "20", "24"]


def test_every_checkpoint_damaged_stops_before_anything_trains(reference, tmp_path, capfd):
  """The quick tier's version of the case above, in process."""
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  for step in (16, 20, 24):
    _damage(workdir / "checkpoints" / str(step))
  with pytest.raises(checkpoints.UnreadableCheckpointsError) as raised:
    train.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(raised.value) and "--force" in str(raised.value)
  out, err = capfd.readouterr()
  assert len([line for line in _lines(out) if "cannot be restored" in line]) == 3
  assert "Traceback" not in out + err and "Compiled" not in out
  assert checkpoints.steps_on_disk(epath.Path(workdir)) == []
  assert checkpoints.set_aside_steps(epath.Path(workdir)) == [16, 20, 24]


@pytest.mark.parametrize("fails", [True, False])
def test_a_read_task_collected_during_the_reads_is_held_back(tmp_path, caplog, capfd,
                                                              monkeypatch, fails):
  """asyncio logs "Task exception was never retrieved" when a failed read's task is
  collected, which can come while the reads go on (it once added a stray line to the
  one-line error): after a failed read it goes to error.log, else it is logged as usual."""
  asyncio_logger = logging.getLogger("asyncio")
  monkeypatch.setattr(asyncio_logger, "filters", [])  # The late-task filter stays local.
  message = "Task exception was never retrieved\nfuture: <Task finished exception=ValueError()>"
  with checkpoints._QuietReads(epath.Path(tmp_path)) as reads:  # pylint: disable=protected-access
    if fails:
      reads.failed()
    asyncio_logger.error(message, exc_info=(ValueError, ValueError("a bad read"), None))
    assert not caplog.records  # Held back while the reads go on.
  out, err = capfd.readouterr()
  if fails:
    assert not caplog.records and "never retrieved" not in out + err
    log = (tmp_path / checkpoints.ERROR_LOG).read_text()
    assert "never retrieved" in log and "a bad read" in log
  else:
    assert [r.getMessage() for r in caplog.records] == [message]
    assert not (tmp_path / checkpoints.ERROR_LOG).exists()


# `checkpoints/` removed under the run.


@pytest.mark.slow  # 7 s.
def test_checkpoints_removed_between_saves_are_one_line_and_the_run_goes_on(
    reference, tmp_path, capfd, monkeypatch):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  real_save = checkpoints.save

  def save(mngr, step, *args, **kwargs):
    if step == 12:  # Between two saves, as `rm -r` in another terminal would.
      checkpoints.wait(mngr)
      shutil.rmtree(workdir / "checkpoints")
    real_save(mngr, step, *args, **kwargs)

  monkeypatch.setattr(checkpoints, "save", save)
  summary = train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  out, err = capfd.readouterr()
  warnings = [line for line in _lines(out + err) if "removed" in line or "WARNING" in line]
  assert warnings == [(
      f"WARNING: {workdir / 'checkpoints'} was removed (with the checkpoints of steps 4, 8) "
      "while the run trained; saving the checkpoint of step 12."
  )], out + err
  assert "Traceback" not in out + err and len(_lines(err)) <= 2, err
  assert summary.step == 24 and summary.interrupted is None
  _assert_same_run(workdir, ref_dir)  # Nothing lost: the metrics, the checkpoints since.


def test_the_other_threads_of_a_failed_write_are_waited_for_not_raised():
  """orbax's write threads re-raise from `join` what they met, or that they outlived the
  wait. Once the checkpoints folder is removed, every item of the write can fail (seen
  once in CI: the last write's second item, a traceback instead of the one-line warning)."""
  from orbax.checkpoint._src.futures import future

  def fail():
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "24.orbax-checkpoint-tmp")

  release = threading.Event()
  threads = [
      future._SignalingThread(  # pylint: disable=protected-access
          target=target, send_signals=[], receive_signals=[], timeout_secs=60)
      for target in (fail, release.wait)
  ]
  for thread in threads:
    thread.start()
  try:
    with pytest.raises(FileNotFoundError):  # What _join_write_threads met before.
      threads[0].join()
    checkpoints._join_write_threads(timeout=0.2)  # pylint: disable=protected-access
  finally:
    release.set()
  checkpoints._join_write_threads()  # pylint: disable=protected-access
  assert not any(thread.is_alive() for thread in threads)


@pytest.mark.slow
@pytest.mark.parametrize("at", [8, 24], ids=["mid-run", "the last write"])
def test_checkpoints_removed_during_a_write_are_one_line_and_the_run_goes_on(
    reference, tmp_path, capfd, monkeypatch, at):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  real_save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn
  removed = []

  async def save_fn(self, x, directory):
    if re.search(rf"(^|/){at}\.orbax-checkpoint-tmp", str(directory)) and not removed:
      removed.append(at)  # In orbax's background write, as a timed `rm -r` would.
      shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
      raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory))
    return await real_save_fn(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)
  summary = train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  out, err = capfd.readouterr()
  warnings = [line for line in _lines(out + err) if "removed" in line or "WARNING" in line]
  lost, then = {8: ("steps 4, 8", "saving the checkpoint of step 12"),
                24: ("steps 16, 20, 24", "writing the checkpoint of step 24 again")}[at]
  assert warnings == [(
      f"WARNING: {workdir / 'checkpoints'} was removed (with the checkpoints of {lost}) while "
      f"the run trained; {then}."
  )], out + err
  assert "Traceback" not in out + err and len(_lines(err)) <= 2, err
  assert "Traceback" in (workdir / "error.log").read_text()  # What orbax reported is kept.
  assert summary.step == 24 and removed == [at]
  assert not list((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
  _assert_same_run(workdir, ref_dir)
