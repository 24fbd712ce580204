"""A researcher's own images, end to end: a folder of real photographs with the faults a
real folder has (a truncated JPEG, links that loop or dangle, a sub-folder, a file that
breaks after its index was cached), through the installed `progressive` command run from
another directory, and through `train_and_evaluate`."""

import os
import pathlib
import shutil
import struct

import numpy as np
import pytest

from tensorboardX.proto import event_pb2

from progressive import config_files
from progressive.data import folder, pipeline
from progressive.training import train
from progressive.training.metrics import read_rows
from tests.runs import assert_same_params
from tests.test_console import progressive

REPO = pathlib.Path(__file__).parents[1]
FOLDER = str(REPO / "configs" / "folder.py")
# The README's `cpu` variant, one short stage (ResNet-18's compiles are most of its time).
CPU = (f"--config={FOLDER}:cpu", "--config.stages=({'size': 32, 'steps': 4},)",
       "--config.batch_size=16", "--config.eval_sizes=(32,)", "--config.eval_bn_images=32")
# The simple CNN, two stages: for the faults that need a stage to end and another to start.
SMOKE = (f"--config={FOLDER}:smoke", "--config.stages=({'size': 16, 'steps': 6}, {'size': 32, 'steps': 4})")
pytestmark = pytest.mark.slow


def _photos(root, train=10, val=4):
  """Three classes of real photographs (scikit-image's), JPEG, 96x72."""
  folder.write_photo_folder(root, {"train": train, "val": val}, size=(96, 72),
                            classes=folder.PHOTO_CLASSES[:3])
  return pathlib.Path(root)


def _break(path: pathlib.Path, *, keep_size: bool) -> bytes:
  """Overwrites the JPEG `path` with its header and then garbage (the same length if
  `keep_size`, else cut short), restoring its modification time; returns the old bytes."""
  old, stat = path.read_bytes(), path.stat()
  body = np.random.default_rng(0).integers(0, 256, len(old) - 200, dtype=np.uint8).tobytes()
  path.write_bytes(old[:200] + (body if keep_size else body[:len(body) // 3]))
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  return old


def _restore(path: pathlib.Path, data: bytes) -> None:
  stat = path.stat()
  path.write_bytes(data)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _one_line_error(result, *names):
  """The command failed with exactly one line on stderr naming `names`, no traceback."""
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  assert all(n in lines[0] for n in names), lines[0]
  return lines[0]


def test_own_photographs_with_faults_train_then_analyze(tmp_path):
  """Own images through the installed command, on a folder with a truncated JPEG, a symbolic-link
  loop, a dangling link and a sub-folder: without `skip_unreadable` one line before
  anything compiles; with it the run finishes with every file left out named, says what
  to run next, and `progressive analyze` writes the report."""
  root = _photos(tmp_path / "images")
  astronaut = root / "train" / "astronaut"
  (astronaut / "truncated.jpg").write_bytes((astronaut / "00000.jpg").read_bytes()[:1500])
  os.symlink("loop.jpg", root / "train" / "brick" / "loop.jpg")
  os.symlink(tmp_path / "nowhere.jpg", root / "train" / "brick" / "dangling.jpg")
  (root / "train" / "camera" / "more").mkdir()
  shutil.copy(astronaut / "00001.jpg", root / "train" / "camera" / "more" / "x.jpg")
  args = ["train", *SMOKE, f"--config.data.data_dir={root}"]

  # The README's cpu variant reads the folder and stops before compiling.
  refused = progressive(["train", *CPU, f"--config.data.data_dir={root}",
                         f"--workdir={tmp_path / 'refused'}"], cwd=tmp_path)
  _one_line_error(refused, "truncated.jpg", "skip_unreadable")
  assert "Compiled" not in refused.stdout

  workdir = tmp_path / "run"
  result = progressive([*args, f"--workdir={workdir}", "--config.data.skip_unreadable=True"],
                       cwd=tmp_path)
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  out = result.stdout.splitlines()
  assert out[0].startswith("Left out 4 files"), out[:3]
  assert out[-1] == f"Analyse it: progressive analyze --workdir={workdir}", out[-3:]
  data = [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "data"]
  assert data[0]["skipped_unreadable"] == 1 and data[0]["left_out"] == 4
  left_out = " ".join(data[0]["left_out_files"])
  for name in ("truncated.jpg", "loop.jpg", "dangling.jpg", "more"):
    assert name in left_out, left_out
  for noise in ("OpenCV", "Downloading", "Unknown size"):
    assert noise not in result.stdout + result.stderr

  analyzed = progressive(["analyze", f"--workdir={workdir}", "--num_images=16"],
                         cwd=tmp_path)
  assert analyzed.returncode == 0 and "Traceback" not in analyzed.stderr, analyzed.stderr[-3000:]
  report = (workdir / "analysis" / "report.md").read_text()
  assert "astronaut" in report and "onfusion" in report


def test_a_validation_image_broken_after_indexing_loses_no_training(tmp_path):
  """A validation JPEG rewritten with garbage after its index was cached (same size, same
  modification time: the index cannot see it) fails the first stage's evaluation: one
  line, the stage's checkpoint already written. With the file restored, the same command
  evaluates that stage first and trains on; no step is trained twice."""
  root = _photos(tmp_path / "images")
  workdir = tmp_path / "run"
  args = ["train", *SMOKE, f"--config.data.data_dir={root}", f"--workdir={workdir}"]
  config = config_files.load_module(FOLDER).get_config("smoke")
  config.data.data_dir = str(root)
  pipeline.dataset_info(config.data)  # Builds and caches the index.
  victim = root / "val" / "camera" / "00002.jpg"
  original = _break(victim, keep_size=True)

  failed = progressive(args, cwd=tmp_path)
  _one_line_error(failed, str(victim), "skip_unreadable", "step 6")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["6"]
  assert not [r for r in read_rows(workdir / "metrics.jsonl") if r["event"] == "eval"]

  _restore(victim, original)
  resumed = progressive(args, cwd=tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "first evaluating stage 0's end" in resumed.stdout
  rows = read_rows(workdir / "metrics.jsonl")
  assert sorted({r["step"] for r in rows if r["event"] == "eval"}) == [6, 10]
  trained = [r["step"] for r in rows if r["event"] == "train"]
  assert len(trained) == len(set(trained)) and max(trained) == 10


def _tensorboard_images(workdir) -> dict[str, tuple[int, int]]:
  """`{tag: (height, width)}` of the images in a run's TensorBoard event files (TFRecord
  framing: length, its CRC, the serialized `Event`, its CRC)."""
  images = {}
  for path in pathlib.Path(workdir, "tensorboard").glob("events.out.tfevents.*"):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        if value.HasField("image"):
          images[value.tag] = (value.image.height, value.image.width)
  return images


def _smoke_config(root, **overrides):
  config = config_files.load_module(REPO / "configs" / "folder.py").get_config("smoke")
  config.data.data_dir = str(root)
  config.stages = ({"size": 16, "steps": 12}, {"size": 32, "steps": 4})
  config.batch_size = 8
  config.log_every_steps = 1
  for key, value in overrides.items():
    config[key.split(".")[0]][key.split(".")[1]] = value
  return config


def _break_after_step(monkeypatch, victim: pathlib.Path, step: int) -> dict:
  """Breaks `victim` (same size and time) once training has logged `step`."""
  broken = {}
  write = train.MetricsWriter.write

  def write_then_break(self, event, **fields):
    if event == "train" and fields.get("step") == step and not broken:
      broken["bytes"] = _break(victim, keep_size=True)
    return write(self, event, **fields)

  monkeypatch.setattr(train.MetricsWriter, "write", write_then_break)
  return broken


def test_a_training_image_broken_mid_stage_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
  """A training JPEG that breaks mid-stage (after the index was cached) stops the run at
  the batch that reads it, with the steps trained so far checkpointed; restored, the run
  resumes there and ends identical to one that never met it."""
  root = _photos(tmp_path / "images", train=6, val=2)
  reference = train.train_and_evaluate(_smoke_config(root), str(tmp_path / "reference"))
  victim = root / "train" / "astronaut" / "00001.jpg"
  broken = _break_after_step(monkeypatch, victim, 2)
  workdir = tmp_path / "run"
  with pytest.raises(pipeline.UnreadableExampleError) as error:
    train.train_and_evaluate(_smoke_config(root), str(workdir))
  message = str(error.value)
  assert str(victim) in message and "skip_unreadable" in message and "\n" not in message
  saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints"))
  assert saved and 2 <= saved[-1] < 12 and f"Checkpointed step {saved[-1]}" in message

  monkeypatch.undo()
  _restore(victim, broken["bytes"])
  resumed = train.train_and_evaluate(_smoke_config(root), str(workdir))
  assert resumed.step == reference.step == 16
  assert_same_params(resumed.state.params, reference.state.params)
  assert_same_params(resumed.state.batch_stats, reference.state.batch_stats)


def test_skip_unreadable_uses_a_neighbour_and_counts_it(tmp_path, monkeypatch):
  """With `skip_unreadable`, the same mid-stage break costs nothing but the image: a
  readable neighbour stands in, and the data and eval rows count the replacements."""
  root = _photos(tmp_path / "images", train=6, val=2)
  config = _smoke_config(root, **{"data.skip_unreadable": True})
  pipeline.dataset_info(config.data)  # Builds and caches the index; then the files break.
  _break(root / "val" / "camera" / "00001.jpg", keep_size=True)
  _break_after_step(monkeypatch, root / "train" / "brick" / "00002.jpg", 2)
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result.step == 16
  rows = read_rows(tmp_path / "run" / "metrics.jsonl")
  replaced = [r["replaced_unreadable"] for r in rows if r["event"] == "data" and "replaced_unreadable" in r]
  assert replaced and sum(replaced) > 0
  device = [r for r in rows if r["event"] == "device"]
  assert device == [{"event": "device", "step": 0, "kind": "cpu", "platform": "cpu", "count": 4}]
  # Each stage's first training inputs, as the pipeline made them, in TensorBoard.
  shown = _tensorboard_images(tmp_path / "run")
  assert sorted(shown) == ["show_batch/stage_0_16px", "show_batch/stage_1_32px"], shown
  assert shown["show_batch/stage_0_16px"][0] >= 16 and shown["show_batch/stage_1_32px"][0] >= 32
  evals = [r for r in rows if r["event"] == "eval"]
  # The broken test image is left out of the accuracy (a neighbour would count twice).
  assert evals and all(r["unreadable"] == 1 and r["examples"] == 5 for r in evals)
