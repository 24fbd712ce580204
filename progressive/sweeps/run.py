"""Training a sweep's points: one after another in this process, or `workers` at a time
in worker processes; signals; and the `progressive train` commands to run them elsewhere.

Every point trains into `DIR/<name>/`; a finished point is skipped and a partial one
resumes (`progressive.training.train` resumes from its checkpoints). A finished point
whose `config.json` differs from what the sweep now gives it in a field that changes
training stops the sweep before anything trains. SIGTERM or SIGINT checkpoints the
points that are training and starts no other (`Stopped`); the same command resumes.
"""

import concurrent.futures
import ctypes
import multiprocessing
import os
import select
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from absl import flags
from etils import epath

from progressive import errors
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.sweeps import aggregate, folder, measure, spec, tables, tuning
from progressive.training import train


class SweepError(errors.Error):
  """A sweep that cannot go on as asked: points trained under another config, a worker
  that died."""


class Stopped(Exception):
  """A signal stopped the sweep: the point(s) it stopped were checkpointed (rerun to resume)."""

  def __init__(self, signal_name: str, names: Sequence[str]):
    where = f"{', '.join(names)} checkpointed" if names else "before its next point"
    super().__init__(f"Sweep stopped by {signal_name} ({where}); run the same command again to "
                     "resume.")
    self.signal_name = signal_name


def nothing_to_tune(sweep: spec.Sweep) -> ValueError:
  return ValueError(f"{sweep.flag} defines no tuning (get_tuning); --tune_only has nothing to run.")


BORROW_OR_TUNE = ("--tuning_from takes another sweep's choice instead of tuning: it goes with "
                  "neither --tune_only nor --tuning_grid.")


def run_sweep(sweep: spec.Sweep, workdir: str, *, workers: int = 1, tune_only: bool = False,
              tuning_grid: Sequence[Any] | None = None, tuning_from: str | None = None,
              **settings):
  """Trains every unfinished point, `workers` at a time in their own processes (1: one
  after another in this one), then aggregates. Returns the aggregated rows. With
  `tune_only`, only the tuning grid (`tuning_grid`, if given, instead of the sweep's: to
  check other values in another workdir): it writes the choice and `DIR/tuning.csv` and
  returns no rows. With `tuning_from` (another sweep's workdir) no tuning runs: each arm
  takes the value that sweep chose for its arm of the same name (`tuning.borrow`). With
  the tuning's `extend_edges`, an arm chosen at an edge of its grid is tuned one value
  further, up to that many times, before the seeds train (`tuning.extend_at_edges`; a
  rerun finds the same extensions from the same finished runs).

  `settings` are `measure.Settings.of`'s: `num_shift_images`, `max_shift`,
  `ensemble_sizes` and `finetune` (default: the sweep's), `bn_images` (the scale
  controls' batch-norm recalibration; 0: no control columns). Tuning runs are summarised
  only for their metric. The sweep folder is held throughout (`folder.held`): a second
  sweep on it is refused naming this one."""
  workdir = epath.Path(workdir)
  measures = measure.Settings.of(sweep, **settings)
  tuning.check_grid(workdir, tuning_grid, tune_only)
  if tune_only and sweep.tuning is None:
    raise nothing_to_tune(sweep)
  if tuning_from and (tune_only or tuning_grid):
    raise ValueError(BORROW_OR_TUNE)
  with folder.held(workdir):
    tuned = sweep.with_grid(tuning_grid)
    if tuning_from:
      tuning.borrow(sweep, workdir, tuning_from)
    runs = [] if tuning_from else tuning.tuning_points(tuned)

    def train_tuning(points) -> None:
      train_points([spec.Point(t.name, t.overrides, t.config) for t in points],
                   workdir / tuning.TUNING_DIR, measure.Settings(tuning=True), workers)

    if runs:
      print(f"Tuning {tuned.tuning.field} on the validation slice: {len(runs)} runs.")
      train_tuning(runs)
      choice = tuning.choose(tuned, workdir)
      for _ in range(tuned.tuning.extend_edges):  # The same extensions again on a rerun.
        wider = tuning.extend_at_edges(tuned, choice)
        if wider is tuned:
          break
        known = {t.name for t in tuning.tuning_points(tuned)}
        tuned = wider
        added = [t for t in tuning.tuning_points(tuned) if t.name not in known]
        cells = dict.fromkeys(f"{t.arm} {t.value}" for t in added)
        print("At an edge of its grid, so tuned one value further: " + ", ".join(cells))
        train_tuning(added)
        choice = tuning.choose(tuned, workdir)
      arms = {r["key"]: r for r in choice["grid"]}.values()
      print(f"Chosen by validation {choice['metric']} ({tuning.seeds_text(choice)}): "
            + ", ".join(f"{r['arm']}: {choice['values'][r['key']]}" for r in arms))
      if edges := tuning.edges_text(choice):  # Worth a look before the seeds spend hours.
        print("At an edge of its grid (the best value may lie beyond it; get_tuning's "
              f"arm_grids extends one arm's): {edges}")
      if tune_only:
        tables.write_tuning(workdir, choice)
        return []
    train_points(sweep.expand(tuning.read_choice(workdir) if runs or tuning_from else None),
                 workdir, measures, workers)
    return aggregate.aggregate(sweep, str(workdir), **settings)


def train_points(points: Sequence[spec.Point], workdir: epath.Path, settings: measure.Settings,
                 workers: int = 1) -> None:
  """Trains and summarises every unfinished point into `workdir/<name>`, `workers` points
  at a time (`_train_in_workers`). A point summarised to its last step with these
  `settings` is finished too, without its checkpoints (copied from where it ran). A
  finished point trained under another config (the sweep file or the tuning choice
  changed since) stops the sweep before anything trains: its results would be reported
  as the new config's. SIGTERM or SIGINT checkpoints the training points and raises
  `Stopped`: no other point starts."""
  done = {name for name, _, config in points if measure.finished(workdir / name, config)
          or measure.summarized(workdir / name, config, settings)
          or measure.diverged(workdir / name)}
  stale = {}
  for name, _, config in points:
    differences = measure.trained_otherwise_text(workdir / name, config) if name in done else ""
    if differences:
      stale[name] = differences
  if stale:
    listed = ", ".join(f"{name} ({details})" for name, details in stale.items())
    raise SweepError(
        f"{len(stale)} finished point(s) in {workdir} were trained under another config than the "
        f"sweep now gives them: {listed}; the sweep file or the tuning choice changed since. "
        "Move those folders aside to rerun them, or restore the sweep file.")
  for name in done:
    why = "diverged (non-finite loss)" if measure.diverged(workdir / name) else "finished"
    print(f"[{name}] {why} already; skipped.")
  todo = [point for point in points if point.name not in done]
  if workers > 1 and len(todo) > 1:
    _train_in_workers(todo, workdir, settings, workers)
    return
  for name, overrides, config in todo:
    stopped_by = train_point(name, overrides, config, str(workdir / name), settings)
    if stopped_by:
      raise Stopped(stopped_by, [name])


_STOPPING = None  # In a worker process: the sweep's "stop" event.
_SWEEP_PID = None  # In a worker process: the sweep's process id.
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
ORPHAN_GRACE_SECONDS = 5.0  # What a worker training a point has to checkpoint once its sweep dies.
_PR_SET_PDEATHSIG = 1  # From <linux/prctl.h>.
_SWEEP_GONE = signal.SIGUSR1  # A worker's parent-death signal: it wakes `_watch_sweep`.


def train_point(name: str, overrides, config, point_dir: str,
                settings: measure.Settings) -> str | None:
  """Trains one point (resuming it) and writes its summary with the training wall time,
  over every attempt that a signal stopped (`measure.WALL_FILE`; a killed attempt's
  time is lost), and the device kind of every attempt (`measure.DEVICE_FILE`); the
  signal's name, and no summary, if a signal stopped it, training or measuring
  (`_measure`). A non-finite loss that stops it is recorded (`measure.record_diverged`):
  no summary, and the sweep does not train it again. In a worker of a sweep that is
  stopping or gone, nothing (the point is left as it is)."""
  if _STOPPING is not None and (_STOPPING.is_set() or not _sweep_alive(_SWEEP_PID)):
    return None
  point_dir = epath.Path(point_dir)
  resuming = bool(run_lib.checkpoint_steps(point_dir))
  print(f"[{name}] {'resuming' if resuming else 'starting'}.", flush=True)
  earlier = (measure.trained_seconds(point_dir) if resuming else None) or 0.0
  measure.record_device(point_dir)  # The kind it trains on: one kind per seed group.
  start = time.perf_counter()
  try:
    result = train.train_and_evaluate(config, str(point_dir))
  except train.NonFiniteLossError as e:
    measure.record_diverged(point_dir, str(e))  # Not retrained; tuning counts it diverged.
    keep = "" if config.skip_nonfinite else "; set skip_nonfinite=True to skip such steps"
    print(f"[{name}] stopped: {e} It is left out of the results{keep}.")
    return None
  wall = earlier + time.perf_counter() - start
  measure.record_trained_seconds(point_dir, wall)
  if result.interrupted:
    return result.interrupted
  return _measure(name, overrides, config, point_dir, wall, settings)


class _SignalWhileMeasuring(Exception):
  pass


def _measure(name: str, overrides, config, point_dir: epath.Path, wall: float,
             settings: measure.Settings) -> str | None:
  """`measure.summarize_point` for a point trained to its end; SIGTERM or SIGINT stops
  the measures at once (a worker ignores signals outside training, and would measure on)
  and returns the signal's name: the point stays finished, unmeasured, and the sweep's
  aggregation measures it when the same command runs again. Off the main thread (where
  no handler can be set) it measures to the end."""

  def stop(signum, frame):
    del frame
    raise _SignalWhileMeasuring(signal.Signals(signum).name)

  main_thread = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, stop) for s in _SIGNALS} if main_thread else {}
  try:
    measure.summarize_point(point_dir, name, overrides, config, settings, wall_seconds=wall)
  except _SignalWhileMeasuring as e:
    print(f"[{name}] {e} while measuring: trained to its end; measured when the sweep runs again.",
          flush=True)
    return str(e)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return None


def _worker_init(stopping, sweep_pid: int) -> None:
  """A worker process parses no command line: absl's flags are marked parsed for the
  libraries that read them (absl logging, Grain). `stopping` is set when the sweep stops;
  the worker ends soon after the sweep process `sweep_pid` dies (`_exit_with`)."""
  global _STOPPING, _SWEEP_PID
  _STOPPING, _SWEEP_PID = stopping, sweep_pid
  flags.FLAGS.mark_as_parsed()
  _exit_with(sweep_pid)


def _exit_with(sweep_pid: int) -> None:
  """Ends this worker soon after the sweep process `sweep_pid` dies (SIGKILL, the
  out-of-memory killer): it would otherwise train on, then wait for the dead sweep's next
  point forever, ignoring SIGTERM. A thread checks every second that the sweep is still
  its parent; on Linux `prctl(PR_SET_PDEATHSIG)` wakes it at once with `_SWEEP_GONE`.
  That signal only wakes the thread, which checks: Linux sends it when the thread that
  started the worker ends, not the process, and once per dying thread of the sweep. Its
  handler takes no lock (a byte into a pipe): a second signal runs it again inside the
  first, and an `Event.set()` there deadlocked the worker."""
  wake_read, wake_write = os.pipe()
  os.set_blocking(wake_write, False)

  def wake(signum, frame):
    del signum, frame
    try:
      os.write(wake_write, b"\0")
    except BlockingIOError:
      pass  # Awake already.

  if sys.platform.startswith("linux"):
    try:
      signal.signal(_SWEEP_GONE, wake)
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(_SWEEP_GONE), 0, 0, 0)
    except (OSError, AttributeError, ValueError):
      pass  # The thread alone, within a second.
  threading.Thread(target=_watch_sweep, args=(sweep_pid, wake_read), name="sweep-watch",
                   daemon=True).start()


def _sweep_alive(sweep_pid: int) -> bool:
  if os.getppid() != sweep_pid:  # Adopted by init (or a subreaper): the sweep is gone.
    return False
  try:
    os.kill(sweep_pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def _watch_sweep(sweep_pid: int, wake_fd: int) -> None:
  """`_exit_with`'s thread: once the sweep is gone (checked first in case it died before
  the prctl), SIGTERM to this worker, which a point training takes as a request to
  checkpoint (and one measuring, to stop) and is given `ORPHAN_GRACE_SECONDS` for; then,
  or at once if none is, the worker exits."""
  while _sweep_alive(sweep_pid):
    if select.select([wake_fd], [], [], 1.0)[0]:
      os.read(wake_fd, 1024)
  os.kill(os.getpid(), signal.SIGTERM)  # Ignored outside training and measuring.
  deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
  while callable(signal.getsignal(signal.SIGTERM)) and time.monotonic() < deadline:
    time.sleep(0.1)  # Training or measuring: its handler is set until it returns.
  print(f"Sweep worker {os.getpid()} stops: its sweep (process {sweep_pid}) is gone; run the "
        "sweep again to resume its points.", file=sys.stderr, flush=True)
  os._exit(1)


def _train_in_workers(points, workdir: epath.Path, settings: measure.Settings,
                      workers: int) -> None:
  """`train_point` for every point in a pool of `workers` processes (spawned: JAX does not
  survive a fork), each keeping its compiled evaluation programs from point to point.
  Every built-in dataset the points read is prepared here first (two workers preparing
  one would collide). On a GPU the processes share the accelerator: unless set,
  `XLA_PYTHON_CLIENT_PREALLOCATE=false` keeps each to the memory it uses.

  Signals go through this process: the workers start with SIGTERM and SIGINT ignored
  (a worker still importing would die of one, and a terminal's SIGINT reaches the
  whole group), training points take them as a request to checkpoint, and SIGTERM or
  SIGINT here starts no further point and passes SIGTERM on to the workers until they
  return. The first error other than a non-finite loss stops the sweep once the
  running points end; a worker that dies (SIGKILL, out of memory) stops it with
  `SweepError`."""
  pipeline.prepare_builtins([c.data for _, _, c in points])
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # Inherited by the workers.
  context = multiprocessing.get_context("spawn")
  stopping = context.Event()
  main_thread = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS} if main_thread else {}
  pool = concurrent.futures.ProcessPoolExecutor(
      max_workers=min(workers, len(points)), mp_context=context, initializer=_worker_init,
      initargs=(stopping, os.getpid()))
  received, futures = [], {}

  def stop(signum, frame):
    del frame
    received.append(signal.Signals(signum).name)
    stopping.set()

  try:
    futures = {pool.submit(train_point, name, overrides, config, str(workdir / name), settings):
               name for name, overrides, config in points}  # Spawns the workers, signals ignored.
    if main_thread:
      for s in _SIGNALS:
        signal.signal(s, stop)
    stopped, pending = [], set(futures)
    while pending:
      done, pending = concurrent.futures.wait(pending, timeout=1.0,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
      results = [(f.result(), futures[f]) for f in done if not f.cancelled()]
      stopped += [(signal_name, name) for signal_name, name in results if signal_name]
      if received:  # Again every second: a worker may have been between points.
        for future in pending:
          future.cancel()
        _sigterm(_workers(pool))
  except concurrent.futures.process.BrokenProcessPool as e:
    stopping.set()
    _stop_workers(_workers(pool))
    raise SweepError(f"A worker process of the sweep in {workdir} died (killed, or out of memory); "
                    "run the same command again to resume its points.") from e
  finally:
    stopping.set()
    for future in futures:
      future.cancel()
    pool.shutdown(wait=True)
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stopped or received:
    raise Stopped(received[0] if received else stopped[0][0], [name for _, name in stopped])


def _workers(pool) -> list:
  """The worker processes of a `ProcessPoolExecutor`."""
  return list(getattr(pool, "_processes", {}).values())


def _sigterm(processes) -> bool:
  """SIGTERM to each live process of `processes`; whether any was alive (one that exits
  between the check and the signal is not)."""
  alive = False
  for process in processes:
    if process.is_alive():
      try:
        os.kill(process.pid, signal.SIGTERM)
        alive = True
      except ProcessLookupError:
        pass
  return alive


def _stop_workers(processes) -> None:
  """SIGTERM to every live worker once a second until none is left: the pool's own
  SIGTERM reaches a worker still setting up its point while it ignores the signal (its
  handler comes with the training loop), and that worker would train its whole point."""
  while _sigterm(processes):
    time.sleep(1.0)


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def train_commands(sweep: spec.Sweep, workdir: str) -> list[str]:
  """One `progressive train ...` command per point, runnable from any directory. With
  tuning, until `DIR/tuning/choice.json` exists (run `--aggregate_only` after the tuning
  runs to make it) only the tuning runs' commands; then the points' with their chosen
  values."""
  workdir = epath.Path(workdir)
  choice = tuning.read_choice(workdir)
  if tuning.made_otherwise(choice, sweep):
    choice = None  # Made on other tuning seeds: the sweep's own tuning runs come first.
  if sweep.tuning is not None and choice is None:
    runs = [(workdir / tuning.TUNING_DIR / t.name, t.overrides)
            for t in tuning.tuning_points(sweep)]
  else:
    runs = []
    for name, overrides, _ in sweep.expand(choice):
      chosen = {} if choice is None or choice["field"] in overrides else {
          choice["field"]: choice["values"][spec.arm_key(overrides)]}
      runs.append((workdir / name, {**overrides, **chosen}))
  lines = []
  for point_dir, overrides in runs:
    args = ["progressive", "train", f"--config={sweep.absolute_flag}",
            f"--workdir={point_dir.resolve()}"]
    merged = {**sweep.common, **overrides}
    args += [f"--config.{k}={_flag_value(v)}" for k, v in merged.items() if k != "name"]
    lines.append(shlex.join(args))
  return lines
