"""Run outputs: `metrics.jsonl` (one JSON object per line) and TensorBoard events.

Every row has an `event` field (`train`, `eval`, `compile`) and a `step`. TensorBoard
events are written with tensorboardX, which needs no TensorFlow.
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


class MetricsWriter:
  """Appends rows to `workdir/metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir, *, resume_step: int = 0, active: bool = True):
    """Opens the writer; rows past `resume_step` (left by a killed run) are dropped.

    An inactive writer (processes other than the first) writes nothing.
    """
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self.active = active
    if not active:
      return
    rows = [r for r in read_rows(self.path) if r.get("step", 0) <= resume_step]
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(self.path)
    self._file = self.path.open("a")
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

    self._tb = SummaryWriter(logdir=str(epath.Path(workdir) / "tensorboard"), purge_step=resume_step + 1)

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

  def write_rows(self, event: str, rows: list[Mapping[str, Any]]) -> None:
    for row in rows:
      self.write(event, **row)

  def close(self) -> None:
    if not self.active:
      return
    self._file.close()
    self._tb.close()
