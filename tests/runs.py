"""Helpers the tests share for comparing runs, for killing one mid-way, and for
counting what XLA compiles."""

import contextlib

import jax
import numpy as np
from jax._src import monitoring

from progressive.training import checkpoints
from progressive.training.metrics import read_rows


class Killed(Exception):
  """Raised in place of a kill, right after a checkpoint is saved."""


def die_after_save(monkeypatch, at_step: int) -> None:
  """Makes `checkpoints.save` raise `Killed` once the checkpoint of `at_step` is saved;
  `monkeypatch.undo()` (or a new `setattr`) restores it."""
  real_save = checkpoints.save

  def save_then_die(mngr, step, *args, **kwargs):
    real_save(mngr, step, *args, **kwargs)
    if step == at_step:
      raise Killed()

  monkeypatch.setattr(checkpoints, "save", save_then_die)


def assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def train_rows(workdir):
  return [(r["step"], r["stage"], r["loss"]) for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "train"]


def eval_rows(workdir):
  return [(r["step"], r["size"], r["accuracy"]) for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "eval"]


@contextlib.contextmanager
def backend_compiles():
  """The names of the functions XLA compiles inside the block (a program read from the
  persistent cache is not compiled)."""
  names = []

  def listener(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      names.append(kwargs.get("fun_name"))

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    monitoring.unregister_event_duration_listener(listener)
