"""A run's workdir: that it can be written, the `config.json` it holds, atomic writes,
and the differences between two configs."""

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
from etils import epath

from progressive import config_validation


class WorkdirError(RuntimeError):
  """The workdir cannot hold this run (unwritable, or another run's config)."""


def write_atomically(path, write: Callable[[epath.Path], Any]) -> None:
  """`write(tmp)` then renames `tmp` to `path`, so no reader ever sees half a file."""
  path = epath.Path(path)
  tmp = path.parent / (path.name + ".tmp")
  write(tmp)
  tmp.replace(path)


def write_text_atomically(path, text: str) -> None:
  write_atomically(path, lambda tmp: tmp.write_text(text))


def ensure_writable(workdir: epath.Path) -> None:
  """Creates `workdir` if needed; `WorkdirError` if nothing can be written there."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(
        f"Cannot write to --workdir={workdir} ({e.strerror or e}). Choose a writable "
        "directory, or fix its permissions."
    ) from None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], ignore=()) -> dict:
  """Fields (dotted) whose values differ between two JSON-like configs: `{field: (old, new)}`."""
  old, new = flatten(old), flatten(new)
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
    old = json.loads(path.read_text())
    differences = config_differences(old, new, ignore=config_validation.RUN_CONTROL_FIELDS)
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
