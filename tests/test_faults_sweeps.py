"""Sweeps under the faults a cluster user meets: the sweep killed outright, a second
sweep on its folder, a point named outside it, a full disk while writing the results.

Each fault ends in at most a few lines on stderr, and nothing is left running or half
written.
"""

import errno
import json
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from etils import epath
from matplotlib.figure import Figure

from progressive import cli
from progressive.analysis import report
from progressive.commands import sweep as sweep_command
from progressive.sweeps import folder, run, spec
from progressive.training.metrics import read_rows
from progressive.training.workdir import WorkdirError

REPO = pathlib.Path(__file__).parents[1]

# Three points that train long enough to be killed while training (8,000 steps at 16 px).
LONG_SWEEP = """
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


def _sweep(tmp_path, data_dir, cache, *flags):
  """A `progressive sweep` process on `LONG_SWEEP` into `tmp_path/sweep`."""
  config_path = tmp_path / "sweep_config.py"
  config_path.write_text(textwrap.dedent(LONG_SWEEP.format(data_dir=data_dir, cache=cache)))
  command = [sys.executable, "-m", "progressive", "sweep", f"--config={config_path}",
             f"--workdir={tmp_path / 'sweep'}", *flags]
  return command, subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)


def _training(point_dir: pathlib.Path) -> bool:
  """Whether the point's training step has compiled (its "stage" row is written)."""
  path = point_dir / "metrics.jsonl"
  return path.exists() and any(r.get("event") == "stage" for r in read_rows(path))


def _wait_for(process, ready, seconds=240):
  deadline = time.time() + seconds
  while process.poll() is None and time.time() < deadline and not ready():
    time.sleep(0.05)
  assert process.poll() is None, f"the sweep ended first: {process.communicate()[1][-3000:]}"
  assert ready(), "the sweep did not get there in time"


def _running(process: psutil.Process) -> bool:
  """Alive and not a zombie (an orphan's zombie waits for init, and holds no memory)."""
  try:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


@pytest.mark.slow
def test_kill_9_of_a_sweep_leaves_no_worker_behind(tmp_path, data_dir, compilation_cache):
  """Before, both workers trained on, then idled at about 620 MB each ignoring SIGTERM."""
  _, process = _sweep(tmp_path, data_dir, compilation_cache, "--workers=2")
  workdir = tmp_path / "sweep"
  stderr = []  # Read as it comes: the workers hold the pipe after the sweep dies.
  reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
  reader.start()
  children = []
  try:
    _wait_for(process, lambda: _training(workdir / "p0") and _training(workdir / "p1"))
    children = psutil.Process(process.pid).children(recursive=True)
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2
    before = len(stderr)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 10 and any(map(_running, children)):
      time.sleep(0.1)
    assert not [c.pid for c in children if _running(c)], "processes of the sweep outlived it"
    reader.join(timeout=30)  # Every writer of the pipe is gone.
  finally:
    for child in children:  # Only if the test failed: the processes this test started.
      if _running(child):
        child.kill()
  after = stderr[before:]
  # One line from each worker, and nothing else but the resource tracker's warnings about
  # the dead sweep's semaphores (it removes them; one or two warnings, each a line and
  # its source line, as the timing of the kill falls).
  tracker = [line for line in after
             if "resource_tracker" in line or line.startswith("  warnings.warn(")]
  assert len(after) - len(tracker) == 2 and len(tracker) <= 4, "".join(stderr)[-3000:]
  assert sum("its sweep (process" in line for line in after) == 2, "".join(after)
  for name in ("p0", "p1"):  # Checkpointed on the way out: no step lost.
    assert [p.name for p in (workdir / name / "checkpoints").iterdir()], name
  assert not (workdir / "p2").exists()  # Never started by an orphan.
  # The killed sweep's hold is stale: the rerun takes it over with a note.
  with folder.held(workdir):
    assert json.loads((workdir / folder.HOLD_FILE).read_text())["pid"] == os.getpid()


# A sweep (killed below) with one worker that ignores SIGTERM and waits, as an idle
# worker of a dead sweep did: blocked on the sweep's queue of points, forever.
IDLE_SWEEP = """
import multiprocessing, signal, sys, time
from progressive.sweeps import run

def idle(sweep_pid):
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  run._exit_with(sweep_pid)
  print("watching", flush=True)
  time.sleep(120)

if __name__ == "__main__":
  context = multiprocessing.get_context("spawn")
  worker = context.Process(target=idle, args=(multiprocessing.current_process().pid,))
  worker.start()
  print(worker.pid, flush=True)
  time.sleep(120)
"""


@pytest.mark.slow
def test_an_idle_worker_ignoring_sigterm_exits_with_its_sweep(tmp_path):
  (tmp_path / "idle_sweep.py").write_text(IDLE_SWEEP)
  sweep = subprocess.Popen([sys.executable, str(tmp_path / "idle_sweep.py")], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
  worker = None
  try:
    worker = psutil.Process(int(sweep.stdout.readline()))
    assert sweep.stdout.readline() == "watching\n"
    assert _running(worker)
    sweep.kill()
    sweep.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 10 and _running(worker):
      time.sleep(0.1)
    assert not _running(worker), "the worker outlived its sweep"
    stderr = sweep.stderr.read()
  finally:
    if worker is not None and _running(worker):
      worker.kill()
  assert stderr.strip().splitlines()[-1:] == [(
      f"Sweep worker {worker.pid} stops: its sweep (process {sweep.pid}) is gone; run the sweep "
      "again to resume its points.")], stderr[-3000:]


# A worker whose sweep is alive (this test), answering a line on stdin.
ANSWERING_WORKER = """
import os, signal, sys
from progressive.sweeps import run

signal.signal(signal.SIGTERM, signal.SIG_IGN)
run._exit_with(os.getppid())
print("watching", flush=True)
for line in sys.stdin:
  print("alive", flush=True)
"""


@pytest.mark.slow
def test_a_burst_of_wake_up_signals_leaves_a_worker_working(tmp_path):
  """Linux sends the parent-death signal once per dying thread of the sweep; its handler
  set a `threading.Event`, and a second signal inside the first handler deadlocked the
  worker on the Event's lock (1 run in 3 under load; 3 in 3 with this burst)."""
  (tmp_path / "worker.py").write_text(ANSWERING_WORKER)
  worker = subprocess.Popen([sys.executable, str(tmp_path / "worker.py")], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
  try:
    assert worker.stdout.readline() == "watching\n"
    for _ in range(20000):
      os.kill(worker.pid, run._SWEEP_GONE)  # pylint: disable=protected-access
    worker.stdin.write("still there?\n")
    worker.stdin.flush()
    answered, _, _ = select.select([worker.stdout], [], [], 10)
    assert answered and worker.stdout.readline() == "alive\n", "the worker is wedged"
    assert worker.poll() is None  # Its sweep (this process) lives: it stays.
  finally:
    worker.kill()
    worker.wait()


@pytest.mark.slow
def test_a_second_sweep_on_a_held_folder_is_refused_naming_the_holder(tmp_path, data_dir,
                                                                     compilation_cache):
  """Before, the second took the first's next point and the first died."""
  command, first = _sweep(tmp_path, data_dir, compilation_cache)
  workdir = tmp_path / "sweep"
  try:
    _wait_for(first, lambda: _training(workdir / "p0"))
    # Paused while the second is refused (a paused sweep holds its folder as a training
    # one does), so that its steps do not take the cores the second needs.
    first.send_signal(signal.SIGSTOP)
    for flags in ((), ("--aggregate_only",)):
      second = subprocess.run(command + list(flags), cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False)
      assert second.returncode == 2, second.stderr[-3000:]
      lines = second.stderr.strip().splitlines()
      assert len(lines) == 1, second.stderr[-3000:]
      assert lines[0].startswith(f"Error: {workdir} is in use by another run: process "
                                 f"{first.pid} on {socket.gethostname()}")
      assert f"sweep --config={tmp_path / 'sweep_config.py'} --workdir={workdir}`" in lines[0]
      assert lines[0].endswith(f"The hold is {workdir / folder.HOLD_FILE}.")
    assert not (workdir / "p1").exists()  # The second started nothing.
    first.send_signal(signal.SIGCONT)
    first.send_signal(signal.SIGTERM)  # The first goes on until stopped, untouched.
    output, _ = first.communicate(timeout=240)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 128 + signal.SIGTERM, output[-3000:]
  assert "Sweep stopped by SIGTERM (p0 checkpointed)" in output
  assert not (workdir / folder.HOLD_FILE).exists()  # Let go on the way out.


def _sweep_file(tmp_path, points) -> str:
  path = tmp_path / "names.py"
  path.write_text("from configs import default\n\n"
                  "def get_config(arg):\n  return default.get_config('smoke')\n\n"
                  f"def get_sweep(arg):\n  return {points!r}\n")
  return str(path)


@pytest.mark.parametrize("points,rule", [
    ([{"name": "../x"}], "'../x' is not a plain folder name: it holds a path separator"),
    ([{"name": "/abs/path"}], "'/abs/path' is not a plain folder name: it holds a path separator"),
    ([{"name": "a/b"}], "'a/b' is not a plain folder name: it holds a path separator"),
    ([{"name": "..\\x"}], "is not a plain folder name: it holds a path separator"),
    ([{"name": ".."}], "'..' is not a plain folder name: it names the folder above"),
    ([{"name": "."}], "'.' is not a plain folder name: it names the sweep folder itself"),
    ([{"name": ""}], "'' is not a plain folder name: it is empty"),
    ([{"name": "a\0b"}], "is not a plain folder name: it holds a NUL character"),
    ([{"name": "a", "seed": 1}, {"name": "a", "seed": 2}], "Two sweep points share the name 'a'"),
])
def test_a_point_named_outside_its_folder_is_refused_at_expansion(tmp_path, capsys, points, rule):
  """Before, `../x` and `/abs/path` trained outside the sweep folder."""
  flag = _sweep_file(tmp_path, points)
  with pytest.raises(ValueError, match=rule.replace("(", r"\(").replace(")", r"\)")):
    spec.load(flag)
  fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={flag}",
                                         f"--workdir={tmp_path / 'sweep'}"])
  assert cli.execute(sweep_command.COMMAND, fv) == 2
  stderr = capsys.readouterr().err
  assert len(stderr.strip().splitlines()) == 1 and rule in stderr.replace("\\\\", "\\")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["names.py"]  # Nothing made.


def _summarised_sweep(tmp_path) -> str:
  """A two-point sweep whose points are summarised as if they had run."""
  flag = _sweep_file(tmp_path, [{"name": "a", "seed": 1}, {"name": "b", "seed": 2}])
  for name, acc in (("a", 0.5), ("b", 0.75)):
    (tmp_path / "sweep" / name).mkdir(parents=True)
    summary = {
        "name": name, "options": {"num_shift_images": 0, "max_shift": 4, "ensemble_sizes": []},
        "overrides": {"seed": 1 if name == "a" else 2}, "step": 8,
        "eval": {"32": {"accuracy": acc}}, "best_size": 32, "wall_seconds": 10.0}
    (tmp_path / "sweep" / name / "sweep_point.json").write_text(json.dumps(summary))
  return flag


def _full_disk_in_savefig(monkeypatch):
  """`Figure.savefig` writes part of the PNG, then the disk is full."""

  def savefig(self, fname, **kwargs):
    del self, kwargs
    with open(fname, "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(Figure, "savefig", savefig)


def test_a_full_disk_during_aggregation_is_one_line_and_leaves_no_partial_file(
    tmp_path, monkeypatch, capsys):
  """Before, `--aggregate_only` on a full disk gave a 60-line traceback from the plot."""
  flag = _summarised_sweep(tmp_path)
  workdir = tmp_path / "sweep"
  fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={flag}", f"--workdir={workdir}",
                                         "--aggregate_only", "--bn_images=0"])
  _full_disk_in_savefig(monkeypatch)
  assert cli.execute(sweep_command.COMMAND, fv) == 2
  stderr = capsys.readouterr().err
  assert stderr.splitlines() == [(
      f"Error: Cannot write {workdir / 'results.png'}: No space left on device. Its disk (or "
      "quota) is full: free some space there, then run the same command again (the points and "
      "their summaries are intact).")]
  written = sorted(p.name for p in workdir.iterdir())
  assert "results.png" not in written and not [n for n in written if n.endswith(".tmp")]
  assert folder.HOLD_FILE not in written  # Let go.
  # With room again, the same command writes every file.
  monkeypatch.undo()
  assert cli.execute(sweep_command.COMMAND, fv) is None
  assert (workdir / "results.png").read_bytes()[:4] == b"\x89PNG"
  # A full disk under the csv keeps the last whole one.
  before = (workdir / "results.csv").read_bytes()
  real_write_text = epath.Path.write_text

  def write_text(self, text, *args, **kwargs):
    if self.name.startswith("results.csv"):
      real_write_text(self, text[:10], *args, **kwargs)
      raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    return real_write_text(self, text, *args, **kwargs)

  monkeypatch.setattr(epath.Path, "write_text", write_text)
  assert cli.execute(sweep_command.COMMAND, fv) == 2
  assert capsys.readouterr().err.startswith(f"Error: Cannot write {workdir / 'results.csv'}: "
                                            "Disk quota exceeded.")
  assert (workdir / "results.csv").read_bytes() == before
  assert not list(workdir.glob("*.tmp"))


def test_a_full_disk_under_the_analysis_report_is_one_line(tmp_path, monkeypatch):
  """`progressive analyze` writes report.md, its JSON and PNG files whole, or not at all."""
  results = {name: {"value": 1} for name in report.JSON_FILES}
  monkeypatch.setattr(report, "analyze", lambda run, options: results)
  monkeypatch.setattr(report, "figures", lambda run, results: {"size_matrix": Figure()})
  monkeypatch.setattr(report, "markdown", lambda results: "# Report\n")
  _full_disk_in_savefig(monkeypatch)
  out = tmp_path / "analysis"
  with pytest.raises(WorkdirError) as raised:
    report.write_report(None, out)
  assert str(raised.value).startswith(f"Cannot write {out / 'size_matrix.png'}: No space left on "
                                      "device. Its disk (or quota) is full")
  assert len(cli.one_line(raised.value)) == len(str(raised.value))  # One line.
  assert not (out / "size_matrix.png").exists() and not list(out.glob("*.tmp"))
  assert not (out / "report.md").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="mounts a tmpfs: Linux, as root")
def test_a_really_full_disk_during_aggregation(tmp_path, capsys):
  """The same on a real tmpfs, filled but for two pages (the hold and one file)."""
  mount = tmp_path / "tiny"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                    capture_output=True, check=False).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    flag = _summarised_sweep(mount)
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
    try:
      while os.write(fd, b"\0" * 4096):
        pass
    except OSError as e:
      assert e.errno == errno.ENOSPC
    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR) - 2 * 4096)
    os.close(fd)
    fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={flag}",
                                           f"--workdir={mount / 'sweep'}", "--aggregate_only",
                                           "--bn_images=0"])
    assert cli.execute(sweep_command.COMMAND, fv) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"Error: Cannot write {mount / 'sweep'}/")
    assert "No space left on device" in stderr
    leftovers = [p.name for p in (mount / "sweep").iterdir() if p.is_file()]
    assert not [n for n in leftovers if n.endswith(".tmp") or n == folder.HOLD_FILE], leftovers
  finally:
    subprocess.run(["umount", str(mount)], check=False)
