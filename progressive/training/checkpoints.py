"""Orbax checkpoints of a run: save, restore with fallback, and parameter-only seeding.

A checkpoint at step N holds three items: `state` (the train state), `data` (the grain
iterator's state, JSON) and `meta` (step, stage and the config that wrote it, JSON).
Orbax writes each into a temporary directory and renames it when complete, so a run
killed mid-write leaves no checkpoint that restores. A checkpoint that exists but
cannot be read is moved aside (never deleted), with one warning line, and the previous
one is used; so is the temporary folder of a write that never completed. When none can
be read the run stops (`UnreadableCheckpointsError`) rather than start over, unless
`--force` asks for that. What orbax and tensorstore report of a failed read goes to
`workdir/error.log`. A `checkpoints/` folder removed under the run is recreated by the
next save, with one warning line; a write it took with it is written again at the end.

Before each save the free space is checked against the last checkpoint's size; a
checkpoint that would not fit, or whose (asynchronous) write fails, stops the run with
`CheckpointWriteError`: one line, the traceback in `workdir/error.log`.

Each array is written whole by its first replica (`single_replica_writes`), not in
slices by every replica.
"""

import dataclasses
import errno
import logging as std_logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from progressive.config import RESUMABLE_FIELDS, ConfigError
from progressive.optim import HEAD
from progressive.training.workdir import WorkdirError, config_differences, flatten

CORRUPT_DIR = "checkpoints_corrupt"
ERROR_LOG = "error.log"  # Tracebacks of failed writes (error.<process>.log on other processes).
PARTIAL_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's folder of a write not yet complete.
SPACE_FACTOR, SPACE_SLACK = 1.1, 1 << 20  # A checkpoint needs its estimate x 1.1 + 1 MiB.


def single_replica_writes(enabled: bool = True) -> None:
  """Has orbax write each array whole from its first replica, as it does where
  `JAX_PLATFORMS` names a GPU (`enabled=False`: orbax's replica-parallel write, for
  `experiments/checkpoint_bench.py` to compare).

  Elsewhere orbax's default is replica-parallel: each replica of a replicated array
  writes a slice of it, cut by an eager `lax.slice` per array and device, which lowers
  and compiles one program per shape and device at a process's first checkpoint. At
  this project's model sizes that costs far more than the parallel write saves: the
  first save of ResNet-18's train state on 4 CPU devices took 3.5 s, 0.6 s without
  (`experiments/checkpoint_bench.py`, docs/BENCHMARKS.md). Either way the checkpoint
  restores to the same arrays.
  """
  handler = ocp.type_handlers.get_type_handler(jax.Array)  # The registered one, as orbax built it.
  handler._use_replica_parallel = not enabled  # pylint: disable=protected-access


single_replica_writes()


class CheckpointWriteError(WorkdirError):
  """A checkpoint would not fit on the disk or could not be written, or the disk filled
  during the run; `str` is the one-line message (the step, the cause, the checkpoint
  that is intact), the traceback is in `workdir/error.log`."""


class UnreadableCheckpointsError(WorkdirError):
  """The workdir holds checkpoints but none can be restored; they are set aside in
  `checkpoints_corrupt/`. The run stops rather than start over from step 0."""


@dataclasses.dataclass
class _Write:
  """A manager's last checkpoint write, kept until the next one to redo it if
  `checkpoints/` is removed under it."""

  step: int
  args: Any
  lost: bool = False  # It failed because `checkpoints/` was removed under it.


_WRITES: "weakref.WeakKeyDictionary[ocp.CheckpointManager, _Write]" = weakref.WeakKeyDictionary()


def manager(workdir: epath.Path, max_to_keep: int) -> ocp.CheckpointManager:
  """The manager of `workdir/checkpoints`, by its absolute path: orbax's tensorstore
  writes refuse a relative one (a `--workdir` typed relative to the current directory
  failed at the run's first checkpoint)."""
  directory = workdir / "checkpoints"
  return ocp.CheckpointManager(
      directory if directory.is_absolute() else directory.absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
  )


def save(mngr: ocp.CheckpointManager, step: int, state, data_state, *, stage: int, config_json: dict):
  """Saves the train state, the data iterator's state, the stage and the config at `step`,
  in the background. First waits for the previous save and checks that this one fits:
  `CheckpointWriteError` if either fails. A `checkpoints/` folder removed since the last
  save is recreated, with one warning line."""
  wait(mngr, redo=False)  # A write lost with a removed folder is replaced by this one.
  workdir = epath.Path(mngr.directory).parent
  _recreate_if_removed(mngr, step)
  check_space(workdir, step, state)
  args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave({"step": step, "stage": stage, "config": config_json}),
  )
  _start_write(mngr, step, args)


def _start_write(mngr: ocp.CheckpointManager, step: int, args) -> None:
  try:
    mngr.save(step, args=args)
  except Exception as e:  # pylint: disable=broad-except
    workdir = epath.Path(mngr.directory).parent
    error = write_error(e, workdir, f"The checkpoint of step {step} could not be written", step)
    if error is None:
      raise
    raise error from None
  _WRITES[mngr] = _Write(step, args)


def wait(mngr: ocp.CheckpointManager, *, redo: bool = True) -> None:
  """Waits for the checkpoint being written; `CheckpointWriteError` naming it if its
  write failed (orbax reports that here, at the next save, or at close). A write that
  failed because `checkpoints/` was removed under it is written again, with one warning
  line (with `redo`, in a run of one process; else the next save replaces it)."""
  step = mngr.latest_step()  # The one in flight, if any.
  workdir = epath.Path(mngr.directory).parent
  write = _WRITES.pop(mngr, None)
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    removed = write is not None and write.step == step and _removed_steps(mngr, e) is not None
    if removed and not (redo and jax.process_count() > 1):
      _join_write_threads()
      _write_log(workdir, e)  # Its traceback and what orbax logged of it, for reference.
      _WRITES[mngr] = dataclasses.replace(write, lost=True)
      if redo:
        _recreate_if_removed(mngr, step)
        _start_write(mngr, step, write.args)
        wait(mngr, redo=False)
        if _WRITES.get(mngr):  # Removed again: stop rather than try for ever.
          raise CheckpointWriteError(
              f"The checkpoint of step {step} could not be written: {mngr.directory} was "
              f"removed twice while it was being written. Leave it in place, then run the same "
              "command again to resume."
          ) from None
      return
    error = write_error(e, workdir, f"The checkpoint of step {step} could not be written", step)
    if error is None:
      raise
    raise error from None


def _join_write_threads(timeout: float = 10.0) -> None:
  """Waits (up to `timeout` seconds) for the threads of orbax's failed write: orbax reports
  the first failure while the others still write (and log, and create folders). Their
  `join` raises what they met (another item of the write, failing as its folder went) or
  that they outlived the wait: the failure is the one being handled."""
  deadline = time.monotonic() + timeout
  for thread in threading.enumerate():
    if type(thread).__name__ == "_SignalingThread" and thread is not threading.current_thread():
      try:
        thread.join(max(0.0, deadline - time.monotonic()))
      except Exception:  # pylint: disable=broad-except
        pass


def _removed_steps(mngr: ocp.CheckpointManager, error: BaseException | None = None) -> list[int] | None:
  """The steps orbax holds as written that are gone from `checkpoints/`, if it was
  removed (or emptied) under the run, else None; with `error`, a write that failed for a
  missing file or folder counts as such a removal."""
  directory = epath.Path(mngr.directory)
  on_disk = steps_on_disk(directory.parent)
  gone = [s for s in mngr.all_steps() if s not in on_disk]
  if gone or not directory.exists():
    return gone
  failure = _failed_write(error) if error is not None else None
  if failure is not None and failure[1] == errno.ENOENT:
    return gone
  return None


def _recreate_if_removed(mngr: ocp.CheckpointManager, step: int) -> None:
  """If `checkpoints/` (or checkpoints in it) was removed under the run, or the last
  write failed for that: one warning line, then the folder is recreated and orbax
  forgets the checkpoints that are gone, for the checkpoint of `step`."""
  global _removal_warned
  write = _WRITES.pop(mngr, None)
  lost = write.step if write is not None and write.lost else None
  gone = _removed_steps(mngr)
  removed = gone is not None or lost is not None
  if jax.process_count() > 1:  # All recreate it, or none.
    removed = bool(np.any(multihost_utils.process_allgather(np.asarray(removed))))
  if not removed:
    return
  directory = epath.Path(mngr.directory)
  whole = not directory.exists() or not steps_on_disk(directory.parent)
  what = f"{directory} was removed" if whole else f"checkpoints were removed from {directory}"
  lost_steps = sorted({*(gone or []), *([lost] if lost is not None else [])})
  if lost_steps:
    what += f" (with {_checkpoints_of(lost_steps)})"
  again = f"writing the checkpoint of step {step} again" if lost == step else (
      f"saving the checkpoint of step {step}")
  _removal_warned = True
  if jax.process_index() == 0:
    print(f"WARNING: {what} while the run trained; {again}.", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    if lost is not None:  # This run's own write that failed, if any of it is left.
      for partial in directory.glob(f"{lost}{PARTIAL_SUFFIX}*"):
        shutil.rmtree(str(partial), ignore_errors=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"recreate checkpoints for step {step}")
  mngr.reload()


def _checkpoints_of(steps: list[int]) -> str:
  """"the checkpoint of step 8", "the checkpoints of steps 8, 16"."""
  if len(steps) == 1:
    return f"the checkpoint of step {steps[0]}"
  return f"the checkpoints of steps {', '.join(map(str, steps))}"


def steps_on_disk(workdir: epath.Path) -> list[int]:
  """The steps of the complete checkpoints in `workdir/checkpoints`, oldest first."""
  directory = workdir / "checkpoints"
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _folder_bytes(path: str) -> int:
  """The bytes the files under `path` take (their allocated blocks, at least their size)."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        st = os.lstat(os.path.join(root, name))
      except OSError:
        continue
      total += max(st.st_size, getattr(st, "st_blocks", 0) * 512)
  return total


def _megabytes(n: float) -> str:
  return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _resume_advice(workdir: epath.Path, failed_step: int | None, fix: str) -> str:
  intact = [s for s in steps_on_disk(workdir) if s != failed_step]
  if intact:
    return (
        f"The checkpoint of step {intact[-1]} is intact. {fix}, then run the same command "
        f"again to resume from step {intact[-1]}"
    )
  return f"No checkpoint has been written yet. {fix}, then run the same command again to start over"


FREE_SPACE = "Free some space, or move the workdir to a larger disk"
_FULL = (errno.ENOSPC, errno.EDQUOT)  # A full disk or quota.


def check_space(workdir: epath.Path, step: int, state) -> None:
  """`CheckpointWriteError` if the checkpoint of `step` would not fit in the free space:
  the size of the last checkpoint on disk (or, for the first, the state's bytes) times
  `SPACE_FACTOR`, plus `SPACE_SLACK`. Every process checks its own disk; all stop if one
  has no room."""
  directory = workdir / "checkpoints"
  try:
    free = shutil.disk_usage(str(directory)).free
  except OSError:  # Not a local path (an object store): nothing to check.
    return
  written = steps_on_disk(workdir)
  if written:
    estimate = _folder_bytes(str(directory / str(written[-1])))
  else:
    estimate = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(state))
  needed = int(estimate * SPACE_FACTOR) + SPACE_SLACK
  report = np.asarray([free >= needed, free / 1e6, needed / 1e6], np.float32)
  if jax.process_count() > 1:
    reports = np.asarray(multihost_utils.process_allgather(report))
    short = [r for r in reports if not r[0]]
    report = short[0] if short else report
  if report[0]:
    return
  where = directory if free < needed else "another process's workdir"
  raise CheckpointWriteError(
      f"Not enough space for the checkpoint of step {step}: it needs about "
      f"{_megabytes(report[2] * 1e6)} and {where} has {_megabytes(report[1] * 1e6)} free. "
      f"{_resume_advice(workdir, None, FREE_SPACE)}."
  )


def _failed_write(error: BaseException) -> tuple[str, int | None] | None:
  """`(cause, errno)` if `error` (or one it arose from) is a failed write: an `OSError`,
  or tensorstore's report of one; a full disk first; None for any other error."""
  seen, todo, found = set(), [error], []
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    todo += [e.__cause__, e.__context__]
    if isinstance(e, OSError):
      cause = e.strerror or str(e)
      cause = f"{cause} ({e.filename})" if e.filename else cause
      found.append((cause, e.errno))
      continue
    text = str(e)
    code = re.search(r"os_error_code='(\d+)'", text)
    if code:
      number = int(code.group(1))
      found.append((os.strerror(number), number))
    elif "No space left on device" in text:
      found.append(("No space left on device", errno.ENOSPC))
    elif text.startswith("NOT_FOUND:"):  # Tensorstore's, for a file or folder removed under it.
      found.append((os.strerror(errno.ENOENT), errno.ENOENT))
  full = [f for f in found if f[1] in _FULL]
  return (full or found or [None])[0]


def write_error(
    error: BaseException, workdir: epath.Path, what: str, failed_step: int | None = None
) -> CheckpointWriteError | None:
  """`CheckpointWriteError` "<what>: <cause>. <the checkpoint intact, what to do>" for a
  failed write (see `_failed_write`; None for other errors), its traceback and what orbax
  logged of it written to `workdir/error.log`."""
  failure = _failed_write(error)
  if failure is None:
    return None
  cause, code = failure
  log = _write_log(workdir, error)
  advice = _resume_advice(workdir, failed_step, FREE_SPACE if code in _FULL else "Fix the cause")
  return CheckpointWriteError(f"{what}: {cause}. {advice} (traceback in {log}).")


def full_disk_error(error: BaseException, workdir: epath.Path, step: int) -> CheckpointWriteError | None:
  """`CheckpointWriteError` for an error of a full disk met anywhere in the run (the
  metrics, TensorBoard), else None."""
  failure = _failed_write(error)
  if failure is None or failure[1] not in _FULL:
    return None
  return write_error(error, workdir, f"The run stopped at step {step}")


_CAPTURED: list[str] = []  # What orbax reported of a failed write, for error.log.
_removal_warned = False  # A removed `checkpoints/` was reported, orbax's reports of it with it.
_FORMAT = std_logging.Formatter("%(levelname)s %(pathname)s:%(lineno)d %(message)s")


def _log_name() -> str:
  return ERROR_LOG if jax.process_index() == 0 else f"error.{jax.process_index()}.log"


def _write_log(
    workdir: epath.Path, error: BaseException, reports: list[str] | None = None, title: str = ""
) -> str:
  """Appends `error`'s traceback and `reports` (by default `_CAPTURED`, what orbax reported
  of a failed write) to the error log; returns its path (in the temporary directory if
  the workdir cannot take it)."""
  if reports is None:
    reports = list(_CAPTURED)
    _CAPTURED.clear()
  name = _log_name()
  text = (
      f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {title or f'{type(error).__name__}: {error}'}\n"
      + "".join(traceback.format_exception(error))
      + "".join(f"--- reported by orbax:\n{r}\n" for r in reports)
  )
  fallback = os.path.join(tempfile.gettempdir(), f"progressive-{os.getpid()}.{name}")
  for path in (os.path.join(str(workdir), name), fallback):
    try:
      with open(path, "a") as f:
        f.write(text)
      return path
    except OSError:
      try:
        if os.path.getsize(path) == 0:  # Created, but the disk had no room for a byte.
          os.unlink(path)
      except OSError:
        pass
  return "no file: no space for it"


class QuietWriteErrors:
  """While open, what orbax's failed asynchronous writes print (its warning and error log
  records, asyncio's about its tasks, tensorstore's "Event loop is closed" reports) is
  kept for `error.log` instead; what is still kept at the end goes there, with a one-line
  warning (none if it followed a removed `checkpoints/`, whose warning says it). After a
  `CheckpointWriteError` it stays quiet until the process exits."""

  def __init__(self, workdir: epath.Path):
    self._workdir = workdir
    self._loggers = [std_logging.getLogger("absl"), std_logging.getLogger("asyncio")]

  def _filter(self, record: std_logging.LogRecord) -> bool:
    where = record.pathname if record.name != "asyncio" else str(record.msg) + str(record.args)
    if record.levelno >= std_logging.WARNING and f"{os.sep}orbax{os.sep}" in where:
      if len(_CAPTURED) < 200:
        _CAPTURED.append(_FORMAT.format(record))
      return False
    return True

  def _unraisable(self, unraisable) -> None:
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    if "Event loop is closed" in str(unraisable.exc_value) or any(
        f"{os.sep}orbax{os.sep}" in f.filename for f in frames
    ):
      if len(_CAPTURED) < 200:
        _CAPTURED.append("".join(traceback.format_exception(unraisable.exc_value)))
      return
    self._previous_hook(unraisable)

  def __enter__(self):
    global _removal_warned
    _CAPTURED.clear()
    _removal_warned = False
    for logger in self._loggers:
      logger.addFilter(self._filter)
    self._previous_hook = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    return self

  def __exit__(self, exc_type, exc, tb):
    if not isinstance(exc, CheckpointWriteError):  # After one, orbax's leftovers stay quiet.
      for logger in self._loggers:
        logger.removeFilter(self._filter)
      sys.unraisablehook = self._previous_hook
    if _CAPTURED and exc is None:
      log = _write_log(self._workdir, RuntimeError("orbax reported errors while saving"))
      if not _removal_warned:
        print(f"WARNING: orbax reported errors while saving checkpoints; they are in {log}.")


def _aside(workdir: epath.Path, name: str) -> epath.Path:
  """A new path in `checkpoints_corrupt/` for the folder `name`, stamped with the time."""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  target = workdir / CORRUPT_DIR / f"{name}-{stamp}"
  target.parent.mkdir(parents=True, exist_ok=True)
  n = 1
  while target.exists():
    n += 1
    target = target.parent / f"{name}-{stamp}-{n}"
  return target


_SET_ASIDE = re.compile(r"(\d+)-\d{8}-\d{6}(-\d+)?")  # The name `_aside` gives checkpoint N.


def set_aside_steps(workdir: epath.Path) -> list[int]:
  """The steps of the checkpoints in `checkpoints_corrupt/` that could not be restored
  (not the partial writes), oldest first."""
  directory = workdir / CORRUPT_DIR
  if not directory.exists():
    return []
  return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _SET_ASIDE.fullmatch(p.name)))


def set_aside_partial_writes(workdir: epath.Path) -> None:
  """Moves the folders of checkpoint writes that never completed (`N.orbax-checkpoint-tmp*`,
  left by a crash or a full disk) to `checkpoints_corrupt/`, with a note, so that none is
  in the way of the next save. Only while this run holds the workdir: another run's
  write in progress looks the same."""
  directory = workdir / "checkpoints"
  if jax.process_index() == 0 and directory.exists():
    for path in sorted(directory.iterdir()):
      if PARTIAL_SUFFIX not in path.name:
        continue
      target = _aside(workdir, path.name)
      path.rename(target)
      print(
          f"Note: {path} is a checkpoint whose write never completed; moved it to {target} "
          "(delete it to free its space)."
      )
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("set aside partial checkpoint writes")


def _brief(error: BaseException) -> str:
  """`Type: message` on one line, without tensorstore's spec; of a long chain of causes
  (`A: B: ...: Z`), the first and the last."""
  text = re.sub(r"\s*\[tensorstore_spec='.*?'\]", "", str(error), flags=re.DOTALL)
  text = " ".join(text.split())
  parts = text.split(": ")
  if len(text) > 160 and len(parts) > 2:
    text = f"{parts[0]}: ...: {parts[-1]}"
  text = text if len(text) <= 200 else text[:197] + "..."
  return f"{type(error).__name__}: {text}"


class _LateTaskReports:
  """A filter of the `asyncio` logger that sends "Task exception was never retrieved"
  records (the tasks of failed checkpoint reads, collected late) to error.log."""

  def __init__(self, workdir: epath.Path):
    self._path = os.path.join(str(workdir), _log_name())

  def filter(self, record: std_logging.LogRecord) -> bool:
    if "never retrieved" not in str(record.msg):
      return True
    try:
      with open(self._path, "a") as f:
        f.write(f"--- asyncio, after the failed reads:\n{_FORMAT.format(record)}\n")
    except OSError:
      pass
    return False


class _QuietReads:
  """While checkpoints are read: orbax's log records (warnings and above) and asyncio's
  "Task exception was never retrieved" (a failed read's task, collected while the reads
  go on) are held back, for error.log if a read fails (`failed`), else logged as usual at
  the end; the "Event loop is closed" reports that tensorstore's threads print for a
  moment after orbax gives up on a failed read go to error.log too, once they have
  stopped coming."""

  SETTLE_SECONDS = 0.2  # The reports come within milliseconds of the failure.

  def __init__(self, workdir: epath.Path):
    self._workdir = workdir
    self._loggers = [std_logging.getLogger("absl"), std_logging.getLogger("asyncio")]
    self._records: list[std_logging.LogRecord] = []
    self._reports: list[str] = []
    self._last = 0.0  # When the last failure or report came (time.monotonic).
    self._failed = False

  def _filter(self, record: std_logging.LogRecord) -> bool:
    late_task = record.name == "asyncio" and "never retrieved" in str(record.msg)
    if late_task or (record.levelno >= std_logging.WARNING
                     and f"{os.sep}orbax{os.sep}" in record.pathname):
      self._records.append(record)
      return False
    return True

  def _unraisable(self, unraisable) -> None:
    if "Event loop is closed" not in str(unraisable.exc_value):
      self._previous_hook(unraisable)
      return
    self._last = time.monotonic()
    if len(self._reports) < 200:
      self._reports.append("".join(traceback.format_exception(unraisable.exc_value)))

  def failed(self) -> list[str]:
    """The records held back so far, formatted for error.log."""
    self._failed, self._last = True, time.monotonic()
    records = [_FORMAT.format(r) for r in self._records]
    self._records.clear()
    return records

  def __enter__(self):
    for logger in self._loggers:
      logger.addFilter(self._filter)
    self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
    return self

  def __exit__(self, exc_type, exc, tb):
    deadline = time.monotonic() + 10 * self.SETTLE_SECONDS
    while self._failed and time.monotonic() < min(self._last + self.SETTLE_SECONDS, deadline):
      time.sleep(self.SETTLE_SECONDS / 4)
    sys.unraisablehook = self._previous_hook
    for logger in self._loggers:
      logger.removeFilter(self._filter)
    if not self._failed:
      for record in self._records:
        std_logging.getLogger(record.name).handle(record)
      return
    # The failed reads' asyncio tasks are collected later, and asyncio then logs "Task
    # exception was never retrieved" with the traceback: to error.log, for the process's life.
    std_logging.getLogger("asyncio").addFilter(_LateTaskReports(self._workdir))
    held = [_FORMAT.format(r) for r in self._records]
    if self._reports or held:
      text = "".join(f"--- reported during the reads (orbax, asyncio):\n{r}\n" for r in held)
      if self._reports:
        text += (f"--- tensorstore reported 'Event loop is closed' {len(self._reports)} times "
                 f"after the failed reads (its threads outlive orbax's reads), the first:\n"
                 f"{self._reports[0]}")
      try:
        with open(os.path.join(str(self._workdir), _log_name()), "a") as f:
          f.write(text)
      except OSError:
        pass


def _quarantine(mngr: ocp.CheckpointManager, workdir: epath.Path, step: int, error: Exception,
                reports: list[str], fallback: int | None) -> None:
  """Moves an unreadable checkpoint out of orbax's sight, keeping every byte of it, with
  one warning line; why it cannot be read goes to error.log."""
  source = workdir / "checkpoints" / str(step)
  if jax.process_index() == 0:
    target = _aside(workdir, str(step))
    source.rename(target)
    log = _write_log(workdir, error, reports, f"Checkpoint {source} cannot be restored; moved it "
                     f"to {target}. {type(error).__name__}: {error}")
    then = f", falling back to step {fallback}" if fallback is not None else ""
    print(f"WARNING: Checkpoint {source} cannot be restored ({_brief(error)}); moved it to "
          f"{target}{then} (details in {log}).", flush=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
  mngr.reload()


def restore_latest(
    mngr: ocp.CheckpointManager, workdir: epath.Path, state, config_json: dict, *,
    force: bool = False,
) -> tuple[Any, dict, dict] | None:
  """Restores the newest readable checkpoint as `(state, data_state, meta)`, or None.

  Unreadable checkpoints (truncated or corrupt files) are moved to `checkpoints_corrupt/`
  with a warning line each. A checkpoint written under an incompatible config raises
  `ConfigError` naming the fields, since falling back would silently mix two runs. When
  none can be restored and some were set aside (now or by an earlier run), the run
  would start over: `UnreadableCheckpointsError`, unless `force` asks for that (None).
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  with _QuietReads(workdir) as reads:
    for i, step in enumerate(steps):
      fallback = steps[i + 1] if i + 1 < len(steps) else None
      try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if meta is None or "step" not in meta:
          raise ValueError("its meta item is empty")
      except Exception as e:  # pylint: disable=broad-except
        _quarantine(mngr, workdir, step, e, reads.failed(), fallback)
        continue
      differences = config_differences(meta.get("config", {}), config_json, RESUMABLE_FIELDS)
      if differences:
        details = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in differences.items())
        raise ConfigError(
            f"Checkpoint {workdir / 'checkpoints' / str(step)} was written under another "
            f"config ({details}). Resume it with its own config, or start a new --workdir "
            f"with --config.init_from={workdir} to take only its parameters."
        )
      try:
        target, upgrade = _target_for(mngr, step, state)
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        _check_finite(restored.state.params)
      except Exception as e:  # pylint: disable=broad-except
        _quarantine(mngr, workdir, step, e, reads.failed(), fallback)
        continue
      return upgrade(restored.state), restored.data, restored.meta
  set_aside = set_aside_steps(workdir)
  if not set_aside:
    return None
  where = (f"{len(set_aside)} unreadable checkpoint{'s' if len(set_aside) > 1 else ''} (step"
           f"{'s' if len(set_aside) > 1 else ''} {', '.join(map(str, set_aside))}) "
           f"{'are' if len(set_aside) > 1 else 'is'} kept in {workdir / CORRUPT_DIR}")
  if force:
    if jax.process_index() == 0:
      print(f"--force: no checkpoint in {workdir / 'checkpoints'} can be restored ({where}); "
            "starting over from step 0.", flush=True)
    return None
  why = f" (why: {workdir / ERROR_LOG})" if (workdir / ERROR_LOG).exists() else ""
  raise UnreadableCheckpointsError(
      f"No checkpoint in {workdir / 'checkpoints'} can be restored: {where}{why}. The run "
      "does not start over on its own: rerun with --force to start over from step 0 in "
      "this workdir, or choose a new --workdir."
  )


def _target_for(mngr: ocp.CheckpointManager, step: int, state):
  """`(restore target, upgrade)` for the checkpoint at `step`: `state` itself, or, for a
  checkpoint written before the optimiser held the LR peak as `lr_scale` (`optim`),
  `state` without it and a function that puts back the fresh state's value (the run's
  own `config.opt.lr_max`, since a resume keeps its config)."""
  hyperparams = getattr(state.opt_state, "hyperparams", None)
  if not hyperparams or "lr_scale" not in hyperparams:
    return state, lambda restored: restored
  handler = ocp.StandardCheckpointHandler()
  try:
    saved = handler.metadata(epath.Path(mngr.directory) / str(step) / "state")
  finally:
    handler.close()
  saved_hyperparams = getattr(saved, "tree", saved)["opt_state"]["hyperparams"]
  if "lr_scale" in saved_hyperparams:
    return state, lambda restored: restored
  lr_scale = hyperparams["lr_scale"]
  older = {k: v for k, v in hyperparams.items() if k != "lr_scale"}
  target = state.replace(opt_state=state.opt_state._replace(hyperparams=older))

  def upgrade(restored):
    opt_state = restored.opt_state
    return restored.replace(opt_state=opt_state._replace(
        hyperparams={**opt_state.hyperparams, "lr_scale": lr_scale}))

  return target, upgrade


def _check_finite(params) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not np.all(np.isfinite(np.asarray(leaf))):
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} holds NaN or infinity")


def init_from(path: str, state):
  """`state` with its params and batch_stats taken from another run's checkpoint (or an
  imported network's: `progressive import`).

  `path` is a run's workdir (its latest checkpoint is used), its `checkpoints/` folder,
  or one step folder. Only the parameters and batch statistics are read. A head (the
  module `head`) of another shape, another class count, keeps `state`'s own fresh
  initialisation, with one line saying so; every other shape must match, else
  `ConfigError` names the first parameter that differs.
  """
  path = epath.Path(path)
  if (path / "checkpoints").exists():
    path = path / "checkpoints"
  if not (path / "state").exists():
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []
    if not steps:
      raise ConfigError(
          f"config.init_from={str(path)!r} holds no checkpoint; give a run's workdir, its "
          "checkpoints/ folder or one step folder in it."
      )
    path = path / str(steps[-1])
  saved = ocp.StandardCheckpointer().restore(path / "state")
  head = f"{HEAD}."
  differing = {}
  for key in ("params", "batch_stats"):
    have = flatten(_shapes(saved.get(key) or {}))
    want = flatten(_shapes(getattr(state, key)))
    for name in sorted(set(have) | set(want)):
      if have.get(name) != want.get(name):
        differing[f"{key}.{name}"] = (have.get(name), want.get(name))
  for name, (there, here) in differing.items():
    if not name.split(".", 1)[1].startswith(head):
      raise ConfigError(
          f"config.init_from={str(path)!r} does not fit this model: {name} has shape "
          f"{there} there and {here} here. Parameters can only be taken from a run of the "
          "same architecture and width (the head alone may differ: another class count)."
      )
  updates = {}
  for key in ("params", "batch_stats"):
    current, taken = getattr(state, key), dict(saved.get(key) or {})
    if any(name.startswith(f"{key}.{head}") for name in differing):
      taken[HEAD] = current[HEAD]  # Another class count: this model's fresh head.
    updates[key] = jax.tree.map(
        lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding), taken, current)
  if differing and jax.process_index() == 0:
    name, (there, here) = next(iter(differing.items()))
    print(f"config.init_from: the head starts afresh ({name} has shape {there} in {path} and "
          f"{here} here: another class count); every other parameter is taken from it.",
          flush=True)
  return state.replace(**updates)


def _shapes(tree) -> dict:
  """A nested dict of shapes (as lists) for a pytree of arrays or array metadata."""
  if isinstance(tree, Mapping):
    return {k: _shapes(v) for k, v in tree.items()}
  return list(tree.shape)


def stop_error(error, close_errors, workdir, step: int):
  """The `CheckpointWriteError` to stop with for `error` (met training or closing), if
  a write failed: the checkpoint's own if its write failed too (the first cause of a
  full disk), else one for a full disk under the metrics or TensorBoard; else None."""
  if isinstance(error, CheckpointWriteError):
    return error
  if not isinstance(error, OSError):
    return None
  failed = [e for e in close_errors if isinstance(e, CheckpointWriteError)]
  return failed[0] if failed else full_disk_error(error, workdir, step)
