"""A folder index that cannot let a bad file stop a run halfway, on real photographs:
files decoded when the index is built, a cache keyed by every file's size and time and
checked when read, links and sub-folders named, and decode failures caught per example
where the batch is made."""

import builtins
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from progressive import config as config_lib
from progressive import errors
from progressive.data import decode, folder, pipeline

CLASSES = ("brick", "camera", "coffee")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> pathlib.Path:
  """Three classes of real photographs (scikit-image's), JPEG, 64x48: 4 train, 2 val each."""
  return pathlib.Path(folder.write_photo_folder(
      tmp_path_factory.mktemp("photos"), {"train": 4, "val": 2}, size=(64, 48), classes=CLASSES))


@pytest.fixture
def root(photos, tmp_path) -> pathlib.Path:
  """A fresh copy of `photos`, for a test to break."""
  return pathlib.Path(shutil.copytree(photos, tmp_path / "images"))


def _data(root, **fields):
  data = config_lib.default_config().data
  data.name, data.data_dir, data.image_size, data.eval_split = "folder", str(root), 32, "val"
  for key, value in fields.items():
    data[key] = value
  return data


def _break(path: pathlib.Path, *, keep_size: bool) -> bytes:
  """Rewrites the JPEG `path` in place: its first 200 bytes, then garbage (the same length
  if `keep_size`, else a third of it), with its modification time restored; returns the
  old bytes."""
  old, stat = path.read_bytes(), path.stat()
  body = np.random.default_rng(0).integers(0, 256, len(old) - 200, dtype=np.uint8).tobytes()
  path.write_bytes(old[:200] + (body if keep_size else body[:len(body) // 3]))
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert path.stat().st_mtime_ns == stat.st_mtime_ns
  return old


def _restore(path: pathlib.Path, data: bytes) -> None:
  stat = path.stat()
  path.write_bytes(data)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _one_line(error) -> str:
  message = str(error)
  assert "\n" not in message, message
  return message


def test_a_truncated_jpeg_is_named_when_the_index_is_built(root):
  victim = root / "train" / "camera" / "00001.jpg"
  victim.write_bytes(victim.read_bytes()[:int(victim.stat().st_size * 0.6)])
  decode.image_size(victim)  # Its header alone reads fine.
  with pytest.raises(ValueError) as error:
    folder.split_index(_data(root), "train")
  message = _one_line(error.value)
  assert message.startswith(f"{victim} is not a readable image: image file is truncated")
  assert "skip_unreadable=True" in message

  info = pipeline.dataset_info(_data(root, skip_unreadable=True))
  index = folder.split_index(_data(root, skip_unreadable=True), "train")
  assert "camera/00001.jpg" not in index.paths and len(index.paths) == 11
  assert len(index.skipped) == 1 and index.skipped[0].startswith(
      "camera/00001.jpg: unreadable (image file is truncated")
  assert info.num_skipped == 1 and info.num_train == 11
  assert len(info.left_out) == 1 and info.left_out[0].startswith(
      "train/camera/00001.jpg: unreadable (image file is truncated")


def test_a_jpeg_truncated_anywhere_fails_at_an_eighth_of_its_scale(photos, tmp_path):
  """`decode.check` decodes a JPEG at 1/8 scale, and that still reads all of its data."""
  data = (photos / "train" / "brick" / "00000.jpg").read_bytes()
  path = tmp_path / "cut.jpg"
  path.write_bytes(data)
  assert decode.check(path) == (48, 64)
  for fraction in (0.3, 0.6, 0.95, 0.99):
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(decode.UnreadableImageError, match="(?i)truncated"):
      decode.check(path)


def _break_after_indexing(root, **fields) -> tuple[pathlib.Path, pathlib.Path]:
  """Builds and caches both indexes of `_data(root, **fields)`, then breaks a train and a
  val JPEG keeping their sizes and modification times: the cached index still lists them."""
  pipeline.dataset_info(_data(root, **fields))
  train, val = root / "train" / "brick" / "00002.jpg", root / "val" / "coffee" / "00001.jpg"
  _break(train, keep_size=True)
  _break(val, keep_size=True)
  assert "brick/00002.jpg" in folder.split_index(_data(root, **fields), "train").paths
  assert "coffee/00001.jpg" in folder.split_index(_data(root, **fields), "val").paths
  return train, val


def test_a_file_rewritten_with_its_size_and_time_stops_its_batch_with_one_line(root):
  """The batch that reads it raises one line naming the file, the cause and the flag,
  in training and in evaluation."""
  train_victim, val_victim = _break_after_indexing(root)
  train = pipeline.open_split(_data(root, augment="rrc_flip"), "train", train=True)
  with pytest.raises(pipeline.UnreadableExampleError) as error:
    next(train.train_iterator(12, seed=0, size=16))  # One batch: every example.
  assert type(error.value) is pipeline.UnreadableExampleError
  assert isinstance(error.value, errors.Error) and error.value.path == str(train_victim)
  assert _one_line(error.value) == (
      f"Cannot decode {train_victim} (cannot identify image file); it changed after the "
      "index was built. Replace or remove it (the index is rebuilt on the next run), or set "
      "config.data.skip_unreadable=True to use a readable neighbour in its place.")
  val = pipeline.open_split(_data(root), "val")
  with pytest.raises(pipeline.UnreadableExampleError) as error:
    list(val.eval_batches(4))
  assert type(error.value) is pipeline.UnreadableExampleError and error.value.path == str(val_victim)
  assert _one_line(error.value).startswith(f"Cannot decode {val_victim} (cannot identify image file); ")


def test_a_file_rewritten_with_its_size_and_time_gives_way_to_a_flagged_neighbour(root, capsys):
  """With `skip_unreadable` the next example of the shard stands in, with its own label,
  flagged in `"unreadable"` (kept in training batches too); one warning per file."""
  train_victim, val_victim = _break_after_indexing(root, skip_unreadable=True)
  data = _data(root, augment="rrc_flip", skip_unreadable=True)
  index = folder.split_index(data, "train")
  batch = next(pipeline.open_split(data, "train", train=True).train_iterator(12, seed=0, size=16))
  assert set(batch) == {"image", "label", "unreadable"}
  assert batch["unreadable"].dtype == np.int32 and batch["unreadable"].shape == (12,)
  assert batch["unreadable"].sum() == 1
  neighbour = (index.paths.index("brick/00002.jpg") + 1) % 12  # The next in the index.
  assert batch["label"][batch["unreadable"] == 1].tolist() == [index.labels[neighbour]]

  val = pipeline.open_split(data, "val")
  batches = list(val.eval_batches(4, num_batches=3))  # 6 examples: the last batch is padding.
  flags, images, labels, mask = (np.concatenate([b[k] for b in batches])
                                 for k in ("unreadable", "image", "label", "mask"))
  assert flags.dtype == np.int32 and flags.shape == (12,) and flags.sum() == 1 and mask.sum() == 6
  j = int(np.flatnonzero(flags)[0])
  assert folder.split_index(data, "val").paths[j] == "coffee/00001.jpg"
  np.testing.assert_array_equal(images[j], images[(j + 1) % 6])
  assert labels[j] == labels[(j + 1) % 6]
  warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("Warning: cannot decode")]
  assert sorted(warnings) == sorted(
      f"Warning: cannot decode {v} (cannot identify image file); a readable neighbour stands "
      "in for it (config.data.skip_unreadable)." for v in (train_victim, val_victim))


def test_in_memory_batches_flag_nothing(tmp_path):
  """Every batch has `"unreadable"`, all zeros where nothing is decoded (arrays held in
  memory), also the eval padding batches."""
  images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), np.uint8)
  read = pipeline._MemoryReader({"image": images, "label": np.arange(6) % 3,  # pylint: disable=protected-access
                                 "family": np.zeros(6, np.int32)})
  split = pipeline.Split(read, num_examples=6, offset=0, start=0,
                         transform=pipeline.augment_lib.Transform(32, "flip"), train=True,
                         num_workers=0, extra_keys=("family",))
  batch = next(split.train_iterator(4, seed=0))
  assert set(batch) == {"image", "label", "unreadable"} and not batch["unreadable"].any()
  batches = list(split.eval_batches(4, num_batches=3))
  assert all(set(b) == {"image", "label", "family", "unreadable", "mask"} for b in batches)
  assert all(b["unreadable"].dtype == np.int32 and not b["unreadable"].any() for b in batches)


def test_a_damaged_tfds_record_is_named_or_its_neighbour_wraps_round(photos):
  jpeg = (photos / "train" / "brick" / "00000.jpg").read_bytes()
  source = [{"image": jpeg, "label": 0}, {"image": jpeg, "label": 1}, {"image": b"garbage", "label": 2}]
  read = pipeline._TfdsReader(source, "image", "label", "cifar10 train")  # pylint: disable=protected-access

  def split(skip):
    return pipeline.Split(read, num_examples=3, offset=0, start=0,
                          transform=pipeline.augment_lib.Transform(16), train=False,
                          num_workers=0, stage_sized=True, skip_unreadable=skip)

  with pytest.raises(pipeline.UnreadableExampleError) as error:
    next(split(False).eval_batches(3))
  assert error.value.path == "record 2 of cifar10 train" and _one_line(error.value) == (
      "Cannot decode record 2 of cifar10 train (cannot identify image file); the prepared "
      "dataset is damaged. Prepare it again, or set config.data.skip_unreadable=True to use "
      "a readable neighbour in its place.")
  batch = next(split(True).eval_batches(3))
  assert batch["unreadable"].tolist() == [0, 0, 1] and batch["label"].tolist() == [0, 1, 0]


@pytest.mark.slow
def test_a_decode_failure_reaches_the_caller_from_a_worker_process(root):
  """Through grain's worker processes (`num_workers=1`) the error arrives as itself: the
  same class, message and `path`."""
  pipeline.dataset_info(_data(root))
  victim = root / "train" / "coffee" / "00003.jpg"
  original = _break(victim, keep_size=True)
  split = pipeline.open_split(_data(root, num_workers=1), "train", train=True)
  iterator = split.train_iterator(12, seed=0, size=16)
  with pytest.raises(pipeline.UnreadableExampleError) as error:
    next(iterator)
  assert type(error.value) is pipeline.UnreadableExampleError and error.value.path == str(victim)
  assert _one_line(error.value).startswith(f"Cannot decode {victim} (cannot identify image file); ")
  iterator.close()

  data = _data(root, num_workers=1, skip_unreadable=True)
  _restore(victim, original)
  pipeline.dataset_info(data)  # The index with skip_unreadable, cached; then it breaks again.
  _break(victim, keep_size=True)
  iterator = pipeline.open_split(data, "train", train=True).train_iterator(12, seed=0, size=16)
  batch = next(iterator)
  iterator.close()
  assert batch["unreadable"].sum() == 1 and batch["image"].shape == (12, 16, 16, 3)


def test_a_rewrite_that_changes_the_size_rebuilds_the_index(root):
  folder.split_index(_data(root), "train")
  victim = root / "train" / "camera" / "00003.jpg"
  _break(victim, keep_size=False)
  with pytest.raises(ValueError, match=f"^{victim} is not a readable image: .*skip_unreadable=True"):
    folder.split_index(_data(root), "train")
  index = folder.split_index(_data(root, skip_unreadable=True), "train")
  assert [s.split(":")[0] for s in index.skipped] == ["camera/00003.jpg"]


def test_links_and_sub_folders_are_left_out_and_named(root, tmp_path):
  brick, camera = root / "train" / "brick", root / "train" / "camera"
  outside = tmp_path / "outside"
  outside.mkdir()
  shutil.copy(brick / "00000.jpg", outside / "x.jpg")
  os.symlink("loop.jpg", brick / "loop.jpg")
  os.symlink(tmp_path / "nowhere.jpg", brick / "dangling.jpg")
  os.symlink(outside / "x.jpg", camera / "escape.jpg")
  os.symlink(outside, camera / "escape_folder")
  os.symlink("../brick/00001.jpg", camera / "inside.jpg")  # Kept: it stays in ROOT.
  (camera / "more").mkdir()
  shutil.copy(brick / "00000.jpg", camera / "more" / "y.jpg")
  (root / "val" / "coffee" / "nested").mkdir()
  index = folder.split_index(_data(root), "train")
  assert index.left_out == (
      "brick/dangling.jpg: dangling symbolic link",
      "brick/loop.jpg: symbolic-link loop",
      "camera/escape.jpg: symbolic link leaving ROOT",
      "camera/escape_folder: symbolic link leaving ROOT",
      "camera/more: sub-folder (images are read only directly inside a class folder)",
  )
  assert "camera/inside.jpg" in index.paths and len(index.paths) == 13
  assert folder.split_index(_data(root), "train") == index  # Read back from the cache.
  assert json.loads((root / folder.INDEX_DIR / "train.json").read_text())["left_out"] == list(index.left_out)
  info = pipeline.dataset_info(_data(root))
  assert info.left_out == tuple(f"train/{e}" for e in index.left_out) + (
      "val/coffee/nested: sub-folder (images are read only directly inside a class folder)",)
  # A dangling link that comes to point at an image changes the cache's signature.
  shutil.copy(brick / "00000.jpg", tmp_path / "nowhere.jpg")
  os.utime(tmp_path / "nowhere.jpg", ns=(0, 0))
  assert len(folder.split_index(_data(root), "train").paths) == 13  # Still leaves ROOT.
  assert "brick/dangling.jpg: symbolic link leaving ROOT" in folder.split_index(_data(root), "train").left_out


def _tamper_label(cached, outside):
  cached["labels"][0] = (cached["labels"][0] + 1) % 3


def _tamper_escape(cached, outside):
  cached["paths"][0], cached["labels"][0] = "brick/escape.jpg", 0


TAMPERINGS = {
    "..": (lambda cached, outside: cached["paths"].__setitem__(0, "../../outside/x.jpg"),
           "path '../../outside/x.jpg' is not <class>/<file> inside"),
    "absolute": (lambda cached, outside: cached["paths"].__setitem__(0, str(outside / "x.jpg")),
                 "is not <class>/<file> inside"),
    "label": (_tamper_label, "has the label"),
    "out-of-range label": (lambda cached, outside: cached["labels"].__setitem__(0, 7), "has the label 7"),
    "a link leaving ROOT": (_tamper_escape, "path 'brick/escape.jpg' is a symbolic link leaving ROOT"),
    "class names": (lambda cached, outside: cached.__setitem__("class_names", ["a", "b", "c"]),
                    "its class names ['a', 'b', 'c'] are not the class folders"),
    "a file dropped": (lambda cached, outside: (cached["paths"].pop(), cached["labels"].pop()),
                       "it leaves out "),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_cache_is_rebuilt_and_nothing_outside_root_is_read(
    root, tmp_path, monkeypatch, capsys, tampering):
  outside = tmp_path / "outside"
  outside.mkdir()
  shutil.copy(root / "train" / "brick" / "00000.jpg", outside / "x.jpg")
  os.symlink(outside / "x.jpg", root / "train" / "brick" / "escape.jpg")
  data = _data(root)
  index = folder.split_index(data, "train")
  cache = root / folder.INDEX_DIR / "train.json"
  cached = json.loads(cache.read_text())
  tamper, reason = TAMPERINGS[tampering]
  tamper(cached, outside)
  cache.write_text(json.dumps(cached))
  capsys.readouterr()

  opened = []
  monkeypatch.setattr(folder, "open", lambda path, *a, **k: opened.append(path) or builtins.open(path, *a, **k),
                      raising=False)
  assert folder.split_index(data, "train") == index
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"Warning: the cached index {cache} is not valid (")
  assert reason in lines[0] and lines[0].endswith("; rebuilding it.")
  split = pipeline.open_split(data, "train")
  assert all(b["mask"].all() for b in split.eval_batches(4))
  real_root = os.path.realpath(root)
  assert len(opened) == 12 and all(os.path.realpath(p).startswith(real_root + os.sep) for p in opened)
  assert folder.split_index(data, "train") == index and not capsys.readouterr().err  # Rewritten.
