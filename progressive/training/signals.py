"""SIGTERM and SIGINT as a request to checkpoint and stop at the next step boundary."""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignals:
  """Turns SIGTERM and SIGINT into a request to checkpoint at the next step boundary (or,
  during a stage's end, after its checkpoint) and stop.

  A second SIGINT interrupts at once. Handlers are only installed from the main thread
  (Python allows no other) and are restored on exit.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    print(f"\nReceived {signal.Signals(signum).name}: saving a checkpoint at the next step, "
          "or at the stage's end, then stopping.")

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def requested(self, *, can_sync: bool) -> int | None:
    """The signal to stop for, if any. With several processes they must agree, which
    takes a collective: only asked where all processes are (`can_sync`), e.g. at a
    logging step; any process's signal stops them all."""
    if jax.process_count() == 1:
      return self.signum
    if not can_sync:
      return None
    signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(signums)) or None
