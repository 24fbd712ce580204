"""Run outputs: `metrics.jsonl` (one JSON object per line) and TensorBoard events.

Every row has an `event` field (`train`, `eval`, `compile`, `stage`) and a `step`.
TensorBoard events are written with tensorboardX, which needs no TensorFlow.
"""

import json
import math
from collections.abc import Mapping
from typing import Any

from etils import epath


def read_rows(path) -> list[dict[str, Any]]:
  """All rows of a `metrics.jsonl` file (an empty list if there is none)."""
  path = epath.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _open_resumed(path: epath.Path, resume_step: int):
  """Opens a JSON-lines file for appending, first dropping the rows past `resume_step`
  (written by a run killed after its last checkpoint, and about to be written again)."""
  rows = [r for r in read_rows(path) if r.get("step", 0) <= resume_step]
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
  tmp.replace(path)
  return path.open("a")


class MetricsWriter:
  """Appends rows to `workdir/metrics.jsonl` and mirrors scalars to TensorBoard; layer
  activation statistics go to `workdir/activation_stats.jsonl`."""

  def __init__(self, workdir, *, resume_step: int = 0, active: bool = True):
    """Opens the writer; rows past `resume_step` (left by a killed run) are dropped.

    An inactive writer (processes other than the first) writes nothing.
    """
    workdir = epath.Path(workdir)
    self.path = workdir / "metrics.jsonl"
    self.stats_path = workdir / "activation_stats.jsonl"
    self.active = active
    if not active:
      return
    self._file = _open_resumed(self.path, resume_step)
    self._stats_file = _open_resumed(self.stats_path, resume_step)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

    self._tb = SummaryWriter(logdir=str(workdir / "tensorboard"), purge_step=resume_step + 1)

  def write(self, event: str, **fields) -> dict[str, Any]:
    row = {"event": event, **fields}
    if not self.active:
      return row
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    step = fields.get("step", 0)
    prefix = event if event != "eval" else f"eval/{fields.get('split')}_{fields.get('size')}"
    for key, value in fields.items():
      if key in ("step", "stage", "size", "split", "batch_size"):
        continue
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(f"{prefix}/{key}", value, step)
    return row

  def write_activation_stats(self, rows: list[Mapping[str, Any]]) -> None:
    """Rows of `progressive.analysis.activations.stats_rows`, one per layer."""
    if not self.active:
      return
    for row in rows:
      self._stats_file.write(json.dumps(row) + "\n")
      for key in ("mean", "std", "near_zero"):
        self._tb.add_scalar(f"activations/{row['layer']}/{key}", row[key], row["step"])
    self._stats_file.flush()

  def close(self) -> None:
    if not self.active:
      return
    self._file.close()
    self._stats_file.close()
    self._tb.close()
