"""A folder index that cannot let a bad file stop a run halfway, on real photographs:
files decoded when the index is built, a cache keyed by every file's size and time and
checked when read, links and sub-folders named."""

import builtins
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from progressive import config as config_lib
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
