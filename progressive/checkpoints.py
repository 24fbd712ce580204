"""Orbax checkpoints of a run: save, restore with fallback, and parameter-only seeding.

A checkpoint at step N holds three items: `state` (the train state), `data` (the grain
iterator's state, JSON) and `meta` (step, stage and the config that wrote it, JSON).
Orbax writes each into a temporary directory and renames it when complete, so a run
killed mid-write leaves no checkpoint that restores. A checkpoint that exists but
cannot be read is moved aside (never deleted) and the previous one is used.
"""

import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from progressive.config_validation import RESUMABLE_FIELDS, ConfigError
from progressive.workdir import config_differences, flatten

CORRUPT_DIR = "checkpoints_corrupt"

def manager(workdir: epath.Path, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
  )


def save(mngr: ocp.CheckpointManager, step: int, state, data_state, *, stage: int, config_json: dict):
  """Saves the train state, the data iterator's state, the stage and the config at `step`."""
  mngr.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave({"step": step, "stage": stage, "config": config_json}),
      ),
  )


def _quarantine(mngr: ocp.CheckpointManager, workdir: epath.Path, step: int, error: Exception):
  """Moves an unreadable checkpoint out of orbax's sight, keeping every byte of it."""
  source = workdir / "checkpoints" / str(step)
  target = workdir / CORRUPT_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
    message = (
        f"Checkpoint {source} cannot be restored ({type(error).__name__}: {error}). "
        f"Moved it to {target} and falling back to the previous checkpoint."
    )
    logging.warning(message)
    print(f"WARNING: {message}")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
  mngr.reload()


def restore_latest(
    mngr: ocp.CheckpointManager, workdir: epath.Path, state, config_json: dict
) -> tuple[Any, dict, dict] | None:
  """Restores the newest readable checkpoint as `(state, data_state, meta)`, or None.

  Unreadable checkpoints (truncated or corrupt files) are moved to `checkpoints_corrupt/`
  with a warning. A checkpoint written under an incompatible config raises
  `ConfigError` naming the fields, since falling back would silently mix two runs.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
      if meta is None or "step" not in meta:
        raise ValueError("its meta item is empty")
    except Exception as e:  # pylint: disable=broad-except
      _quarantine(mngr, workdir, step, e)
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
      restored = mngr.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(state),
              data=ocp.args.JsonRestore(),
              meta=ocp.args.JsonRestore(),
          ),
      )
      _check_finite(restored.state.params)
    except Exception as e:  # pylint: disable=broad-except
      _quarantine(mngr, workdir, step, e)
      continue
    return restored.state, restored.data, restored.meta
  return None


def _check_finite(params) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not np.all(np.isfinite(np.asarray(leaf))):
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} holds NaN or infinity")


def init_from(path: str, state):
  """`state` with its params and batch_stats taken from another run's checkpoint.

  `path` is a run's workdir (its latest checkpoint is used), its `checkpoints/` folder,
  or one step folder. Only the parameters and batch statistics are read; every shape
  must match, else `ConfigError` names the first parameter that differs.
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
  updates = {}
  for key in ("params", "batch_stats"):
    have = flatten(_shapes(saved.get(key) or {}))
    want = flatten(_shapes(getattr(state, key)))
    for name in sorted(set(have) | set(want)):
      if have.get(name) != want.get(name):
        raise ConfigError(
            f"config.init_from={str(path)!r} does not fit this model: {key}.{name} has "
            f"shape {have.get(name)} there and {want.get(name)} here. Parameters can "
            "only be taken from a run of the same architecture and width."
        )
    current = getattr(state, key)
    updates[key] = jax.tree.map(
        lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding),
        saved.get(key) or {},
        current,
    )
  return state.replace(**updates)


def _shapes(tree) -> dict:
  """A nested dict of shapes (as lists) for a pytree of arrays or array metadata."""
  if isinstance(tree, Mapping):
    return {k: _shapes(v) for k, v in tree.items()}
  return list(tree.shape)
