"""Run outputs: `metrics.jsonl` (one JSON object per line) and TensorBoard events.

Every row has an `event` field (`train`, `eval`, `compile`, `stage`) and a `step`.
TensorBoard events are written with tensorboardX, which needs no TensorFlow.
`TrainMetrics` keeps the training step's metrics on the device until they are fetched
(every N steps), and stops a run on a non-finite loss, or on too many skipped steps
(`SkippedSteps`); `Progress` is the per-stage progress bar.
"""

import collections
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from progressive.training.workdir import write_text_atomically


def read_rows(path) -> list[dict[str, Any]]:
  """All rows of a `metrics.jsonl` file (an empty list if there is none). A last line
  without its newline is a row a full disk or a kill cut short: it is left out."""
  path = epath.Path(path)
  if not path.exists():
    return []
  text = path.read_text()
  if not text.endswith("\n"):
    text = text[: text.rfind("\n") + 1]
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def _open_resumed(path: epath.Path, resume_step: int):
  """Opens a JSON-lines file for appending, first dropping the rows past `resume_step`
  (written by a run killed after its last checkpoint, and about to be written again) and
  a last row cut short (`read_rows`)."""
  rows = [r for r in read_rows(path) if r.get("step", 0) <= resume_step]
  write_text_atomically(path, "".join(json.dumps(r) + "\n" for r in rows))
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

  def write_images(self, tag: str, images, step: int) -> None:
    """uint8 `[N, H, W, 3]` images to TensorBoard (as a grid under `tag`)."""
    if self.active and images is not None and len(images):
      self._tb.add_images(tag, np.asarray(images), step, dataformats="NHWC")

  def write_activation_stats(self, rows: list[Mapping[str, Any]]) -> None:
    """Rows of `progressive.training.activations.stats_rows`, one per layer."""
    if not self.active:
      return
    for row in rows:
      self._stats_file.write(json.dumps(row) + "\n")
      for key in ("mean", "std", "near_zero"):
        if math.isfinite(row[key]):  # tensorboardX warns of each NaN or inf.
          self._tb.add_scalar(f"activations/{row['layer']}/{key}", row[key], row["step"])
    self._stats_file.flush()

  def close(self) -> None:
    if not self.active:
      return
    self._file.close()
    self._stats_file.close()
    self._tb.close()


# With config.skip_nonfinite, a run stops when more than SKIP_SHARE of its last SKIP_WINDOW
# steps (of all the steps this process trained, while fewer) were skipped as non-finite.
SKIP_WINDOW, SKIP_SHARE = 50, 0.5


class NonFiniteLossError(FloatingPointError):
  """The training loss or state became NaN or infinite; or, with `skip_nonfinite`, more
  than `SKIP_SHARE` of the recent steps were skipped."""


class SkippedSteps:
  """Which of a run's last `window` steps were skipped as non-finite, across stages."""

  def __init__(self, window: int = SKIP_WINDOW, share: float = SKIP_SHARE):
    self.share = share
    self.recent = collections.deque(maxlen=window)
    self.total, self.steps = 0, 0  # Steps skipped, of those trained, in this process.

  def add(self, skipped: bool) -> None:
    self.recent.append(bool(skipped))
    self.total += bool(skipped)
    self.steps += 1

  def too_many(self) -> bool:
    return sum(self.recent) > self.share * len(self.recent)


def checkpoint_note(path: str | None, holds: str) -> str:
  """What the last checkpoint (`path`, None if none was written) holds, for an error."""
  return f"The last checkpoint, {path}, holds {holds}." if path else "No checkpoint was written."


@dataclasses.dataclass
class Progress:
  """A per-stage progress bar, or nothing when switched off."""

  total: int
  initial: int
  desc: str
  enabled: bool

  def __post_init__(self):
    self._bar = None
    if self.enabled:
      self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, leave=True)

  def update(self, n: int, **postfix):
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix(postfix, refresh=False)

  def close(self):
    if self._bar is not None:
      self._bar.close()


class TrainMetrics:
  """Step metrics left on the device until fetched: every N steps, or before a
  checkpoint or an evaluation, so a checkpoint never holds a non-finite state."""

  def __init__(self, writer: MetricsWriter, stage, progress: Progress, *,
               skipped: SkippedSteps | None = None,
               last_checkpoint: Callable[[], str | None] = lambda: None):
    """`skipped`: the run's record of skipped steps (with `skip_nonfinite`);
    `last_checkpoint`: the folder of the latest checkpoint, for the errors."""
    self._writer = writer
    self._stage = stage
    self._progress = progress
    self._skipped = skipped
    self._last_checkpoint = last_checkpoint
    self._pending = []
    self._since = time.perf_counter()
    self.last_finite_loss = None

  def add(self, metrics) -> None:
    self._pending.append(metrics)

  def flush(self, step: int) -> None:
    """Fetches the pending metrics, writes their `train` row and moves the progress bar;
    `NonFiniteLossError` on a non-finite loss that was not skipped, or (after the row)
    when more than `SKIP_SHARE` of the recent steps were skipped."""
    stage, progress = self._stage, self._progress
    if not self._pending:
      return
    fetched = jax.device_get(self._pending)
    elapsed = time.perf_counter() - self._since
    first = step - len(fetched) + 1
    for offset, m in enumerate(fetched):
      loss = float(m["loss"])
      if np.isfinite(loss):
        self.last_finite_loss = loss
      elif not m.get("skipped"):
        raise NonFiniteLossError(
            f"Non-finite loss {loss} at step {first + offset} (stage {stage.index}, "
            f"{stage.size}px); the last finite loss was {self.last_finite_loss}. "
            f"{checkpoint_note(self._last_checkpoint(), 'the state before it')} Lower "
            "config.opt.lr_max, or set config.skip_nonfinite=True to skip such steps."
        )
    row = dict(
        step=step,
        stage=stage.index,
        size=stage.size,
        loss=float(np.mean([m["loss"] for m in fetched])),
        accuracy=float(np.mean([m["accuracy"] for m in fetched])),
        lr=float(fetched[-1]["lr"]),
        momentum=float(fetched[-1]["momentum"]),
        images_per_sec=len(fetched) * stage.batch_size / elapsed,
        num_steps=len(fetched),  # The row averages steps (step - num_steps, step].
    )
    if "skipped" in fetched[0]:
      row["skipped"] = int(sum(int(m["skipped"]) for m in fetched))
    self._writer.write("train", **row)
    progress.update(
        len(fetched), loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}",
        img_s=f"{row['images_per_sec']:.0f}",
    )
    self._pending = []
    self._since = time.perf_counter()
    if self._skipped is not None and "skipped" in fetched[0]:
      self._check_skipped([int(m["skipped"]) for m in fetched], step)

  def _check_skipped(self, flags: list[int], step: int) -> None:
    skipped, stage = self._skipped, self._stage
    for flag in flags:
      skipped.add(flag)
    if skipped.too_many():
      overall = ""
      if skipped.steps > len(skipped.recent):
        overall = f" ({skipped.total} of the {skipped.steps} steps this process trained)"
      raise NonFiniteLossError(
          f"{sum(skipped.recent)} of the last {len(skipped.recent)} steps (to step {step}, "
          f"stage {stage.index}, {stage.size}px) were skipped as non-finite "
          f"(config.skip_nonfinite), more than {skipped.share:.0%}{overall}. "
          f"{checkpoint_note(self._last_checkpoint(), 'finite parameters')} Lower "
          "config.opt.lr_max and train again in a new --workdir."
      )

  @contextlib.contextmanager
  def paused(self, step: int):
    """Flushes before the block (an evaluation, a checkpoint) and leaves its time out of
    the next row's images/s."""
    self.flush(step)
    yield
    self._since = time.perf_counter()

  def close(self) -> None:
    self._progress.close()
