"""Faults a real run meets: kills, signals, corrupt checkpoints, bad workdirs, NaNs.

The reference for "nothing lost" is an uninterrupted run of the same config: on the CPU
with the same device count, a resumed run must end with bitwise the same parameters
and the same metrics rows.
"""

import functools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import orbax.checkpoint as ocp
import pytest

from progressive.config import ConfigError
from progressive.sweeps import measure, spec
from progressive.sweeps import run as runner
from progressive.training import checkpoints, compilation, parallel, train
from progressive.training.metrics import read_rows
from progressive.training.workdir import WorkdirError
from tests.runs import Killed, assert_same_params, die_after_save, eval_rows, train_rows

REPO = pathlib.Path(__file__).parents[1]


def _final_params(workdir: pathlib.Path):
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(steps[-1]) / "state")
  return steps[-1], state["params"]


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
  return config, workdir


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_resumes_exactly(reference, tmp_path, monkeypatch):
  config, ref_dir = reference
  config = config.copy_and_resolve_references()
  real_next = parallel.DevicePrefetch.__next__
  calls = {"n": 0}

  def next_then_signal(self):
    calls["n"] += 1
    if calls["n"] == 10:  # While step 10 is being taken, as a scheduler would.
      os.kill(os.getpid(), signal.SIGTERM)
    return real_next(self)

  monkeypatch.setattr(parallel.DevicePrefetch, "__next__", next_then_signal)
  handler_before = signal.getsignal(signal.SIGTERM)
  summary = train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  assert summary.interrupted == "SIGTERM"
  assert summary.step == 10  # Stopped at the step boundary, in stage 1.
  assert checkpoints.manager(tmp_path, 3).latest_step() == 10
  assert signal.getsignal(signal.SIGTERM) is handler_before  # Handlers restored.

  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary.step == 24 and summary.interrupted is None
  assert_same_params(_final_params(tmp_path)[1], _final_params(ref_dir)[1])
  # The signal flushed a row at step 10, splitting the interval (8, 12]; every step is
  # still in exactly one row, and the rows away from the split are the reference's.
  rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "train"]
  covered = sorted(s for r in rows for s in range(r["step"] - r["num_steps"] + 1, r["step"] + 1))
  assert covered == list(range(1, 25))
  assert [r for r in train_rows(tmp_path) if r[0] not in (10, 12)] == [
      r for r in train_rows(ref_dir) if r[0] != 12
  ]
  assert eval_rows(tmp_path) == eval_rows(ref_dir)


def _corrupt_state(step_dir: pathlib.Path):
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      data = path.read_bytes()
      path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_and_is_kept(reference, tmp_path, capsys):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  _corrupt_state(workdir / "checkpoints" / "24")
  summary = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert "checkpoints/24 cannot be restored" in out
  kept = list((workdir / checkpoints.CORRUPT_DIR).iterdir())
  assert [p.name.split("-")[0] for p in kept] == ["24"]  # Moved aside, not deleted.
  assert "Resuming" in out and "from step 20" in out
  assert summary.step == 24
  assert_same_params(_final_params(workdir)[1], _final_params(ref_dir)[1])
  assert train_rows(workdir) == train_rows(ref_dir)


@pytest.mark.slow  # 14 s with its reference run.
def test_unreadable_meta_falls_back(reference, tmp_path, capsys):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  (workdir / "checkpoints" / "24" / "meta" / "metadata").write_text("{not json")
  assert train.train_and_evaluate(config, str(workdir)).step == 24
  assert "checkpoints/24 cannot be restored" in capsys.readouterr().out


@pytest.mark.slow  # A training run in this process, 6 s on 2 cores: full suite only.
def test_half_written_checkpoint_is_never_restored(reference, tmp_path):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  shutil.rmtree(workdir / "checkpoints" / "24")
  # What a kill during a write leaves: orbax's temporary folder, never renamed.
  partial = workdir / "checkpoints" / "24.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(ref_dir / "checkpoints" / "24", partial)
  _corrupt_state(partial)
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary.step == 24
  assert summary.compile[0]["step"] == 20  # Resumed from the last complete one.
  assert_same_params(_final_params(workdir)[1], _final_params(ref_dir)[1])


def test_checkpoint_from_another_config_names_the_field(reference, tmp_path):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  other = config.copy_and_resolve_references()
  other.model.channels = (8, 16, 64)
  with pytest.raises(WorkdirError, match=r"model\.channels: \[8, 16, 32\] -> \[8, 16, 64\]"):
    train.train_and_evaluate(other, str(workdir))
  # With --force the config is accepted, but the checkpoint is not silently mixed in.
  with pytest.raises(ConfigError, match=r"model\.channels: \[8, 16, 32\] in the checkpoint, \[8, 16, 64\] now"):
    train.train_and_evaluate(other, str(workdir), force=True)
  assert list(workdir.glob("config.*.json"))  # The previous config.json is kept.


def test_init_from_takes_parameters_only(reference, tmp_path):
  config, ref_dir = reference
  _, ref_params = _final_params(ref_dir)
  info_state = train.build_state(
      config, _info(config), _plan(config), parallel.make_mesh()
  )
  state = checkpoints.init_from(str(ref_dir), info_state)
  assert_same_params(state.params, ref_params)
  assert int(state.step) == 0  # Optimiser state and step start afresh.
  other = config.copy_and_resolve_references()
  other.model.channels = (8, 16, 64)
  other_state = train.build_state(other, _info(other), _plan(other), parallel.make_mesh())
  with pytest.raises(ConfigError, match=r"does not fit this model: params\.conv2\.\S+ has shape \[(3, 3, 16, )?32\] there and \[(3, 3, 16, )?64\] here"):
    checkpoints.init_from(str(ref_dir), other_state)


def _info(config):
  from progressive.data import pipeline

  return pipeline.dataset_info(config.data)


def _plan(config):
  from progressive import schedules

  return schedules.stage_plan(config.stages, config.batch_size, _info(config).num_train)


def test_unwritable_workdir(smoke_config, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(WorkdirError, match="Cannot write to --workdir"):
    train.train_and_evaluate(smoke_config, str(blocker / "run"))


def test_stage_that_cannot_fit_in_device_memory(smoke_config, tmp_path, monkeypatch):
  monkeypatch.setattr(compilation, "device_memory_limit", lambda: 1024)
  with pytest.raises(compilation.MemoryLimitError, match=r"Stage 0 \(16px, batch 64\) needs about .* GiB per device but the device has 0.00 GiB"):
    train.train_and_evaluate(smoke_config, str(tmp_path))
  assert not [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "train"]


# Kill tests: the real command in a subprocess, SIGKILLed, then run again.

KILL_CONFIG = """
from configs import default

def get_config(arg=None):
  config = default.get_config("smoke")
  config.data.data_dir = {data_dir!r}
  config.progress_bar = False
  config.stages = [dict(size=16, steps=20), dict(size=24, steps=20), dict(size=32, steps=10)]
  config.checkpoint_every_steps = 5
  config.log_every_steps = 5
  return config
"""


def _command(config_path, workdir):
  return [sys.executable, "-m", "progressive", "train", f"--config={config_path}", f"--workdir={workdir}"]


def _run(config_path, workdir):
  result = subprocess.run(
      _command(config_path, workdir), cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _kill_when(config_path, workdir, ready, timeout=240):
  """Starts the run, SIGKILLs it as soon as `ready(workdir)` holds; returns whether it did."""
  process = subprocess.Popen(
      _command(config_path, workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + timeout
  try:
    while process.poll() is None and time.time() < deadline:
      if ready(workdir):
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
      time.sleep(0.005)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  return False


def _steps(workdir):
  path = workdir / "checkpoints"
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def _writes(workdir):
  """The checkpoint writes in flight: orbax's temporary folders."""
  path = workdir / "checkpoints"
  if not path.exists():
    return set()
  return {p.name for p in path.iterdir() if "orbax-checkpoint-tmp" in p.name}


def _stage_1_setups(workdir):
  """How many times stage 1's programs were set up (a compile row each)."""
  rows = read_rows(workdir / "metrics.jsonl") if (workdir / "metrics.jsonl").exists() else []
  return sum(r.get("event") == "compile" and r.get("stage") == 1 for r in rows)


def _seen(workdir):
  return {"steps": set(_steps(workdir)), "writes": _writes(workdir),
          "stage_1_setups": _stage_1_setups(workdir)}


# Each moment as what the killed run did since it started (`seen`: the workdir then), so
# that every kill lands in the run it stops, whatever the runs before it left.
KILL_MOMENTS = [
    ("during a checkpoint write",  # One finished, and a write this run began in flight.
     lambda w, seen: bool(_steps(w)) and bool(_writes(w) - seen["writes"])),
    ("during a stage",  # A checkpoint this run wrote inside stage 0 (which ends at step 20).
     lambda w, seen: any(s < 20 for s in set(_steps(w)) - seen["steps"])),
    ("at a stage switch",  # Stage 1 set up by this run.
     lambda w, seen: _stage_1_setups(w) > seen["stage_1_setups"]),
]


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp("kill")
  config_path = root / "kill_config.py"
  config_path.write_text(textwrap.dedent(KILL_CONFIG.format(data_dir=data_dir)))
  reference_dir = root / "reference"
  _run(config_path, reference_dir)
  return config_path, reference_dir


@pytest.mark.slow
def test_sigkill_at_each_moment_then_rerun_ends_identical(kill_setup, tmp_path):
  """One run SIGKILLed three times, at a moment each, every restart resuming the last
  one's workdir (what a preempted machine does to a run); then run to the end."""
  config_path, reference_dir = kill_setup
  workdir = tmp_path / "run"
  for moment, ready in KILL_MOMENTS:
    seen = _seen(workdir)
    assert _kill_when(config_path, workdir, functools.partial(ready, seen=seen)), (
        f"the run finished before the kill {moment}")
    assert 50 not in _steps(workdir), moment  # Killed before the end.
  _run(config_path, workdir)
  assert _final_params(workdir)[0] == 50
  assert_same_params(_final_params(workdir)[1], _final_params(reference_dir)[1])
  assert train_rows(workdir) == train_rows(reference_dir)
  assert eval_rows(workdir) == eval_rows(reference_dir)


# Runs written before a field existed: their config.json and checkpoints lack it.

OLDER_FIELDS = (("data", "num_workers"), (None, "skip_nonfinite"))  # Absent from older runs.


def _drop_fields(config_json: dict) -> dict:
  for parent, name in OLDER_FIELDS:
    del (config_json[parent] if parent else config_json)[name]
  return config_json


def _as_older_version(workdir: pathlib.Path) -> None:
  """Rewrites `config.json` and every checkpoint's meta config without `OLDER_FIELDS`."""
  path = workdir / "config.json"
  path.write_text(json.dumps(_drop_fields(json.loads(path.read_text())), indent=2))
  metas = list((workdir / "checkpoints").glob("*/meta/metadata"))
  assert metas
  for path in metas:
    meta = json.loads(path.read_text())
    _drop_fields(meta["config"])
    path.write_text(json.dumps(meta))


def test_finished_run_of_an_older_version_stays_finished(reference, tmp_path, capsys):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  _as_older_version(workdir)
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary.step == 24
  assert "holds a finished run" in capsys.readouterr().out
  assert train_rows(workdir) == train_rows(ref_dir)  # Nothing trained.
  assert "num_workers" in json.loads((workdir / "config.json").read_text())["data"]
  assert not list(workdir.glob("config.*.json"))  # Not a config change.


def _without_lr_scale(workdir: pathlib.Path) -> None:
  """Rewrites every checkpoint's state as the optimiser stored it before it held the LR
  peak as `lr_scale` (the peak was then a constant in the schedule)."""
  paths = list((workdir / "checkpoints").glob("*/state"))
  assert paths
  for path in paths:
    state = ocp.StandardCheckpointer().restore(path)
    del state["opt_state"]["hyperparams"]["lr_scale"]
    shutil.rmtree(path)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(path, state)


@pytest.mark.slow
@pytest.mark.parametrize("make_older", [_as_older_version, _without_lr_scale])
def test_partial_run_of_an_older_version_resumes_exactly(reference, tmp_path, monkeypatch, make_older):
  config, ref_dir = reference
  die_after_save(monkeypatch, 12)  # Mid-way through stage 1.
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  make_older(tmp_path)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary.step == 24
  assert summary.compile[0]["step"] == 12  # Resumed, not restarted (nor set aside as corrupt).
  assert not (tmp_path / "checkpoints_corrupt").exists()
  assert_same_params(_final_params(tmp_path)[1], _final_params(ref_dir)[1])
  assert train_rows(tmp_path) == train_rows(ref_dir)


def test_older_version_with_a_changed_fixed_field_is_refused(reference, tmp_path):
  config, ref_dir = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  _as_older_version(workdir)
  other = config.copy_and_resolve_references()
  other.data.num_workers = 1  # The older run read with threads: the default, 0.
  with pytest.raises(WorkdirError, match=r"data\.num_workers: 0 -> 1"):
    train.train_and_evaluate(other, str(workdir))
  with pytest.raises(ConfigError, match=r"data\.num_workers: 0 in the checkpoint, 1 now"):
    train.train_and_evaluate(other, str(workdir), force=True)


# A sweep stopped by a signal: its running points checkpoint, no other point starts, and
# no stopped point is summarised as if it had finished.

SWEEP_CONFIG = """
from configs import default

def get_config(arg=None):
  config = default.get_config("smoke")
  config.data.data_dir = {data_dir!r}
  config.progress_bar = False
  config.stages = [dict(size=16, steps=8000)]
  config.eval_sizes = (16,)
  config.log_every_steps = 5
  config.checkpoint_every_steps = 0
  config.compilation_cache_dir = {cache!r}
  return config

def get_sweep(arg=None):
  return [dict(name=f"p{{i}}", seed=i) for i in range(3)]
"""


@pytest.mark.slow
def test_a_signal_stops_a_sweep_before_its_next_point(tmp_path, monkeypatch, capsys):
  config_path = tmp_path / "sweep_config.py"
  config_path.write_text(textwrap.dedent(SWEEP_CONFIG.format(data_dir="/nonexistent", cache=None)))
  started = []

  def stopped_run(config, workdir):
    started.append(pathlib.Path(workdir).name)
    return types.SimpleNamespace(interrupted="SIGTERM")

  monkeypatch.setattr(train, "train_and_evaluate", stopped_run)
  with pytest.raises(runner.Stopped, match=r"^Sweep stopped by SIGTERM \(p0 checkpointed\); run the same"):
    runner.run_sweep(spec.load(str(config_path)), str(tmp_path / "sweep"))
  assert started == ["p0"]  # p1 and p2 never start.
  assert not (tmp_path / "sweep" / "p0" / measure.SUMMARY_FILE).exists()


def test_a_point_s_wall_time_counts_every_attempt_a_signal_stopped(tmp_path, monkeypatch):
  now, checkpointed, walls = [0.0], [], []
  monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  monkeypatch.setattr(runner.run_lib, "checkpoint_steps", lambda _: list(checkpointed))
  monkeypatch.setattr(measure, "summarize_point", lambda *a, wall_seconds, **k: walls.append(wall_seconds))

  def attempt(seconds, interrupted=None):
    def run(config, workdir):
      now[0] += seconds
      return types.SimpleNamespace(interrupted=interrupted)
    monkeypatch.setattr(train, "train_and_evaluate", run)
    return runner.train_point("p0", {}, None, str(tmp_path / "p0"), measure.Settings())

  assert attempt(100.0, interrupted="SIGTERM") == "SIGTERM" and not walls
  checkpointed.append(4)
  assert attempt(30.0) is None
  assert walls == [130.0]  # Both attempts, not the last one alone.
  checkpointed.clear()  # Trained again from scratch: the earlier attempts do not count.
  attempt(50.0)
  assert walls == [130.0, 50.0]
  assert measure.trained_seconds(tmp_path / "p0") == 50.0  # For aggregation to use.


@pytest.mark.slow
def test_a_signal_stops_a_point_s_measures_and_leaves_it_trained(tmp_path, monkeypatch):
  measured = []

  def measures(*args, **kwargs):  # SIGTERM arrives while measuring.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    measured.append(args)

  monkeypatch.setattr(measure, "summarize_point", measures)
  monkeypatch.setattr(train, "train_and_evaluate",
                      lambda config, workdir: types.SimpleNamespace(interrupted=None))
  handler = signal.getsignal(signal.SIGTERM)
  assert runner.train_point("p0", {}, None, str(tmp_path / "p0"), measure.Settings()) == "SIGTERM"
  assert not measured and signal.getsignal(signal.SIGTERM) == handler  # Restored.
  assert measure.trained_seconds(tmp_path / "p0") is not None


@pytest.mark.slow
def test_sigterm_stops_a_parallel_sweep_with_its_workers_checkpointed(tmp_path, data_dir,
                                                                     compilation_cache):
  config_path = tmp_path / "sweep_config.py"
  config = SWEEP_CONFIG.format(data_dir=data_dir, cache=compilation_cache)
  config_path.write_text(textwrap.dedent(config))
  workdir = tmp_path / "sweep"
  command = [sys.executable, "-m", "progressive", "sweep", f"--config={config_path}",
             f"--workdir={workdir}", "--workers=2"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)

  def training(name):  # Its training step compiled.
    path = workdir / name / "metrics.jsonl"
    return path.exists() and any(r.get("event") == "stage" for r in read_rows(path))

  deadline = time.time() + 240
  while process.poll() is None and time.time() < deadline and not (training("p0") and training("p1")):
    time.sleep(0.05)
  assert process.poll() is None, "the sweep ended before both workers trained"
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=240)
  assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
  assert re.search(r"Sweep stopped by SIGTERM \((p0, p1|p1, p0) checkpointed\)", output), output[-3000:]
  for name in ("p0", "p1"):
    assert 0 < max(_steps(workdir / name)) < 8000  # Checkpointed where it stopped.
    assert not (workdir / name / measure.SUMMARY_FILE).exists()
  assert not (workdir / "p2").exists()  # Never started.

  # The same command resumes them; a worker killed outright stops the sweep in one line.
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)

  def resumed(name):  # A second "stage" row: set up again from its checkpoint.
    rows = read_rows(workdir / name / "metrics.jsonl")
    return sum(r.get("event") == "stage" for r in rows) >= 2

  deadline = time.time() + 240
  while process.poll() is None and time.time() < deadline and not resumed("p0"):
    time.sleep(0.05)
  assert process.poll() is None, "the sweep ended before p0 resumed"
  workers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
             if _parent(pid) == process.pid and b"spawn_main" in _cmdline(pid)]
  assert len(workers) == 2
  os.kill(workers[0], signal.SIGKILL)
  _, stderr = process.communicate(timeout=240)
  assert process.returncode == 2, stderr[-3000:]
  assert f"A worker process of the sweep in {workdir} died (killed, or out of memory); run the same command again" in stderr


def _deaf_then_stoppable(deaf, deaf_since, seconds):
  """A worker still setting up: SIGTERM ignored for `seconds`, then its default.

  `deaf_since` gets the moment it started ignoring SIGTERM (`time.monotonic`, one clock
  for every process on Linux)."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  deaf_since.value = time.monotonic()
  deaf.set()
  time.sleep(seconds)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  time.sleep(60)


@pytest.mark.slow
def test_a_dead_worker_s_sweep_stops_a_worker_that_ignored_the_first_sigterm():
  """After a worker dies, the pool's one SIGTERM can reach another while it ignores it
  (setting up its point); `_stop_workers` repeats it until that worker is gone, instead of
  waiting for its whole point to train."""
  import multiprocessing  # pylint: disable=import-outside-toplevel

  context = multiprocessing.get_context("spawn")  # No fork: JAX runs threads here.
  deaf, deaf_since = context.Event(), context.Value("d", 0.0)
  worker = context.Process(target=_deaf_then_stoppable, args=(deaf, deaf_since, 2.0))
  worker.start()
  assert deaf.wait(30)
  runner._stop_workers([worker])  # pylint: disable=protected-access
  assert not worker.is_alive() and worker.exitcode == -signal.SIGTERM
  # Past its 2 deaf seconds (the SIGTERM was repeated), long before its 60 s sleep ends.
  # Timed from the worker's own clock reading: this process may wake from `deaf.wait`
  # late on a loaded machine.
  assert 2.0 <= time.monotonic() - deaf_since.value < 30


def _parent(pid):
  try:
    return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
  except (OSError, IndexError, ValueError):
    return None


def _cmdline(pid):
  try:
    return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
  except OSError:
    return b""
