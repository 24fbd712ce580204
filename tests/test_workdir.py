"""The workdir under the faults a cluster user meets: two runs in one workdir, the hold
of a killed run, a disk that fills during a checkpoint, a half-written checkpoint.

The reference for "nothing lost" is an uninterrupted in-process smoke run: a resumed
run must end with bitwise the same parameters and the same train and eval rows.
"""

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest
from etils import epath
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from progressive.training import checkpoints, lr_find, train
from progressive.training import workdir as workdir_lib
from progressive.training.metrics import MetricsWriter, read_rows
from progressive.training.workdir import WorkdirError
from tests.runs import assert_same_params, eval_rows, train_rows

REPO = epath.Path(__file__).parents[1]


def _params(workdir, step=None):
  step = step or checkpoints.steps_on_disk(epath.Path(workdir))[-1]
  return ocp.StandardCheckpointer().restore(epath.Path(workdir) / "checkpoints" / str(step) / "state")["params"]


def _assert_same_run(workdir, ref_dir):
  assert checkpoints.steps_on_disk(epath.Path(workdir))[-1] == 24
  assert_same_params(_params(workdir), _params(ref_dir))
  assert train_rows(workdir) == train_rows(ref_dir)
  assert eval_rows(workdir) == eval_rows(ref_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """An uninterrupted smoke run (checkpoints at the stage ends: steps 8, 16, 24)."""
  from configs import default

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(config, str(workdir))
  assert checkpoints.steps_on_disk(epath.Path(workdir)) == [8, 16, 24]
  return config, workdir


def _command(workdir, data_dir):
  return [
      sys.executable, "-m", "progressive", "train", "--config=configs/default.py:smoke",
      f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
  ]


def _wait_for(ready, process, timeout=240):
  deadline = time.time() + timeout
  while not ready():
    assert process.poll() is None, "the run ended first"
    assert time.time() < deadline, "timed out"
    time.sleep(0.01)


# One run per workdir.


@pytest.mark.slow
def test_second_run_is_refused_at_once_and_the_first_is_untouched(reference, data_dir, tmp_path):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  first = subprocess.Popen(
      _command(workdir, data_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  try:
    _wait_for(lambda: (workdir / "config.json").exists(), first)  # Written once it holds.
    start = time.monotonic()
    holder = rf"process {first.pid} on {re.escape(socket.gethostname())}, started \d{{4}}-"
    with pytest.raises(WorkdirError, match=rf"in use by another run: {holder}.*--force does not override"):
      train.train_and_evaluate(config, str(workdir), force=True)
    assert time.monotonic() - start < 10  # Before any data is read or anything compiles.
    # The command line says the same in one line.
    second = subprocess.run(
        _command(workdir, data_dir), cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode != 0
    assert re.search(rf"Error: .*in use by another run: {holder}", second.stderr), second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert first.poll() is None  # Still running: refused, not a run that had ended.
    out = first.communicate(timeout=300)[0]
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert first.returncode == 0, out[-3000:]
  assert not (workdir / workdir_lib.HOLD_FILE).exists()  # Released at the end.
  _assert_same_run(workdir, ref_dir)


def _live_process():
  return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_hold(workdir, **record):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / workdir_lib.HOLD_FILE).write_text(json.dumps({"started": "2000-01-01 00:00:00 UTC", **record}))


@pytest.mark.slow
def test_live_holders_are_refused(tmp_path):
  sleeper = _live_process()
  try:
    stat = workdir_lib._proc_stat(sleeper.pid)
    _write_hold(tmp_path, host=socket.gethostname(), pid=sleeper.pid, pid_start=stat and stat[1], heartbeat=0)
    holder = rf"process {sleeper.pid} on {re.escape(socket.gethostname())}"
    with pytest.raises(WorkdirError, match=rf"{holder}.*`kill {sleeper.pid}`"):
      workdir_lib.Hold(tmp_path).__enter__()
  finally:
    sleeper.kill()
    sleeper.wait()
  _write_hold(tmp_path, host="another-host.example", pid=1, heartbeat=time.time())
  with pytest.raises(WorkdirError, match=r"process 1 on another-host\.example.*taken over"):
    workdir_lib.Hold(tmp_path).__enter__()
  assert json.loads((tmp_path / workdir_lib.HOLD_FILE).read_text())["host"] == "another-host.example"


@pytest.mark.slow
def test_reused_process_id_is_a_stale_hold(tmp_path, capsys):
  sleeper = _live_process()  # Alive, but not the process that took the hold.
  try:
    _write_hold(tmp_path, host=socket.gethostname(), pid=sleeper.pid, pid_start="1", heartbeat=time.time())
    with workdir_lib.Hold(tmp_path) as hold:
      assert json.loads(hold.path.read_text())["pid"] == os.getpid()
  finally:
    sleeper.kill()
    sleeper.wait()
  assert f"process id {sleeper.pid} now belongs to another process" in capsys.readouterr().out
  assert not (tmp_path / workdir_lib.HOLD_FILE).exists()


def test_hold_heartbeat_and_release_on_exceptions(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib, "HEARTBEAT_SECONDS", 0.05)
  with pytest.raises(KeyError), workdir_lib.Hold(tmp_path) as hold:
    first = json.loads(hold.path.read_text())
    assert first["host"] == socket.gethostname() and first["pid"] == os.getpid()
    time.sleep(0.5)
    assert json.loads(hold.path.read_text())["heartbeat"] > first["heartbeat"]
    raise KeyError("boom")
  assert not (tmp_path / workdir_lib.HOLD_FILE).exists()


@pytest.mark.slow
def test_range_test_refuses_a_held_workdir(tmp_path):
  sleeper = _live_process()
  try:
    stat = workdir_lib._proc_stat(sleeper.pid)
    _write_hold(tmp_path, host=socket.gethostname(), pid=sleeper.pid, pid_start=stat and stat[1], heartbeat=0)
    with pytest.raises(WorkdirError, match=rf"in use by another run: process {sleeper.pid} "):
      lr_find.check_lr_find_workdir(epath.Path(tmp_path))
  finally:
    sleeper.kill()
    sleeper.wait()
  lr_find.check_lr_find_workdir(epath.Path(tmp_path))  # Its holder is gone: not in use.
  free = epath.Path(tmp_path / "free")
  lr_find.check_lr_find_workdir(free)
  assert not (free / workdir_lib.HOLD_FILE).exists()  # It writes only its own files.


# The hold of a killed run.


@pytest.fixture(scope="module")
def killed(reference, data_dir, tmp_path_factory):
  """A workdir whose run was SIGKILLed after its first checkpoint: its hold is left."""
  workdir = tmp_path_factory.mktemp("killed") / "run"
  process = subprocess.Popen(
      _command(workdir, data_dir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  try:
    _wait_for(lambda: 8 in checkpoints.steps_on_disk(epath.Path(workdir)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert 24 not in checkpoints.steps_on_disk(epath.Path(workdir))
  assert json.loads((workdir / workdir_lib.HOLD_FILE).read_text())["pid"] == process.pid
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("holder", ["a dead process on this host", "another host, heartbeat stopped"])
def test_stale_hold_of_a_killed_run_is_taken_over(reference, killed, tmp_path, capsys, holder):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(killed, workdir)
  path = workdir / workdir_lib.HOLD_FILE
  record = json.loads(path.read_text())
  reason = f"process {record['pid']} no longer exists"
  if holder.startswith("another host"):
    record.update(host="another-host.example", heartbeat=time.time() - 2 * workdir_lib.STALE_SECONDS)
    path.write_text(json.dumps(record))
    reason = rf"its heartbeat is \d+s old, more than {workdir_lib.STALE_SECONDS:.0f}s"
  summary = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  who = rf"process {record['pid']} on {re.escape(record['host'])}"
  assert re.search(rf"Note: taking over the hold of .* from {who} .*: {reason}\.", out), out
  assert "Resuming" in out
  assert summary.step == 24 and summary.compile[0]["step"] in (8, 16)  # Resumed, not restarted.
  assert not path.exists()
  _assert_same_run(workdir, ref_dir)


# A full disk.


@pytest.mark.slow
def test_full_disk_during_the_asynchronous_write(reference, tmp_path, monkeypatch, capfd, caplog):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  real_save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def save_fn(self, x, directory):
    if re.search(r"(^|/)16\.orbax-checkpoint-tmp", str(directory)):  # In orbax's background write.
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await real_save_fn(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)
  with pytest.raises(checkpoints.CheckpointWriteError) as raised:
    train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  message = str(raised.value)
  assert "\n" not in message
  assert re.match(
      r"The checkpoint of step 16 could not be written: No space left on device\. The checkpoint "
      r"of step 8 is intact\. Free some space, or move the workdir to a larger disk, then run the "
      rf"same command again to resume from step 8 \(traceback in {re.escape(str(workdir / 'error.log'))}\)\.$",
      message,
  ), message
  assert "Traceback" in (workdir / "error.log").read_text()
  captured = capfd.readouterr()
  assert "Traceback" not in captured.out + captured.err  # No wall of tracebacks,
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nor of orbax's errors.
  assert "reported by orbax" in (workdir / "error.log").read_text()  # They are kept there.
  assert checkpoints.steps_on_disk(epath.Path(workdir)) == [8]
  assert_same_params(_params(workdir, 8), _params(ref_dir, 8))  # Intact.
  assert not (workdir / workdir_lib.HOLD_FILE).exists()

  summary = train.train_and_evaluate(config, str(workdir))  # Space freed.
  assert summary.compile[0]["step"] == 8
  _assert_same_run(workdir, ref_dir)


@pytest.mark.slow
def test_checkpoint_that_would_not_fit_stops_before_writing(reference, tmp_path, monkeypatch, capsys):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  real_disk_usage = shutil.disk_usage

  def disk_usage(path):
    usage = real_disk_usage(path)
    if (workdir / "checkpoints" / "8").exists():  # The disk fills after the first checkpoint.
      return usage._replace(free=100_000)
    return usage

  monkeypatch.setattr(checkpoints.shutil, "disk_usage", disk_usage)
  with pytest.raises(checkpoints.CheckpointWriteError) as raised:
    train.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  assert re.match(
      r"Not enough space for the checkpoint of step 16: it needs about \d+\.\d MB and "
      rf"{re.escape(str(workdir / 'checkpoints'))} has 0\.1 MB free\. The checkpoint of step 8 is "
      r"intact\. Free some space, or move the workdir to a larger disk, then run the same command "
      r"again to resume from step 8\.$",
      str(raised.value),
  ), str(raised.value)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["8"]  # Nothing half-written.
  assert 16 in [r[0] for r in train_rows(workdir)]  # The metrics so far are flushed.
  assert not (workdir / workdir_lib.HOLD_FILE).exists()
  capsys.readouterr()

  summary = train.train_and_evaluate(config, str(workdir))  # Space freed.
  assert summary.compile[0]["step"] == 8
  _assert_same_run(workdir, ref_dir)


def test_unwritable_workdir_names_the_cause(tmp_path, monkeypatch):
  path_type = type(epath.Path(tmp_path))
  for code, says in [
      (errno.ENOSPC, r"\(No space left on device\)\. Its disk \(or quota\) is full: free some space"),
      (errno.EROFS, r"read-only filesystem"),
      (errno.EACCES, r"fix its permissions"),
  ]:
    def write_text(self, *args, code=code, **kwargs):
      raise OSError(code, os.strerror(code))

    monkeypatch.setattr(path_type, "write_text", write_text)
    with pytest.raises(WorkdirError, match=says):
      workdir_lib.ensure_writable(epath.Path(tmp_path))
  monkeypatch.undo()


# What a crashed write leaves.


@pytest.mark.slow  # 19 s with its reference run.
def test_leftover_partial_checkpoint_at_the_next_step_is_set_aside(reference, tmp_path, capsys):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  for step in (16, 24):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  partial = workdir / "checkpoints" / "16.orbax-checkpoint-tmp"  # Where the rerun saves next.
  shutil.copytree(ref_dir / "checkpoints" / "16" / "state", partial / "state.orbax-checkpoint-tmp")
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"event": "tr')  # And the row the full disk cut short.
  summary = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert f"Note: {partial} is a checkpoint whose write never completed; moved it to" in out
  kept = list((workdir / checkpoints.CORRUPT_DIR).iterdir())
  assert [p.name.split("-")[0] for p in kept] == ["16.orbax"]  # Moved aside, not deleted.
  assert (kept[0] / "state.orbax-checkpoint-tmp").exists()
  assert summary.compile[0]["step"] == 8
  _assert_same_run(workdir, ref_dir)


def test_torn_last_row_is_cut(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"st')
  assert read_rows(path) == [{"step": 1}, {"step": 2}]  # Readers skip the torn row...
  MetricsWriter(tmp_path, resume_step=2).close()
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'  # ...and a resumed run cuts it.
