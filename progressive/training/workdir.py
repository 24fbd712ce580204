"""A run's workdir: that it can be written, the hold of the run using it, the
`config.json` it holds, atomic writes, and the differences between two configs."""

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from progressive import config as config_lib
from progressive import errors


class WorkdirError(errors.Error, RuntimeError):
  """The workdir cannot hold this run (unwritable, or another run's config)."""


def write_atomically(path, write: Callable[[epath.Path], Any]) -> None:
  """`write(tmp)` then renames `tmp` to `path`, so no reader ever sees half a file; if
  the write fails (a full disk), `tmp` is removed and `path` is left as it was."""
  path = epath.Path(path)
  tmp = path.parent / (path.name + ".tmp")
  try:
    write(tmp)
    tmp.replace(path)
  except BaseException:
    try:
      tmp.unlink()
    except OSError:
      pass
    raise


def write_text_atomically(path, text: str) -> None:
  write_atomically(path, lambda tmp: tmp.write_text(text))


def write_output(path, write: Callable[[epath.Path], Any], fix: str) -> None:
  """`write_atomically` for a command's output file: a full disk or quota is a
  `WorkdirError` naming the file and `fix` (what to do once there is room)."""
  try:
    write_atomically(path, write)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    raise WorkdirError(f"Cannot write {path}: {e.strerror or e}. Its disk (or quota) is full: "
                       f"free some space there, then {fix}") from None


def ensure_writable(workdir: epath.Path) -> None:
  """Creates `workdir` if needed; `WorkdirError` naming the cause if nothing can be
  written there (a full disk, permissions, a read-only filesystem)."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      advice = "Its disk (or quota) is full: free some space there, or choose another --workdir."
    elif e.errno == errno.EROFS:
      advice = "It is on a read-only filesystem: choose another --workdir."
    elif e.errno in (errno.EACCES, errno.EPERM):
      advice = "Choose a writable directory, or fix its permissions."
    else:
      advice = "Choose a writable directory."
    raise WorkdirError(f"Cannot write to --workdir={workdir} ({e.strerror or e}). {advice}") from None


# One run per workdir: the run holds `workdir/.hold` for its whole life.
HOLD_FILE = ".hold"
HEARTBEAT_SECONDS = 30.0  # How often a run rewrites its hold's heartbeat time.
STALE_SECONDS = 3 * HEARTBEAT_SECONDS  # Another host's hold not refreshed for this long is stale.

_HELD_TOKENS: set[str] = set()  # The holds this process has taken and not released.


def _proc_stat(pid: int) -> tuple[str, str] | None:
  """`(state, start time in clock ticks since boot)` of process `pid` from /proc, if any."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  fields = stat[stat.rfind(")") + 2:].split()  # The name, in parentheses, may hold spaces.
  return (fields[0], fields[19]) if len(fields) > 19 else None


def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return None


def _gone(holder: dict[str, Any]) -> str | None:
  """Why the process of `holder` (a hold's record) is known to be gone, or None."""
  pid = holder.get("pid")
  if holder.get("host") == socket.gethostname() and isinstance(pid, int):
    boot = _boot_id()
    if holder.get("boot_id") and boot and holder["boot_id"] != boot:
      return "this host has restarted since"
    if pid == os.getpid():
      if holder.get("token") in _HELD_TOKENS:
        return None
      return "a process with its id, this one, started since"
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return f"process {pid} no longer exists"
    except PermissionError:
      pass  # Alive, run by another user.
    stat = _proc_stat(pid)
    if stat is not None:
      if stat[0] in ("Z", "X"):
        return f"process {pid} has exited"
      if holder.get("pid_start") and stat[1] != holder["pid_start"]:
        return f"process id {pid} now belongs to another process"
    return None
  age = time.time() - float(holder.get("heartbeat") or 0)
  if age > STALE_SECONDS:
    return f"its heartbeat is {age:.0f}s old, more than {STALE_SECONDS:.0f}s"
  return None


class Hold:
  """The one run using a workdir: `workdir/.hold`, a JSON record (host, process id and
  its start time, start time of the run, heartbeat time) created with `O_CREAT|O_EXCL`
  so that only one run can create it, refreshed every `HEARTBEAT_SECONDS` by a thread,
  and removed when the run ends, also on exceptions (`with Hold(workdir): ...`).

  A second run finding a live hold is refused at once with `WorkdirError` naming the
  holder. A hold is stale, and taken over with a one-line note, when its process is gone:
  on the same host (same hostname), when its process id no longer exists, is a zombie,
  or belongs to a process started at another time than the recorded one (a reused id),
  or the host has restarted since (another boot id); from another host (a shared
  filesystem), when its heartbeat is older than `STALE_SECONDS` (clocks are assumed to
  agree to well within that). `--force` never overrides a live hold. In a multi-process
  run only process 0 takes it, and every process learns whether it did. `file` names
  another hold in the same folder (a sweep's, beside its points' folders).
  """

  def __init__(self, workdir, file: str = HOLD_FILE):
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / file
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread = None
    self._held = False

  def __enter__(self):
    error = None
    if jax.process_index() == 0:
      try:
        self.acquire()
      except WorkdirError as e:
        error = e
    if jax.process_count() > 1:
      taken = int(np.min(multihost_utils.process_allgather(np.int32(error is None))))
      if not taken and error is None:
        error = WorkdirError(f"{self.workdir} is held by another run; process 0 says which.")
    if error is not None:
      raise error
    return self

  def __exit__(self, *exc):
    self.release()

  def _record(self, started: float) -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {
        "host": socket.gethostname(), "pid": os.getpid(), "pid_start": stat and stat[1],
        "boot_id": _boot_id(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "started_unix": started, "heartbeat": time.time(), "token": self.token,
        "command": " ".join(sys.argv),
    }

  def acquire(self) -> None:
    """Takes the hold, taking over a stale one; `WorkdirError` naming a live holder."""
    if "://" in str(self.workdir):  # No exclusive create on object stores.
      print(f"Note: {self.workdir} is not a local or network filesystem path; nothing stops "
            "a second run from using it at the same time.")
      return
    for _ in range(20):
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is None:
          continue  # Released meanwhile: try again.
        reason = _gone(holder)
        if reason is None:
          raise WorkdirError(self._held_message(holder)) from None
        if self._remove(holder):
          print(
              f"Note: taking over the hold of {self.workdir} from "
              + (f"process {holder['pid']} on {holder.get('host')} (started {holder.get('started')})"
                 if holder.get("pid") is not None else "an unreadable hold file")
              + f": {reason}."
          )
        continue
      self._started = time.time()
      try:
        with os.fdopen(fd, "w") as f:
          f.write(json.dumps(self._record(self._started)))
          f.flush()
          os.fsync(f.fileno())
      except OSError:  # A full disk: no empty hold is left to look like another run's.
        os.unlink(self.path)
        raise
      self._held = True
      _HELD_TOKENS.add(self.token)
      self._thread = threading.Thread(target=self._beat, name="workdir-hold", daemon=True)
      self._thread.start()
      return
    raise WorkdirError(f"Could not take the hold {self.path}: other runs keep taking it.")

  def _read(self) -> dict[str, Any] | None:
    """The current hold's record (None if there is none); one still being written is
    waited for, one that stays unreadable counts as another host's, its file time the
    heartbeat."""
    for _ in range(20):
      try:
        raw = self.path.read_text()
        mtime = os.stat(self.path).st_mtime
      except FileNotFoundError:
        return None
      try:
        return {**json.loads(raw), "_raw": raw}
      except ValueError:
        time.sleep(0.05)
    return {"host": None, "heartbeat": mtime, "_raw": raw}

  def _remove(self, holder: dict[str, Any]) -> bool:
    """Moves the stale hold `holder` away; False if another run changed it meanwhile."""
    aside = self.path.parent / f"{self.path.name}.stale.{self.token}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    if aside.read_text() != holder["_raw"]:  # Not the hold judged stale: put it back.
      try:
        os.link(aside, self.path)
      except OSError:
        pass
      aside.unlink()
      return False
    aside.unlink()
    return True

  def _held_message(self, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if pid is None:
      return (
          f"{self.workdir} may be in use by another run: its hold {self.path} is unreadable "
          f"(being written, or damaged). It is taken over once {STALE_SECONDS:.0f}s old; "
          "delete it sooner only if no run uses this workdir."
      )
    command = f", running `{holder['command']}`" if holder.get("command") else ""
    if host == socket.gethostname():
      how = f"stop it (`kill {pid}`: it checkpoints and lets the workdir go)"
    else:
      how = (
          f"stop it (`kill {pid}` on {host}: it checkpoints and lets the workdir go; a hold "
          f"whose heartbeat stops for {STALE_SECONDS:.0f}s is taken over)"
      )
    return (
        f"{self.workdir} is in use by another run: process {pid} on {host}, started "
        f"{holder.get('started')}{command}. One run at a time per workdir: wait for it to "
        f"end, {how}, or choose another --workdir; --force does not override this. The "
        f"hold is {self.path}."
    )

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        current = json.loads(self.path.read_text())
        if current.get("token") != self.token:
          print(f"WARNING: the hold {self.path} of this run was taken by process "
                f"{current.get('pid')} on {current.get('host')}.")
          return
        write_text_atomically(self.path, json.dumps({**current, "heartbeat": time.time()}))
      except (OSError, ValueError):
        pass  # A full disk or a hold being rewritten: try again at the next beat.

  def release(self) -> None:
    """Stops the heartbeat and removes the hold if it is still this run's."""
    if not self._held:
      return
    self._held = False
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    _HELD_TOKENS.discard(self.token)
    try:
      if json.loads(self.path.read_text()).get("token") == self.token:
        self.path.unlink()
    except (OSError, ValueError):
      pass


def live_holder(workdir, file: str = HOLD_FILE) -> dict[str, Any] | None:
  """The record of the live run holding `workdir` (`Hold`'s `file`), or None where none
  does (no hold, or a stale one); reads only."""
  holder = Hold(workdir, file)._read()  # pylint: disable=protected-access
  return holder if holder is not None and _gone(holder) is None else None


def check_not_held(workdir) -> None:
  """`WorkdirError` naming the holder if a live run holds `workdir`, for a command that
  writes there without a run's hold; a stale hold is left for the next run to take over."""
  holder = live_holder(workdir)
  if holder is not None:
    raise WorkdirError(Hold(workdir)._held_message(holder))  # pylint: disable=protected-access


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any], ignore=()) -> dict:
  """Fields (dotted, less `ignore`) whose values differ between a stored JSON config and a
  new one: `{field: (stored, new)}`. Fields added since `stored` was written read as their
  defaults, so an older run's `config.json` or checkpoint meta compares field for field."""
  old, new = flatten(config_lib.with_defaults(stored)), flatten(new)
  return {
      k: (old.get(k), new.get(k))
      for k in sorted(set(old) | set(new))
      if k not in ignore and old.get(k) != new.get(k)
  }


def check_workdir(workdir: epath.Path, config: ml_collections.ConfigDict, *, force: bool = False):
  """Makes sure `workdir` can take this run, then writes `config.json`.

  A workdir holding another config is refused with the differing fields; with `force`
  the old `config.json` is kept as `config.<time>.json` and the new one written.
  """
  ensure_writable(workdir)
  path = workdir / "config.json"
  new = json.loads(config.to_json())
  primary = jax.process_index() == 0
  if path.exists():
    differences = config_differences(json.loads(path.read_text()), new,
                                     ignore=config_lib.RUN_CONTROL_FIELDS)
    if differences and not force:
      details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differences.items())
      raise WorkdirError(
          f"{workdir} holds a run with a different config ({details}). Use a new "
          "--workdir, rerun with the config in its config.json, or pass --force to "
          "continue this run under the new config."
      )
    if differences and primary:
      backup = workdir / f"config.{time.strftime('%Y%m%d-%H%M%S')}.json"
      path.rename(backup)
      print(f"--force: the previous config is kept as {backup}.")
  if primary:  # Written whole then renamed, so other processes never read half of it.
    write_text_atomically(path, json.dumps(new, indent=2) + "\n")
