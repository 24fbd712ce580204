"""The sweep folder: the one sweep using it, and the files a sweep writes there whole.

A sweep (`run.run_sweep`, `aggregate.aggregate`) holds `DIR/.sweep_hold` for its whole
life, the same hold as a training run's workdir (`workdir.Hold`), so a second sweep on
the folder is refused naming the first; each point's own folder keeps its own `.hold`.
Every results file and point summary is written through a temporary file and a rename,
and a full disk is one line naming the file.
"""

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from etils import epath

from progressive.training import workdir as workdir_lib

HOLD_FILE = ".sweep_hold"
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
_FIX = "run the same command again (the points and their summaries are intact)."

_HELD: set[str] = set()  # The sweep folders this process holds.


@contextlib.contextmanager
def held(workdir) -> Iterator[None]:
  """Holds the sweep folder `workdir` (made if needed) until the block ends. A live
  holder is a `WorkdirError` naming it (its process, host and command); a killed sweep's
  hold is taken over with a note. Taken once per process: `run_sweep` aggregates inside
  its own hold."""
  workdir = epath.Path(workdir)
  key = os.path.abspath(workdir)
  if key in _HELD:
    yield
    return
  hold = workdir_lib.Hold(workdir, file=HOLD_FILE)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    hold.acquire()  # Not `with hold`: that asks JAX for the process count, starting its backend.
  except OSError as e:
    fix = ("Its disk (or quota) is full: free some space there, or choose another --workdir."
           if e.errno in FULL_DISK else "Choose a writable --workdir, or fix its permissions.")
    raise workdir_lib.WorkdirError(f"Cannot write the sweep folder --workdir={workdir} "
                                   f"({e.strerror or e}). {fix}") from None
  _HELD.add(key)
  try:
    yield
  finally:
    _HELD.discard(key)
    hold.release()


def write_file(path, write: Callable[[epath.Path], Any]) -> None:
  """`write(tmp)`, then `tmp` renamed to `path`: never half a file; a full disk is a
  `WorkdirError` naming `path`, with `tmp` removed."""
  workdir_lib.write_output(path, write, _FIX)


def write_text(path, text: str) -> None:
  write_file(path, lambda tmp: tmp.write_text(text))
